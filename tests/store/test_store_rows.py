"""Typed rows of the store against a real (embedded) PostgreSQL.

Every store function that hands rows to other layers returns frozen, slotted
dataclasses whose values have the types their fields declare (a query that
selects a column the row does not expect, or of another type, fails here), and
a unique constraint surfaces as the store's `Conflict`, never as asyncpg's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from handover.protocol.opening import StoredReplay
from handover.store import audit as audit_store
from handover.store import cases as case_store
from handover.store import continuity as continuity_store
from handover.store import lifecycle as lifecycle_store
from handover.store import outbox as outbox_store
from handover.store import peers as peer_store
from handover.store import received as received_store
from handover.store import subject as subject_store
from handover.store.db import Database
from handover.store.errors import Conflict
from handover.store.receipts import receipt_json

NOW = 1_800_000_000_000
CASE = "HC-ROWS"
RECEIPT = b'{"hp1r":"cmVjZWlwdA","sig":"c2ln"}'


def conforms(value: object, hint: Any) -> bool:
    """Whether `value` has the type `hint` (the forms row fields use)."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(conforms(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        item, _ellipsis = typing.get_args(hint)
        return isinstance(value, tuple) and all(conforms(v, item) for v in value)
    if hint is int:
        return type(value) is int
    assert isinstance(hint, type), hint
    if dataclasses.is_dataclass(hint):
        check_row(value)
    return isinstance(value, hint)


def check_row(row: object) -> None:
    cls = type(row)
    assert dataclasses.is_dataclass(cls), cls
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen, f"{cls.__name__} is not frozen"
    assert "__slots__" in vars(cls), f"{cls.__name__} has no slots"
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(row):  # type: ignore[arg-type]
        value = getattr(row, field.name)
        assert conforms(value, hints[field.name]), (cls.__name__, field.name, value)


def check_rows(found: object, cls: type, count: int | None = None) -> None:
    items = list(found) if isinstance(found, list) else [found]
    if count is not None:
        assert len(items) == count, items
    assert items, f"no {cls.__name__} to check"
    for item in items:
        assert type(item) is cls, (type(item), cls)
        check_row(item)


async def _fill(db: Database) -> None:
    async with db.transaction() as conn:
        for i, recipients in enumerate((["b.example", "c.example"], ["b.example"])):
            await outbox_store.insert(
                conn,
                pid=f"sent-{i}",
                schema_id="handover/release-notice/1",
                case_ref=CASE,
                wire=b"wire",
                pd=bytes(32),
                iat=NOW,
                exp=NOW + 86_400_000,
                operator="op",
                log_seq=i + 1,
                recipients=recipients,
                now=NOW + i,
                body_box=b"box",
                fields=["case_ref", "phase"],
                removed=["risk"] if i else [],
                consents=["EXIT_ENGAGEMENT"],
            )
        await outbox_store.finish(
            conn,
            pid="sent-0",
            node="b.example",
            status="delivered",
            receipt=RECEIPT,
            receipt_serial=1,
            reason=None,
            now=NOW + 10,
        )
        await received_store.insert(
            conn,
            sender="b.example",
            pid="got-0",
            pd=bytes(32),
            status="accepted",
            reason=None,
            receipt=RECEIPT,
            schema_id="handover/consent-record/1",
            case_ref=CASE,
            iat=NOW,
            exp=NOW + 86_400_000,
            received_at=NOW + 20,
            log_seq=3,
            sender_seq=7,
            sender_head=bytes(32),
            keyset_serial=1,
            wire=b"wire",
            body_box=b"box",
        )
        await case_store.touch(
            conn, case_ref=CASE, pid="sent-0", now=NOW, release_date="2027-01-01"
        )
        await case_store.add_consent(
            conn,
            case_ref=CASE,
            scope="EXIT_ENGAGEMENT",
            state="GIVEN",
            consent_id="C1",
            basis="VOLUNTARY",
            pid="got-0",
            author="b.example",
            now=NOW,
        )
        await continuity_store.expect(
            conn,
            pid="sent-0",
            node="b.example",
            case_ref=CASE,
            schemas=["handover/condition-update/1"],
            deadline=NOW - 1,
            now=NOW,
        )
        await continuity_store.record_agreement(
            conn,
            case_ref=CASE,
            agreement_id="AG-1",
            revision=1,
            pid="got-0",
            author="b.example",
            parties=["a.example", "b.example"],
            valid_from="2026-01-01",
            valid_to=None,
            now=NOW,
        )
        await continuity_store.acknowledge_agreement(
            conn,
            case_ref=CASE,
            agreement_id="AG-1",
            revision=1,
            node="b.example",
            acknowledged_at="2026-01-01T00:00:00Z",
            pid="got-0",
        )
        rect = await lifecycle_store.add_rectification(
            conn,
            target_pid="sent-0",
            action="RECTIFY",
            reason="INACCURATE",
            operator="op",
            nodes=["b.example"],
            now=NOW,
        )
        await lifecycle_store.set_notice(conn, rect, "b.example", "sent-1")
        await audit_store.insert(
            conn,
            [
                (1, NOW, "disclosure", b'{"op":"disclosure"}', bytes(32), "sent-0", CASE, None),
                (2, NOW, "collection", b'{"op":"collection"}', bytes(32), "got-0", CASE, None),
            ],
        )
        await peer_store.upsert_pin(conn, "b.example", "http://b", "fp", "probation", NOW)
        await peer_store.store_keyset(conn, "b.example", 1, b"keyset", NOW + 1, NOW)
        await peer_store.store_checkpoint(conn, "b.example", 5, bytes(32), NOW, b"cp", 1, NOW)


async def _rows(base: Path) -> None:
    db = await Database.open("", base / "pgdata", min_size=1, max_size=2)
    try:
        await _fill(db)
        async with db.connection() as conn:
            packet = await outbox_store.packet(conn, "sent-0")
            check_rows(packet, outbox_store.SentPacket)
            assert packet is not None and [d.node for d in packet.deliveries] == [
                "b.example",
                "c.example",
            ]
            check_rows(
                await outbox_store.packets(conn, status=None, limit=10, before=None),
                outbox_store.DeliveryLine,
                3,
            )
            check_rows(
                await outbox_store.receipts_from(conn, "b.example"), outbox_store.PeerReceipt
            )

            replay = await received_store.replay_records(conn, [("b.example", "got-0")])
            assert replay == {("b.example", "got-0"): StoredReplay(bytes(32), RECEIPT)}
            inbox = await received_store.inbox(conn, limit=10, before=None, case_ref=None)
            check_rows(inbox, received_store.InboxItem, 1)
            check_rows(await received_store.get(conn, "got-0"), received_store.ReceivedPacket)
            check_rows(
                await received_store.sender_commitments(conn, "b.example"),
                received_store.SenderCommitment,
            )

            check_rows(await case_store.get(conn, CASE), case_store.CaseRow)
            check_rows(
                await case_store.all_cases(conn, limit=10, before=None), case_store.CaseSummary
            )
            check_rows(await case_store.timeline(conn, CASE), case_store.TimelineEvent, 5)
            check_rows(await case_store.sent_packets(conn, CASE), case_store.CaseSentPacket, 2)
            check_rows(
                await case_store.received_packets(conn, CASE), case_store.CaseReceivedPacket, 1
            )
            states = await case_store.consent_states(conn, CASE)
            check_rows(list(states.values()), case_store.ConsentRecord, 1)

            check_rows(
                await continuity_store.overdue(conn, NOW), continuity_store.OverdueExpectation, 1
            )
            check_rows(
                await continuity_store.expectations_for_case(conn, CASE),
                continuity_store.Expectation,
                1,
            )
            agreement = await continuity_store.current_agreement(conn, CASE)
            check_rows(agreement, continuity_store.Agreement)
            assert agreement is not None and len(agreement.acknowledgements) == 1

            held = await lifecycle_store.held_in_case(conn, CASE)
            check_rows(held, lifecycle_store.HeldCopy, 3)
            check_rows(await lifecycle_store.held(conn, "sent-0"), lifecycle_store.HeldCopy, 1)
            check_rows(
                await lifecycle_store.held_one(conn, "received", "got-0", "b.example"),
                lifecycle_store.HeldCopy,
            )
            check_rows(
                await lifecycle_store.unscheduled(conn, 10), lifecycle_store.UnscheduledCopy, 3
            )
            check_rows(
                await lifecycle_store.deliveries(conn, "sent-0"), lifecycle_store.DeliveryStatus, 2
            )
            check_rows(
                await lifecycle_store.rectifications_of(conn, "sent-0"),
                lifecycle_store.RectificationRecipient,
                1,
            )

            check_rows(await subject_store.received(conn, CASE), subject_store.ReceivedRecord, 1)
            check_rows(await subject_store.sent(conn, CASE), subject_store.SentRecord, 2)
            check_rows(await subject_store.consents(conn, CASE), case_store.ConsentRecord, 1)

            check_rows(await audit_store.entries(conn, 0, 10), audit_store.AuditEntry, 2)
            check_rows(
                await audit_store.page(conn, after=0, limit=10, pid="got-0"),
                audit_store.AuditEntry,
                1,
            )
            check_rows(await peer_store.all_peers(conn), peer_store.PeerRow, 1)
            check_rows(await peer_store.checkpoints(conn, "b.example"), peer_store.PeerCheckpoint)

        # A unique constraint is the store's Conflict at the connection boundary.
        async with db.connection() as conn:
            await case_store.touch(conn, case_ref="HC-OTHER", pid="x", now=NOW)
            assert await case_store.set_local_id(conn, CASE, "LOCAL")
        with pytest.raises(Conflict):
            async with db.connection() as conn:
                await case_store.set_local_id(conn, "HC-OTHER", "LOCAL")
    finally:
        await db.close()


def test_store_functions_return_typed_frozen_rows() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_rows(Path(tmp)))


def test_a_stored_receipt_is_answered_as_its_json_object() -> None:
    assert receipt_json(RECEIPT) == {"hp1r": "cmVjZWlwdA", "sig": "c2ln"}
    assert receipt_json(None) is None
