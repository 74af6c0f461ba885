"""Claiming deliveries against a real (embedded) PostgreSQL: leases and the byte budget."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from handover.store import outbox as outbox_store
from handover.store.db import Database

NOW = 1_800_000_000_000


async def _claims(base: Path) -> None:
    db = await Database.open("", base / "pgdata", min_size=1, max_size=2)
    try:
        async with db.transaction() as conn:
            for i in range(6):
                await outbox_store.insert(
                    conn,
                    pid=f"pid-{i}",
                    schema_id="handover/release-notice/1",
                    case_ref=None,
                    wire=bytes(1_000_000),  # 1 MB each
                    pd=bytes(64),
                    iat=NOW,
                    exp=NOW + 86_400_000,
                    operator=None,
                    log_seq=i + 1,
                    recipients=["a.example"],
                    now=NOW - 1000 + i,
                )
        # A 2.5 MB budget takes two packets; the rest stay free for the next claim.
        async with db.transaction() as conn:
            first = await outbox_store.claim_due(
                conn, now=NOW, limit=100, lease_ms=60_000, max_bytes=2_500_000
            )
        assert [c.pid for c in first] == ["pid-0", "pid-1"]
        assert all(c.attempts == 1 for c in first)
        # Leased rows are not claimed again; a budget smaller than one packet still
        # takes one, so a large packet is never stuck.
        async with db.transaction() as conn:
            second = await outbox_store.claim_due(
                conn, now=NOW, limit=100, lease_ms=60_000, max_bytes=10
            )
        assert [c.pid for c in second] == ["pid-2"]
        async with db.transaction() as conn:
            rest = await outbox_store.claim_due(
                conn, now=NOW, limit=100, lease_ms=60_000, max_bytes=100_000_000
            )
        assert [c.pid for c in rest] == ["pid-3", "pid-4", "pid-5"]
        # After the lease, the first two are due again.
        async with db.transaction() as conn:
            again = await outbox_store.claim_due(
                conn, now=NOW + 60_001, limit=100, lease_ms=60_000, max_bytes=100_000_000
            )
        assert {c.pid for c in again} == {f"pid-{i}" for i in range(6)}
        assert all(c.attempts == 2 for c in again)
    finally:
        await db.close()


def test_claims_respect_leases_and_the_byte_budget() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_claims(Path(tmp)))
