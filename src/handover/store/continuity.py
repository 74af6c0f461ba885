"""Queries for continuity of care: the answers a sent packet expects from its
recipients by a deadline, and responsibility agreements with their
acknowledgements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from handover.store.db import Connection, Deferred, to_row, to_rows, write

_EXPECTATION = "pid, node, case_ref, schemas, deadline, created_at, satisfied_pid, satisfied_at"


@dataclass(frozen=True, slots=True)
class Expectation:
    """A continuity-of-care answer expected from `node` to packet `pid` by `deadline`."""

    pid: str
    node: str
    case_ref: str
    schemas: tuple[str, ...]
    deadline: int
    created_at: int
    satisfied_pid: str | None
    satisfied_at: int | None


@dataclass(frozen=True, slots=True)
class OverdueExpectation:
    """An open expectation past its deadline, with its case's local id."""

    pid: str
    node: str
    case_ref: str
    schemas: tuple[str, ...]
    deadline: int
    created_at: int
    local_id: str | None


@dataclass(frozen=True, slots=True)
class AgreementAck:
    node: str
    acknowledged_at: str
    pid: str


@dataclass(frozen=True, slots=True)
class Agreement:
    """One revision of a responsibility agreement, with its acknowledgements by node."""

    case_ref: str
    agreement_id: str
    revision: int
    pid: str
    author: str
    parties: tuple[str, ...]
    valid_from: str
    valid_to: str | None
    recorded_at: int
    acknowledgements: tuple[AgreementAck, ...]


# --- continuity of care -------------------------------------------------------------------


async def expect(
    conn: Connection,
    *,
    pid: str,
    node: str,
    case_ref: str,
    schemas: Sequence[str],
    deadline: int,
    now: int,
    defer: Deferred | None = None,
) -> None:
    await write(
        conn,
        defer,
        "INSERT INTO expectations (pid, node, case_ref, schemas, deadline, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        pid,
        node,
        case_ref,
        list(schemas),
        deadline,
        now,
    )


async def satisfy(
    conn: Connection,
    *,
    case_ref: str,
    node: str,
    schema: str,
    pid: str,
    now: int,
    in_reply_to: str | None = None,
) -> list[str]:
    """Mark open expectations of `schema` from `node` on this case as answered:
    only the one for packet `in_reply_to` when the answer names one."""
    rows = await conn.fetch(
        "UPDATE expectations SET satisfied_pid = $4, satisfied_at = $5"
        " WHERE case_ref = $1 AND node = $2 AND $3 = ANY(schemas) AND satisfied_pid IS NULL"
        " AND ($6::text IS NULL OR pid = $6) RETURNING pid",
        case_ref,
        node,
        schema,
        pid,
        now,
        in_reply_to,
    )
    return [r["pid"] for r in rows]


async def move_deadline(conn: Connection, pid: str, deadline: int) -> None:
    """A rectified release date moves the open expectations its packet opened."""
    await conn.execute(
        "UPDATE expectations SET deadline = $2, overdue_noted = false"
        " WHERE pid = $1 AND satisfied_pid IS NULL",
        pid,
        deadline,
    )


async def overdue(conn: Connection, now: int) -> list[OverdueExpectation]:
    rows = await conn.fetch(
        "SELECT e.pid, e.node, e.case_ref, e.schemas, e.deadline, e.created_at, c.local_id"
        " FROM expectations e LEFT JOIN cases c USING (case_ref)"
        " WHERE e.satisfied_pid IS NULL AND e.deadline < $1 ORDER BY e.deadline, e.pid, e.node",
        now,
    )
    return to_rows(OverdueExpectation, rows)


async def overdue_count(conn: Connection, now: int) -> int:
    value = await conn.fetchval(
        "SELECT count(*) FROM expectations WHERE satisfied_pid IS NULL AND deadline < $1", now
    )
    return int(value)


async def expectations_for_case(conn: Connection, case_ref: str) -> list[Expectation]:
    rows = await conn.fetch(
        f"SELECT {_EXPECTATION} FROM expectations WHERE case_ref = $1"  # noqa: S608
        " ORDER BY created_at, pid, node",
        case_ref,
    )
    return to_rows(Expectation, rows)


# --- responsibility agreements ---------------------------------------------------------------


async def record_agreement(
    conn: Connection,
    *,
    case_ref: str,
    agreement_id: str,
    revision: int,
    pid: str,
    author: str,
    parties: Sequence[str],
    valid_from: str,
    valid_to: str | None,
    now: int,
) -> None:
    await conn.execute(
        "INSERT INTO agreements (case_ref, agreement_id, revision, pid, author, parties,"
        " valid_from, valid_to, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (case_ref, agreement_id, revision) DO NOTHING",
        case_ref,
        agreement_id,
        revision,
        pid,
        author,
        list(parties),
        valid_from,
        valid_to,
        now,
    )


async def acknowledge_agreement(
    conn: Connection,
    *,
    case_ref: str,
    agreement_id: str,
    revision: int,
    node: str,
    acknowledged_at: str,
    pid: str,
) -> None:
    await conn.execute(
        "INSERT INTO agreement_acks (case_ref, agreement_id, revision, node, acknowledged_at,"
        " pid) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        case_ref,
        agreement_id,
        revision,
        node,
        acknowledged_at,
        pid,
    )


async def current_agreement(conn: Connection, case_ref: str) -> Agreement | None:
    """The newest revision of the most recently recorded agreement, with its acknowledgements."""
    row = await conn.fetchrow(
        "SELECT case_ref, agreement_id, revision, pid, author, parties, valid_from, valid_to,"
        " recorded_at FROM agreements WHERE case_ref = $1"
        " ORDER BY recorded_at DESC, revision DESC LIMIT 1",
        case_ref,
    )
    if row is None:
        return None
    acks = await conn.fetch(
        "SELECT node, acknowledged_at, pid FROM agreement_acks"
        " WHERE case_ref = $1 AND agreement_id = $2 AND revision = $3 ORDER BY node",
        case_ref,
        row["agreement_id"],
        row["revision"],
    )
    return to_row(Agreement, row, acknowledgements=tuple(to_rows(AgreementAck, acks)))
