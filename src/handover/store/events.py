"""The event feed and the webhook queue: events written in the transaction of the
change they report, read by cursor, fanned out to webhooks, pruned by age.

Events are written only by jobs of the audit writer (they hold the audit lock
until commit), so ids are handed out in commit order: a reader that has seen
every id up to N and resumes with `after=N` misses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from handover.store.db import Connection, Deferred, to_row, to_rows, write

KINDS = ("inbox", "delivery", "acknowledgement", "overdue", "consent")
CHANNEL = "handover_events"

_INSERT = (
    "WITH e AS (INSERT INTO events (kind, at, pid, case_ref, node, schema_id, status)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, kind)"
    " INSERT INTO webhook_queue (webhook_id, event_id, next_at)"
    " SELECT w.id, e.id, $2 FROM webhooks w, e WHERE e.kind = ANY(w.kinds)"
)


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    at: int
    pid: str | None
    case_ref: str | None
    node: str | None
    schema_id: str | None
    status: str | None


async def add(
    conn: Connection,
    defer: Deferred | None,
    kind: str,
    *,
    at: int,
    pid: str | None = None,
    case_ref: str | None = None,
    node: str | None = None,
    schema: str | None = None,
    status: str | None = None,
) -> None:
    """Record an event (and queue it for every webhook that takes its kind) in the
    caller's transaction; listeners are woken when it commits."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind}")
    await write(conn, defer, _INSERT, kind, at, pid, case_ref, node, schema, status)
    if defer is None:
        await conn.execute(f"NOTIFY {CHANNEL}")
    else:
        defer.once(f"NOTIFY {CHANNEL}")


async def after(conn: Connection, cursor: int, limit: int) -> list[Event]:
    rows = await conn.fetch(
        "SELECT id, kind, at, pid, case_ref, node, schema_id, status"
        " FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        cursor,
        limit,
    )
    return to_rows(Event, rows)


async def pruned_through(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT pruned_through FROM events_horizon"))


async def prune(conn: Connection, *, older_than: int, keep_at_most: int) -> int:
    """Delete events older than `older_than` (ms) and all but the newest
    `keep_at_most`; returns how many were deleted. Their webhook queue rows go with them."""
    async with conn.transaction():
        newest = await conn.fetchval("SELECT coalesce(max(id), 0) FROM events")
        through = await conn.fetchval(
            "SELECT coalesce(max(id), 0) FROM events WHERE at < $1", older_than
        )
        through = max(int(through), int(newest) - keep_at_most)
        if through <= await pruned_through(conn):
            return 0
        status = await conn.execute("DELETE FROM events WHERE id <= $1", through)
        await conn.execute(
            "UPDATE events_horizon SET pruned_through = greatest(pruned_through, $1)", through
        )
    return int(status.split()[-1])


# --- overdue expectations ------------------------------------------------------------


@dataclass(frozen=True)
class NewlyOverdue:
    pid: str
    node: str
    case_ref: str


async def note_overdue(conn: Connection, now: int, limit: int = 1000) -> list[NewlyOverdue]:
    """Expectations past their deadline not reported yet, marked as reported."""
    rows = await conn.fetch(
        "UPDATE expectations SET overdue_noted = true WHERE (pid, node) IN ("
        " SELECT pid, node FROM expectations WHERE satisfied_pid IS NULL AND deadline < $1"
        " AND NOT overdue_noted ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " RETURNING pid, node, case_ref",
        now,
        limit,
    )
    return sorted(to_rows(NewlyOverdue, rows), key=lambda r: (r.pid, r.node))


# --- webhooks --------------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    id: int
    url: str
    kinds: tuple[str, ...]
    created_at: int
    pending: int
    failed: int


@dataclass(frozen=True)
class Queued:
    webhook_id: int
    url: str
    secret_box: bytes
    attempts: int
    event: Event


async def add_webhook(
    conn: Connection, url: str, kinds: Sequence[str], secret_box: bytes, now: int
) -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO webhooks (url, kinds, secret_box, created_at)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            url,
            list(kinds),
            secret_box,
            now,
        )
    )


async def webhooks(conn: Connection) -> list[Webhook]:
    rows = await conn.fetch(
        "SELECT w.id, w.url, w.kinds, w.created_at,"
        " count(q.event_id) FILTER (WHERE q.failed_at IS NULL) AS pending,"
        " count(q.event_id) FILTER (WHERE q.failed_at IS NOT NULL) AS failed"
        " FROM webhooks w LEFT JOIN webhook_queue q ON q.webhook_id = w.id"
        " GROUP BY w.id ORDER BY w.id"
    )
    return to_rows(Webhook, rows)


async def remove_webhook(conn: Connection, webhook_id: int) -> bool:
    status = await conn.execute("DELETE FROM webhooks WHERE id = $1", webhook_id)
    return bool(status != "DELETE 0")


async def claim(conn: Connection, now: int, lease_ms: int, limit: int) -> list[Queued]:
    """Due queue rows, leased for `lease_ms` (another replica skips them meanwhile),
    in event order per webhook."""
    rows = await conn.fetch(
        "WITH due AS (SELECT webhook_id, event_id FROM webhook_queue"
        " WHERE failed_at IS NULL AND next_at <= $1 ORDER BY webhook_id, event_id"
        " LIMIT $3 FOR UPDATE SKIP LOCKED),"
        " leased AS (UPDATE webhook_queue q SET next_at = $1 + $2 FROM due"
        " WHERE q.webhook_id = due.webhook_id AND q.event_id = due.event_id"
        " RETURNING q.webhook_id, q.event_id, q.attempts)"
        " SELECT l.webhook_id, l.attempts, w.url, w.secret_box,"
        " e.id, e.kind, e.at, e.pid, e.case_ref, e.node, e.schema_id, e.status"
        " FROM leased l JOIN webhooks w ON w.id = l.webhook_id"
        " JOIN events e ON e.id = l.event_id ORDER BY l.webhook_id, l.event_id",
        now,
        lease_ms,
        limit,
    )
    return [to_row(Queued, r, event=to_row(Event, r)) for r in rows]


async def delivered(conn: Connection, webhook_id: int, event_id: int) -> None:
    await conn.execute(
        "DELETE FROM webhook_queue WHERE webhook_id = $1 AND event_id = $2", webhook_id, event_id
    )


async def retry_later(
    conn: Connection,
    webhook_id: int,
    event_id: int,
    *,
    next_at: int,
    error: str,
    give_up_before: int,
    now: int,
) -> None:
    """A failed attempt: this row and every later row of the webhook wait until
    `next_at` (order is kept); a row queued before `give_up_before` is marked failed."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE webhook_queue q SET attempts = q.attempts + 1, next_at = $3,"
            " last_error = $4, failed_at = CASE WHEN e.at < $5::bigint THEN $6::bigint END"
            " FROM events e WHERE e.id = q.event_id AND q.webhook_id = $1 AND q.event_id = $2",
            webhook_id,
            event_id,
            next_at,
            error,
            give_up_before,
            now,
        )
        await conn.execute(
            "UPDATE webhook_queue SET next_at = $3 WHERE webhook_id = $1 AND event_id > $2"
            " AND failed_at IS NULL",
            webhook_id,
            event_id,
            next_at,
        )


async def queue_counts(conn: Connection) -> tuple[int, int]:
    """(pending, failed) rows of the webhook queue."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE failed_at IS NULL) AS pending,"
        " count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed FROM webhook_queue"
    )
    assert row is not None
    return int(row["pending"]), int(row["failed"])


async def next_due(conn: Connection) -> int | None:
    value = await conn.fetchval("SELECT min(next_at) FROM webhook_queue WHERE failed_at IS NULL")
    return None if value is None else int(value)
