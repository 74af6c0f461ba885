"""Queries for a subject access export (LED Art 14): everything held for one case.

Read-only; the caller (`subject_access.SubjectAccess`) decrypts and shapes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from handover.store.cases import ConsentRecord
from handover.store.db import Connection, to_row, to_rows


@dataclass(frozen=True, slots=True)
class ReceivedRecord:
    """An accepted packet received for the case, with its sealed body (None once erased)."""

    sender: str
    pid: str
    schema_id: str
    iat: int
    exp: int
    received_at: int
    log_seq: int
    body_box: bytes | None
    data_key: bytes | None
    review_at: int | None
    restricted: str | None
    erased_at: int | None
    rectified_by: str | None


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """Where one recipient's delivery of a sent packet stands."""

    node: str
    status: str
    reason: str | None
    finished_at: int | None


@dataclass(frozen=True, slots=True)
class SentRecord:
    """A packet this node sent for the case, with its sealed body and its deliveries."""

    pid: str
    schema_id: str
    created_at: int
    operator: str | None
    log_seq: int
    body_box: bytes | None
    data_key: bytes | None
    fields: tuple[str, ...] | None
    removed: tuple[str, ...] | None
    consents: tuple[str, ...] | None
    review_at: int | None
    restricted: str | None
    erased_at: int | None
    deliveries: tuple[DeliveryOutcome, ...]  # by node


async def received(conn: Connection, case_ref: str) -> list[ReceivedRecord]:
    """Accepted received packets of the case, oldest first, with their sealed bodies."""
    rows = await conn.fetch(
        "SELECT sender, pid, schema_id, iat, exp, received_at, log_seq, body_box, data_key,"
        " review_at,"
        " restricted, erased_at, rectified_by FROM received"
        " WHERE case_ref = $1 AND status = 'accepted' ORDER BY received_at, pid",
        case_ref,
    )
    return to_rows(ReceivedRecord, rows)


async def sent(conn: Connection, case_ref: str) -> list[SentRecord]:
    """Packets this node sent for the case, oldest first, each with its deliveries."""
    rows = await conn.fetch(
        "SELECT pid, schema_id, created_at, operator, log_seq, body_box, data_key, fields,"
        " removed,"
        " consents, review_at, restricted, erased_at FROM outbox WHERE case_ref = $1"
        " ORDER BY created_at, pid",
        case_ref,
    )
    deliveries = await conn.fetch(
        "SELECT d.pid, d.node, d.status, d.reason, d.finished_at FROM deliveries d"
        " JOIN outbox o USING (pid) WHERE o.case_ref = $1 ORDER BY d.pid, d.node",
        case_ref,
    )
    by_pid: dict[str, list[DeliveryOutcome]] = {}
    for d in deliveries:
        by_pid.setdefault(d["pid"], []).append(to_row(DeliveryOutcome, d))
    return [to_row(SentRecord, r, deliveries=tuple(by_pid.get(r["pid"], []))) for r in rows]


async def audit_entries(conn: Connection, case_ref: str) -> list[tuple[int, bytes]]:
    """(seq, entry bytes) of every audit entry indexed under the case, in chain order."""
    rows = await conn.fetch(
        "SELECT seq, entry FROM audit_log WHERE case_ref = $1 ORDER BY seq", case_ref
    )
    return [(int(r["seq"]), bytes(r["entry"])) for r in rows]


async def consents(conn: Connection, case_ref: str) -> list[ConsentRecord]:
    """Every consent record of the case (given and withdrawn), oldest first."""
    rows = await conn.fetch(
        "SELECT scope, state, consent_id, basis, pid, author, recorded_at FROM consents"
        " WHERE case_ref = $1 ORDER BY id",
        case_ref,
    )
    return to_rows(ConsentRecord, rows)
