"""Queries for case timelines."""

from __future__ import annotations

from typing import Any

from handover.store.db import Connection, Deferred, write


async def add(
    conn: Connection,
    *,
    case_ref: str,
    at: int,
    direction: str,
    pid: str,
    schema_id: str,
    counterpart: str,
    event: str,
    defer: Deferred | None = None,
) -> None:
    await write(
        conn,
        defer,
        "INSERT INTO timeline (case_ref, at, direction, pid, schema_id, counterpart, event)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        case_ref,
        at,
        direction,
        pid,
        schema_id,
        counterpart,
        event,
    )


async def for_case(conn: Connection, case_ref: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT at, direction, pid, schema_id, counterpart, event FROM timeline"
        " WHERE case_ref = $1 ORDER BY at, id",
        case_ref,
    )
    return [dict(r) for r in rows]
