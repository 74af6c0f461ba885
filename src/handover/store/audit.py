"""Queries for the audit chain table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from handover.protocol.auditchain import ZERO_HEAD
from handover.store.db import Connection, to_rows

# What Appender writes: (seq, at, op, entry, head, pid, case_ref).
AuditRow = tuple[int, int, str, bytes, bytes, str | None, str | None]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One link of the chain: the exact CJ bytes hashed, and the head after them."""

    seq: int
    entry: bytes
    head: bytes


async def last_head(conn: Connection) -> tuple[int, bytes]:
    row = await conn.fetchrow("SELECT seq, head FROM audit_log ORDER BY seq DESC LIMIT 1")
    if row is None:
        return 0, ZERO_HEAD
    return int(row["seq"]), bytes(row["head"])


async def insert(conn: Connection, rows: Sequence[AuditRow]) -> None:
    """rows: (seq, at, op, entry, head, pid, case_ref)."""
    if len(rows) == 1:
        await conn.execute(
            "INSERT INTO audit_log (seq, at, op, entry, head, pid, case_ref)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            *rows[0],
        )
    elif rows:
        await conn.copy_records_to_table(
            "audit_log",
            records=rows,
            columns=["seq", "at", "op", "entry", "head", "pid", "case_ref"],
        )


async def entries(conn: Connection, after: int, limit: int) -> list[AuditEntry]:
    """The entries after seq `after`, in order."""
    rows = await conn.fetch(
        "SELECT seq, entry, head FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        after,
        limit,
    )
    return to_rows(AuditEntry, rows)


async def page(
    conn: Connection, *, after: int, limit: int, case_ref: str | None = None, pid: str | None = None
) -> list[AuditEntry]:
    """The entries after seq `after`, in order, optionally only those of a case or a packet."""
    clauses = ["seq > $1"]
    args: list[Any] = [after]
    if case_ref is not None:
        args.append(case_ref)
        clauses.append(f"case_ref = ${len(args)}")
    if pid is not None:
        args.append(pid)
        clauses.append(f"pid = ${len(args)}")
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT seq, entry, head FROM audit_log WHERE {' AND '.join(clauses)}"  # noqa: S608
        f" ORDER BY seq LIMIT ${len(args)}",
        *args,
    )
    return to_rows(AuditEntry, rows)
