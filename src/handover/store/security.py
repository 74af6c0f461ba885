"""The security log: counts of refused requests per hour, source and reason."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from handover.store.db import Connection


@dataclass(frozen=True, slots=True)
class SecurityCount:
    window_start: int
    source: str
    reason: str
    count: int
    first_at: int
    last_at: int


async def add(conn: Connection, counts: Iterable[SecurityCount]) -> None:
    """Add counts to their rows (one upsert per window, source and reason)."""
    await conn.executemany(
        """
        INSERT INTO security_events (window_start, source, reason, count, first_at, last_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (window_start, source, reason) DO UPDATE SET
            count = security_events.count + EXCLUDED.count,
            first_at = LEAST(security_events.first_at, EXCLUDED.first_at),
            last_at = GREATEST(security_events.last_at, EXCLUDED.last_at)
        """,
        [(c.window_start, c.source, c.reason, c.count, c.first_at, c.last_at) for c in counts],
    )


async def recent(conn: Connection, since: int, limit: int = 1000) -> list[SecurityCount]:
    rows = await conn.fetch(
        """
        SELECT window_start, source, reason, count, first_at, last_at
        FROM security_events WHERE window_start >= $1
        ORDER BY window_start DESC, count DESC LIMIT $2
        """,
        since,
        limit,
    )
    return [SecurityCount(*r) for r in rows]


async def total_rows(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM security_events"))


async def prune(conn: Connection, before: int) -> int:
    """Delete windows that started before `before` (the log's retention)."""
    status = await conn.execute("DELETE FROM security_events WHERE window_start < $1", before)
    return int(status.split()[-1])
