"""Queries for the audit chain table."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from handover.protocol.auditchain import ZERO_HEAD
from handover.store.db import Connection, to_rows

# What Appender writes: (seq, at, op, entry, head, pid, case_ref, purpose).
AuditRow = tuple[int, int, str, bytes, bytes, str | None, str | None, str | None]
_COLUMNS = ["seq", "at", "op", "entry", "head", "pid", "case_ref", "purpose"]
# A leading word in capitals before a colon: the purpose code of a justification
# (checked against the policy's list in workflow/access.py before it gets here).
_PURPOSE = re.compile(r"^([A-Z][A-Z0-9_]*):")


def purpose_of(justification: object) -> str | None:
    """The purpose code a justification begins with (`SUPERVISION: ...`), if any."""
    match = _PURPOSE.match(justification) if isinstance(justification, str) else None
    return match.group(1) if match else None


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
    """rows: (seq, at, op, entry, head, pid, case_ref, purpose)."""
    if len(rows) == 1:
        await conn.execute(
            "INSERT INTO audit_log (seq, at, op, entry, head, pid, case_ref, purpose)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            *rows[0],
        )
    elif rows:
        await conn.copy_records_to_table("audit_log", records=rows, columns=_COLUMNS)


async def entries(conn: Connection, after: int, limit: int) -> list[AuditEntry]:
    """The entries after seq `after`, in order."""
    rows = await conn.fetch(
        "SELECT seq, entry, head FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        after,
        limit,
    )
    return to_rows(AuditEntry, rows)


async def page(
    conn: Connection,
    *,
    after: int,
    limit: int,
    case_ref: str | None = None,
    pid: str | None = None,
    purpose: str | None = None,
) -> list[AuditEntry]:
    """The entries after seq `after`, in order, optionally only those of a case or a
    packet, or those whose justification named a purpose code."""
    clauses = ["seq > $1"]
    args: list[Any] = [after]
    if case_ref is not None:
        args.append(case_ref)
        clauses.append(f"case_ref = ${len(args)}")
    if pid is not None:
        args.append(pid)
        clauses.append(f"pid = ${len(args)}")
    if purpose is not None:
        args.append(purpose)
        clauses.append(f"purpose = ${len(args)}")
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT seq, entry, head FROM audit_log WHERE {' AND '.join(clauses)}"  # noqa: S608
        f" ORDER BY seq LIMIT ${len(args)}",
        *args,
    )
    return to_rows(AuditEntry, rows)
