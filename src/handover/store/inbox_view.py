"""What the web interface's inbox shows beside each received packet: whether
anyone here has read it, and whether this node has answered its case yet."""

from __future__ import annotations

from collections.abc import Sequence

from handover.store.db import Connection


async def consulted(conn: Connection, pids: Sequence[str]) -> set[str]:
    """The pids among `pids` with a `consultation` audit entry (read by someone here)."""
    rows = await conn.fetch(
        "SELECT DISTINCT pid FROM audit_log WHERE op = 'consultation' AND pid = ANY($1::text[])",
        list(pids),
    )
    return {r["pid"] for r in rows}


async def answered(conn: Connection, case_ref: str, schemas: Sequence[str], after: int) -> bool:
    """Whether this node sent a packet of one of `schemas` for the case after `after` (ms)."""
    found = await conn.fetchval(
        "SELECT 1 FROM outbox WHERE case_ref = $1 AND schema_id = ANY($2::text[])"
        " AND created_at >= $3 LIMIT 1",
        case_ref,
        list(schemas),
        after,
    )
    return found is not None


async def last_deliveries(conn: Connection) -> dict[str, tuple[int, str | None]]:
    """Per partner node: when a delivery to it last finished and the last error
    of its most recent attempt (for the administrators' peers page)."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (node) node, finished_at, last_error FROM deliveries"
        " WHERE finished_at IS NOT NULL OR last_error IS NOT NULL"
        " ORDER BY node, COALESCE(finished_at, next_attempt_at) DESC"
    )
    return {r["node"]: (r["finished_at"], r["last_error"]) for r in rows}


async def release_dates(conn: Connection, case_refs: Sequence[str]) -> dict[str, str]:
    """The known release date (YYYY-MM-DD) of each of these cases."""
    rows = await conn.fetch(
        "SELECT case_ref, release_date FROM cases"
        " WHERE case_ref = ANY($1::text[]) AND release_date IS NOT NULL",
        list(case_refs),
    )
    return {r["case_ref"]: r["release_date"] for r in rows}
