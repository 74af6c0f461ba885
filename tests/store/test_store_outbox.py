"""Claiming deliveries against a real (embedded) PostgreSQL: leases and the byte budget."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from handover.store import outbox as outbox_store
from handover.store.db import Connection, Database

NOW = 1_800_000_000_000


async def _queue(conn: Connection, pid: str, i: int, *, size: int) -> None:
    """Packet number `i` of a test, for one recipient, due a little before NOW."""
    await outbox_store.insert(
        conn,
        pid=pid,
        schema_id="handover/release-notice/1",
        case_ref=None,
        wire=bytes(size),
        pd=bytes(64),
        iat=NOW,
        exp=NOW + 86_400_000,
        operator=None,
        log_seq=i + 1,
        recipients=["a.example"],
        now=NOW - 1000 + i,
    )


async def _claims(base: Path) -> None:
    db = await Database.open("", base / "pgdata", min_size=1, max_size=2)
    try:
        async with db.transaction() as conn:
            for i in range(6):
                await _queue(conn, f"pid-{i}", i, size=1_000_000)  # 1 MB each
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


async def _claim_on_a_full_outbox(base: Path, query: str) -> tuple[list[str], int]:
    db = await Database.open("", base / "pgdata", min_size=1, max_size=2)
    try:
        async with db.transaction() as conn:
            for i in range(3):
                await _queue(conn, f"due-{i}", i, size=1000)
            # 20,000 packets already delivered: live in the outbox, due nowhere.
            await conn.execute(
                "INSERT INTO outbox SELECT (jsonb_populate_record(o,"
                " jsonb_build_object('pid', 'done-' || g, 'log_seq', 100 + g))).*"
                " FROM outbox o, generate_series(1, 20000) g WHERE o.pid = 'due-0'"
            )
            # One in ten still pending but not due (leased, or waiting to retry).
            await conn.execute(
                "INSERT INTO deliveries (pid, node, status, next_attempt_at, finished_at)"
                " SELECT 'done-' || g, 'a.example',"
                " CASE WHEN g % 10 = 0 THEN 'pending' ELSE 'delivered' END,"
                " CASE WHEN g % 10 = 0 THEN $1::bigint + 600000 ELSE 0 END, 0"
                " FROM generate_series(1, 20000) g",
                NOW,
            )
        async with db.connection() as conn:
            await conn.execute("ANALYZE outbox; ANALYZE deliveries")
        async with db.transaction() as conn:
            plan = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, NOW, 128)
            claimed = await outbox_store.claim_due(
                conn, now=NOW, limit=128, lease_ms=60_000, max_bytes=100_000_000
            )
        top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
        return [c.pid for c in claimed], top["Shared Hit Blocks"] + top["Shared Read Blocks"]
    finally:
        await db.close()


def test_a_claim_reads_little_of_a_full_outbox() -> None:
    """The claim is driven by the due deliveries, not by every live outbox row:
    with 20,000 packets in the outbox (2,000 of them pending, not due) it reads a
    few dozen pages; with a condition on `erased_at` the planner walked the
    outbox (3,340 pages here; a claim took 142 ms in the benchmark)."""
    with tempfile.TemporaryDirectory() as tmp:
        pids, pages = asyncio.run(_claim_on_a_full_outbox(Path(tmp), outbox_store.CLAIM_DUE))
    assert pids == ["due-0", "due-1", "due-2"]
    assert pages < 200, pages


async def _more(base: Path) -> list[tuple[list[str], bool]]:
    db = await Database.open("", base / "pgdata", min_size=1, max_size=2)
    try:
        async with db.transaction() as conn:
            for i in range(5):
                await _queue(conn, f"pid-{i}", i, size=1000)
        seen = []
        async with db.connection() as conn:
            for limit, budget in ((2, 100_000), (10, 2_500), (10, 100_000), (10, 100_000)):
                claimed, more = await outbox_store.claim_batch(
                    conn, now=NOW, limit=limit, lease_ms=60_000, max_bytes=budget
                )
                seen.append(([c.pid for c in claimed], more))
        return seen
    finally:
        await db.close()


def test_a_claim_says_whether_more_is_due() -> None:
    """The worker claims again only when the last claim was cut short by its limit
    or its byte budget; an idle round costs no empty claim."""
    with tempfile.TemporaryDirectory() as tmp:
        seen = asyncio.run(_more(Path(tmp)))
    assert seen == [
        (["pid-0", "pid-1"], True),  # the limit cut it
        (["pid-2", "pid-3"], True),  # the byte budget cut it
        (["pid-4"], False),  # all that was due
        ([], False),
    ]
