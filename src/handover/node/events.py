"""The event feed for case management systems: reading by cursor, waking waiting
readers on NOTIFY, bounding how many wait at once, reporting overdue items, and
retention.

An event says what changed and names it by identifiers (`pid`, `case_ref`,
`node`, `schema`, `status`); it never carries body values. Kinds: `inbox` (a
packet was accepted into the inbox), `delivery` (a delivery finished:
delivered, rejected or expired), `acknowledgement` (an expected answer or an
agreement acknowledgement arrived), `overdue` (an expected answer is past its
deadline), `consent` (a consent record was sent or received for a case).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import structlog

from handover.protocol.timeutil import DAY_MS, Clock
from handover.store import events as event_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database
from handover.workflow.errors import ErrorCode, RequestRefused

log = structlog.get_logger(__name__)

# Under the 30 s idle timeout of common proxies and load balancers.
MAX_WAIT_S = 25
MAX_PAGE = 500
# Long-polls and event streams open at once: per operator and for the node.
MAX_STREAMS_PER_OPERATOR = 4
MAX_STREAMS = 64
# Events are kept 30 days, and at most the newest million.
RETENTION_MS = 30 * DAY_MS
RETENTION_ROWS = 1_000_000


def event_json(event: event_store.Event) -> dict[str, Any]:
    out: dict[str, Any] = {"id": event.id, "type": event.kind, "at": event.at}
    for name, value in (
        ("pid", event.pid),
        ("case_ref", event.case_ref),
        ("node", event.node),
        ("schema", event.schema_id),
        ("status", event.status),
    ):
        if value is not None:
            out[name] = value
    return out


class EventFeed:
    def __init__(self, *, db: Database, writer: AuditWriter, clock: Clock) -> None:
        self.db = db
        self.writer = writer
        self.clock = clock
        self._changed = asyncio.Event()
        self._open: Counter[str] = Counter()

    def wake(self) -> None:
        """Called on each NOTIFY of `handover_events`: waiting readers look again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def page(self, after: int | None, limit: int) -> list[dict[str, Any]]:
        """Events with id over `after` (None or 0: the oldest held), oldest first.

        Raises:
            RequestRefused: `cursor_expired` when events after the cursor were
                already deleted by retention.
        """
        limit = max(1, min(limit, MAX_PAGE))
        async with self.db.connection() as conn:
            if after:
                horizon = await event_store.pruned_through(conn)
                if after < horizon:
                    raise RequestRefused(
                        ErrorCode.CURSOR_EXPIRED,
                        f"events up to id {horizon} were deleted (kept {RETENTION_MS // DAY_MS}"
                        " days): read the current state, then resume without a cursor",
                    )
            rows = await event_store.after(conn, after or 0, limit)
        return [event_json(r) for r in rows]

    async def wait_page(
        self, after: int | None, limit: int, wait_s: float, stop: asyncio.Event | None = None
    ) -> list[dict[str, Any]]:
        """Like :meth:`page`, but when nothing is there yet waits up to `wait_s`
        seconds for an event to commit (or until `stop` is set and woken)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(wait_s, MAX_WAIT_S))
        while True:
            signal = self.signal()  # taken before reading: a NOTIFY after is not missed
            events = await self.page(after, limit)
            remaining = deadline - loop.time()
            if events or remaining <= 0 or (stop is not None and stop.is_set()):
                return events
            await self.changed(remaining, signal)

    def signal(self) -> asyncio.Event:
        """Take before reading: it is set by the next commit of an event."""
        return self._changed

    async def changed(self, timeout: float, signal: asyncio.Event) -> bool:
        """Wait up to `timeout` seconds for `signal`; True if an event came."""
        try:
            async with asyncio.timeout(timeout):
                await signal.wait()
        except TimeoutError:
            return False
        return True

    @contextlib.asynccontextmanager
    async def slot(self, operator: str) -> AsyncIterator[None]:
        """Hold one of the bounded places for a long-poll or stream.

        Raises:
            RequestRefused: `too_many_requests` over the operator's or the node's bound.
        """
        if self._open[operator] >= MAX_STREAMS_PER_OPERATOR:
            raise RequestRefused(
                ErrorCode.TOO_MANY_REQUESTS,
                f"at most {MAX_STREAMS_PER_OPERATOR} event waits or streams per operator",
            )
        if sum(self._open.values()) >= MAX_STREAMS:
            raise RequestRefused(
                ErrorCode.TOO_MANY_REQUESTS, f"at most {MAX_STREAMS} event waits or streams"
            )
        self._open[operator] += 1
        try:
            yield
        finally:
            self._open[operator] -= 1
            if self._open[operator] <= 0:
                del self._open[operator]

    @property
    def open_streams(self) -> int:
        return sum(self._open.values())

    # --- background work (the node's maintenance loop) --------------------------------

    async def note_overdue(self) -> int:
        """Report expectations that passed their deadline since the last look."""
        now = self.clock()

        async def job(conn: Connection, appender: Appender) -> int:
            rows = await event_store.note_overdue(conn, now)
            for r in rows:
                await event_store.add(
                    conn,
                    appender.deferred,
                    "overdue",
                    at=now,
                    pid=r.pid,
                    case_ref=r.case_ref,
                    node=r.node,
                )
            return len(rows)

        count: int = await self.writer.run(job)
        return count

    async def prune(self) -> int:
        async with self.db.connection() as conn:
            deleted = await event_store.prune(
                conn, older_than=self.clock() - RETENTION_MS, keep_at_most=RETENTION_ROWS
            )
        if deleted:
            log.info("events_pruned", deleted=deleted)
        return deleted
