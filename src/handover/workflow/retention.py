"""Art 5 time limits: review dates of held packets, the review list, and the
outcomes of a review (EXTEND, RESTRICT, ERASE) and lifting a restriction.

Each schema has a retention rule in the policy file (`retention`): a review
falls due `months` after an anchor, the case's supervision end, its release
date, or when the packet was stored. While the anchor date is unknown the
fallback rule applies. A stored packet's row is written at the end of its
group commit, so its date is set by `schedule` (before every review listing,
and by the node's maintenance loop) from the case's dates at that time; a
packet that sets the case's supervision end or release date (workflow hooks
`on_sent` / `on_received`), or a rectification that corrects one, recomputes
the dates of everything held for the case.

Every outcome is an audit entry (`alteration`, or `erasure` for ERASE) naming
identifiers and field names only. Erasure clears the content columns; the row
stays as metadata and, for a received packet, as the replay record.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from calendar import monthrange
from typing import Any, Protocol

import structlog

from handover.protocol.timeutil import Clock
from handover.store import erasure as erasure_store
from handover.store import lifecycle as lifecycle_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database
from handover.store.lifecycle import HeldCopy
from handover.workflow.engine import (
    RELEASE_NOTICE,
    SUPERVISION_END,
    ReceivedContext,
    SentContext,
    date_ms,
)
from handover.workflow.errors import BodyUnavailable, ErrorCode, RequestRefused
from handover.workflow.policy import Policy, RetentionRule
from handover.workflow.vault import Vault

log = structlog.get_logger(__name__)

OUTCOMES = ("EXTEND", "RESTRICT", "ERASE", "LIFT")
DIRECTIONS = ("sent", "received")
# Packets that set a case's anchor dates (Workflow._record): their arrival moves reviews.
ANCHOR_SCHEMAS = frozenset({SUPERVISION_END, RELEASE_NOTICE})
MAX_REVIEWS = 500


def add_months(at_ms: int, months: int) -> int:
    """`at_ms` plus calendar months (the day clamped to the month's last day), in UTC."""
    at = dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)
    index = at.month - 1 + months
    year, month = at.year + index // 12, index % 12 + 1
    moved = at.replace(year=year, month=month, day=min(at.day, monthrange(year, month)[1]))
    return int(moved.timestamp() * 1000)


class KeyDates(Protocol):
    """A case's key dates (YYYY-MM-DD): a case row, or a held packet joined with its case."""

    @property
    def supervision_end(self) -> str | None: ...

    @property
    def release_date(self) -> str | None: ...


def held_view(held: HeldCopy) -> dict[str, Any]:
    """A held packet as the review list and the review outcomes show it."""
    return {
        "pid": held.pid,
        "direction": held.direction,
        "sender": held.sender,
        "schema": held.schema_id,
        "case_ref": held.case_ref,
        "counterparts": list(held.counterparts),
        "review_at": held.review_at,
        "restricted": held.restricted,
        "erased": held.erased_at is not None,
    }


class Retention:
    def __init__(
        self,
        *,
        node: str,
        db: Database,
        writer: AuditWriter,
        policy: Policy,
        vault: Vault,
        clock: Clock,
    ) -> None:
        self.node = node
        self.db = db
        self.writer = writer
        self.policy = policy
        self.vault = vault
        self.clock = clock
        # Set when a case's review dates were cleared: the node's maintenance
        # loop then sweeps soon instead of at its next minute.
        self.undated = asyncio.Event()

    # --- review dates (workflow hooks, inside the audit writer's transaction) ----------

    async def undate_case(self, conn: Connection, case_ref: str) -> None:
        """A case's key dates moved: clear its review dates in one statement (the
        sweep dates them again). Recomputing every held copy inline would cost
        each change the whole case, and a stream of changes the square of it."""
        await lifecycle_store.unschedule_case(conn, case_ref, None)
        self.undated.set()

    def review_date(self, schema: str, case: KeyDates | None, stored_at: int) -> int:
        """When a packet of `schema` stored at `stored_at` falls due, given its case's dates."""
        rule, fallback = self.policy.retention(schema)
        for candidate in (rule, fallback):
            anchor = self._anchor(candidate, case, stored_at)
            if anchor is not None:
                return add_months(anchor, candidate.months)
        return add_months(stored_at, fallback.months)

    @staticmethod
    def _anchor(rule: RetentionRule, case: KeyDates | None, stored_at: int) -> int | None:
        if rule.anchor == "stored":
            return stored_at
        if case is None:
            return None
        return date_ms(
            case.supervision_end if rule.anchor == "supervision_end" else case.release_date
        )

    async def on_sent(self, conn: Connection, context: SentContext) -> None:
        if context.dates_changed and context.case_ref is not None:
            await lifecycle_store.unschedule_case(conn, context.case_ref, context.defer)

    async def on_received(self, conn: Connection, context: ReceivedContext) -> None:
        if context.dates_changed and context.case_ref is not None:
            await lifecycle_store.unschedule_case(conn, context.case_ref, context.defer)

    async def schedule(self, conn: Connection, batch: int = 5000) -> int:
        """Give every held packet without a review date its date from the rule."""
        done = 0
        while True:
            rows = await lifecycle_store.unscheduled(conn, batch)
            await lifecycle_store.set_reviews(
                conn,
                [
                    (
                        r.direction,
                        r.pid,
                        r.sender,
                        # A date an EXTEND decision set stays the earliest it can fall.
                        max(self.review_date(r.schema_id, r, r.stored_at), r.review_extended or 0),
                    )
                    for r in rows
                ],
            )
            done += len(rows)
            if len(rows) < batch:
                return done

    # --- the review list and its outcomes ----------------------------------------------

    async def reviews(
        self, now: int | None = None, limit: int = MAX_REVIEWS
    ) -> list[dict[str, Any]]:
        """Held, not erased packets whose review is due at `now` (default: the clock)."""
        at = self.clock() if now is None else now
        async with self.db.transaction() as conn:
            await self.schedule(conn)
            rows = await lifecycle_store.due(conn, at, limit)
        return [held_view(r) for r in rows]

    async def find(self, pid: str, direction: object = None, sender: object = None) -> HeldCopy:
        """The one held packet `pid` names (with `direction` / `sender` to disambiguate).

        Raises:
            RequestRefused: `bad_request` for a malformed selector, `not_found`
                for none, `ambiguous` when more than one matches.
        """
        if direction is not None and direction not in DIRECTIONS:
            raise RequestRefused(ErrorCode.BAD_REQUEST, "'direction' is 'sent' or 'received'")
        if sender is not None and not isinstance(sender, str):
            raise RequestRefused(ErrorCode.BAD_REQUEST, "'sender' is a node id")
        async with self.db.connection() as conn:
            rows = await lifecycle_store.held(conn, pid)
        found = [
            r
            for r in rows
            if (direction is None or r.direction == direction)
            and (sender is None or r.sender == sender)
        ]
        if not found:
            raise RequestRefused(ErrorCode.NOT_FOUND, "this node holds no packet with that pid")
        if len(found) > 1:
            raise RequestRefused(
                ErrorCode.AMBIGUOUS,
                "more than one held packet has that pid: give 'direction' (and 'sender')",
            )
        return found[0]

    async def state(self, held: HeldCopy) -> dict[str, Any]:
        """A held packet's current view (after a decision)."""
        async with self.db.connection() as conn:
            current = await lifecycle_store.held_one(conn, held.direction, held.pid, held.sender)
        assert current is not None
        return held_view(current)

    # --- primitives (inside a writer job; rectification uses them too) -------------------

    def body_fields(self, held: HeldCopy) -> list[str] | None:
        """The top-level field names of a held body (names only, for audit entries)."""
        if held.fields is not None:
            return list(held.fields)
        if held.body_box is None:
            return None
        try:
            return sorted(self.vault.open(held.pid, held.body_box, held.data_key))
        except BodyUnavailable:
            # Erasure must never be blocked by a body that cannot be read: the
            # entry then names no fields, and the log says why.
            log.warning("body_unavailable", pid=held.pid, operation="erase")
            return None

    async def erase(
        self,
        conn: Connection,
        appender: Appender,
        held: HeldCopy,
        *,
        operator: str | None,
        justification: str | None,
        **why: Any,
    ) -> None:
        """Clear a held packet's content with an `erasure` entry; then the rectification
        notices that carry a corrected copy of it (they would otherwise outlive it)."""
        now = self.clock()
        if held.direction == "sent":
            # Art 16(6): what has not gone out yet does not go out (the wire then
            # goes with the content, as no delivery is pending any more).
            await erasure_store.cancel_pending(conn, held.pid, "erased", now)
            await erasure_store.drop_notices_of(conn, held.pid)
        if not await lifecycle_store.erase(conn, held.direction, held.pid, held.sender, now):
            return
        self.append(
            appender,
            "erasure",
            held,
            fields=self.body_fields(held),
            operator=operator,
            justification=justification,
            **why,
        )
        if held.direction == "sent":
            copies = await lifecycle_store.sent_rectify_notices(conn, held.pid)
        else:
            assert held.sender is not None
            copies = await lifecycle_store.received_rectify_notices(conn, held.sender, held.pid)
        for notice_pid in copies:
            copy = await lifecycle_store.held_one(conn, held.direction, notice_pid, held.sender)
            if copy is not None and copy.erased_at is None:
                await self.erase(
                    conn,
                    appender,
                    copy,
                    operator=operator,
                    justification=justification,
                    erased_with=held.pid,
                )

    def append(self, appender: Appender, op: str, held: HeldCopy, **fields: Any) -> None:
        appender.append(
            op,
            pid=held.pid,
            case_ref=held.case_ref,
            schema=held.schema_id,
            direction=held.direction,
            counterpart=held.sender,
            to=list(held.counterparts) if held.direction == "sent" else None,
            org=self.node,
            **fields,
        )

    async def sweep(self) -> None:
        """Maintenance: date new packets' reviews, and finish erasures of sent packets
        whose deliveries were still pending then."""
        async with self.db.transaction() as conn:
            scheduled = await self.schedule(conn)
            cleared = await lifecycle_store.clear_erased_wires(conn)
        if scheduled or cleared:
            log.info("retention_sweep", scheduled=scheduled, erased_wires_cleared=cleared)
