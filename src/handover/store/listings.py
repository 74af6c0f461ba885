"""Paged listings for integrators: sent packets with filters, audit entries with
filters (each page bounded in rows and in rows scanned), and the answers this
node owes to senders (the receiving side of continuity of care)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from handover.store.db import Connection, Deferred, to_rows, write

# An audit query scans at most this many entries per page, whatever its filters.
AUDIT_SCAN = 10_000


@dataclass(frozen=True, slots=True)
class SentLine:
    """A sent packet in a listing; its deliveries are fetched with `deliveries_of`."""

    pid: str
    schema_id: str
    case_ref: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class DeliveryState:
    pid: str
    node: str
    status: str
    attempts: int
    reason: str | None
    finished_at: int | None


async def sent_page(
    conn: Connection,
    *,
    status: str | None,
    case_ref: str | None,
    before: tuple[int, str] | None,
    limit: int,
) -> list[SentLine]:
    """Sent packets newest first, after the cursor `before` (created_at, pid);
    `status`: only packets with at least one delivery in that state."""
    rows = await conn.fetch(
        "SELECT o.pid, o.schema_id, o.case_ref, o.created_at FROM outbox o"
        " WHERE ($1::text IS NULL OR EXISTS (SELECT 1 FROM deliveries d"
        "   WHERE d.pid = o.pid AND d.status = $1))"
        " AND ($2::text IS NULL OR o.case_ref = $2)"
        " AND ($3::bigint IS NULL OR (o.created_at, o.pid) < ($3, $4::text))"
        " ORDER BY o.created_at DESC, o.pid DESC LIMIT $5",
        status,
        case_ref,
        None if before is None else before[0],
        None if before is None else before[1],
        limit,
    )
    return to_rows(SentLine, rows)


async def deliveries_of(conn: Connection, pids: Sequence[str]) -> list[DeliveryState]:
    rows = await conn.fetch(
        "SELECT pid, node, status, attempts, reason, finished_at FROM deliveries"
        " WHERE pid = ANY($1::text[]) ORDER BY pid, node",
        list(pids),
    )
    return to_rows(DeliveryState, rows)


@dataclass(frozen=True, slots=True)
class AuditRow:
    seq: int
    entry: bytes
    head: bytes


async def audit_page(
    conn: Connection,
    *,
    after: int,
    limit: int,
    filters: dict[str, Any],
) -> tuple[list[AuditRow], int | None]:
    """Entries after seq `after` matching `filters` (case_ref, pid, op, operator,
    since, until), in order, scanning at most AUDIT_SCAN entries; the cursor to
    continue from (None at the end of the log)."""
    clauses = ["seq > $1", "seq <= $2"]
    args: list[Any] = [after, after + AUDIT_SCAN]
    columns = {"case_ref": "case_ref = {}", "pid": "pid = {}", "op": "op = {}"}
    columns["purpose"] = "purpose = {}"
    columns |= {"since": "at >= {}", "until": "at < {}"}
    columns["operator"] = "convert_from(entry, 'UTF8')::jsonb ->> 'operator' = {}"
    for name, clause in columns.items():
        value = filters.get(name)
        if value is not None:
            args.append(value)
            clauses.append(clause.format(f"${len(args)}"))
    args.append(limit)
    rows = to_rows(
        AuditRow,
        await conn.fetch(
            f"SELECT seq, entry, head FROM audit_log WHERE {' AND '.join(clauses)}"  # noqa: S608
            f" ORDER BY seq LIMIT ${len(args)}",
            *args,
        ),
    )
    if len(rows) == limit:
        return rows, rows[-1].seq
    last = await conn.fetchval("SELECT max(seq) FROM audit_log")
    return rows, (after + AUDIT_SCAN if last is not None and last > after + AUDIT_SCAN else None)


@dataclass(frozen=True, slots=True)
class Owed:
    """An answer this node owes `sender` for its packet `pid` by `deadline`."""

    sender: str
    pid: str
    case_ref: str
    schemas: tuple[str, ...]
    deadline: int
    created_at: int


async def owe(
    conn: Connection,
    *,
    sender: str,
    pid: str,
    case_ref: str,
    schemas: Sequence[str],
    deadline: int,
    now: int,
    defer: Deferred | None = None,
) -> None:
    await write(
        conn,
        defer,
        "INSERT INTO owed (sender, pid, case_ref, schemas, deadline, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        sender,
        pid,
        case_ref,
        list(schemas),
        deadline,
        now,
    )


async def answer(
    conn: Connection,
    *,
    case_ref: str,
    to: Sequence[str],
    schema: str,
    pid: str,
    now: int,
    in_reply_to: str | None,
) -> list[str]:
    """Mark what is owed to `to` on the case and answered by `schema` as answered
    (only the one for `in_reply_to` when the answer names one)."""
    rows = await conn.fetch(
        "UPDATE owed SET answered_pid = $4, answered_at = $5"
        " WHERE case_ref = $1 AND sender = ANY($2::text[]) AND $3 = ANY(schemas)"
        " AND answered_pid IS NULL AND ($6::text IS NULL OR pid = $6) RETURNING pid",
        case_ref,
        list(to),
        schema,
        pid,
        now,
        in_reply_to,
    )
    return [r["pid"] for r in rows]


async def move_owed(conn: Connection, sender: str, pid: str, deadline: int) -> None:
    """A corrected release date moves what is owed for the packet it corrected."""
    await conn.execute(
        "UPDATE owed SET deadline = $3 WHERE sender = $1 AND pid = $2 AND answered_pid IS NULL",
        sender,
        pid,
        deadline,
    )


async def owed_open(conn: Connection, *, limit: int) -> list[Owed]:
    """Open answers owed, soonest deadline first."""
    rows = await conn.fetch(
        "SELECT sender, pid, case_ref, schemas, deadline, created_at FROM owed"
        " WHERE answered_pid IS NULL ORDER BY deadline, sender, pid LIMIT $1",
        limit,
    )
    return to_rows(Owed, rows)
