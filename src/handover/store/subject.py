"""Queries for a subject access export (LED Art 14): everything held for one case.

Read-only; the caller (`subject_access.SubjectAccess`) decrypts and shapes it.
"""

from __future__ import annotations

from typing import Any

from handover.store.db import Connection


async def received(conn: Connection, case_ref: str) -> list[dict[str, Any]]:
    """Accepted received packets of the case, oldest first, with their sealed bodies."""
    rows = await conn.fetch(
        "SELECT sender, pid, schema_id, iat, exp, received_at, log_seq, body_box, review_at,"
        " restricted, erased_at, rectified_by FROM received"
        " WHERE case_ref = $1 AND status = 'accepted' ORDER BY received_at, pid",
        case_ref,
    )
    return [dict(r) for r in rows]


async def sent(conn: Connection, case_ref: str) -> list[dict[str, Any]]:
    """Packets this node sent for the case, oldest first, each with its deliveries."""
    rows = await conn.fetch(
        "SELECT pid, schema_id, created_at, operator, log_seq, body_box, fields, removed,"
        " consents, review_at, restricted, erased_at FROM outbox WHERE case_ref = $1"
        " ORDER BY created_at, pid",
        case_ref,
    )
    deliveries = await conn.fetch(
        "SELECT d.pid, d.node, d.status, d.reason, d.finished_at FROM deliveries d"
        " JOIN outbox o USING (pid) WHERE o.case_ref = $1 ORDER BY d.pid, d.node",
        case_ref,
    )
    by_pid: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_pid.setdefault(d["pid"], []).append(dict(d))
    out = []
    for r in rows:
        row = dict(r)
        row["deliveries"] = by_pid.get(r["pid"], [])
        out.append(row)
    return out


async def audit_entries(conn: Connection, case_ref: str) -> list[tuple[int, bytes]]:
    """(seq, entry bytes) of every audit entry indexed under the case, in chain order."""
    rows = await conn.fetch(
        "SELECT seq, entry FROM audit_log WHERE case_ref = $1 ORDER BY seq", case_ref
    )
    return [(int(r["seq"]), bytes(r["entry"])) for r in rows]


async def consents(conn: Connection, case_ref: str) -> list[dict[str, Any]]:
    """Every consent record of the case (given and withdrawn), oldest first."""
    rows = await conn.fetch(
        "SELECT scope, state, consent_id, basis, pid, author, recorded_at FROM consents"
        " WHERE case_ref = $1 ORDER BY id",
        case_ref,
    )
    return [dict(r) for r in rows]
