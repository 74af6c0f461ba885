"""Listings for integrators and operators: sent packets with filters and an
opaque cursor, audit entries with filters, and the answers this node owes.

Every page is bounded (`MAX_LIMIT` items; an audit page also scans at most
`store/listings.py` AUDIT_SCAN entries), and the cursors are opaque strings
(sent packets) or a sequence number (audit entries).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from handover.protocol.canonical import b64u_decode, b64u_encode, cj_loads
from handover.protocol.errors import HandoverError
from handover.protocol.timeutil import Clock
from handover.store import listings
from handover.store.db import Database
from handover.workflow.errors import ErrorCode, RequestRefused

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
STATUSES = ("pending", "delivered", "rejected", "expired")
CASE_REF_MAX = 64


def limit_of(value: str | None) -> int:
    """A page size from a query parameter: 1..MAX_LIMIT (default DEFAULT_LIMIT)."""
    if value is None:
        return DEFAULT_LIMIT
    try:
        return max(1, min(int(value), MAX_LIMIT))
    except ValueError:
        raise RequestRefused(
            ErrorCode.BAD_REQUEST, f"limit must be an integer from 1 to {MAX_LIMIT}"
        ) from None


def time_of(name: str, value: str | None) -> int | None:
    """A time filter: milliseconds since the epoch, or an ISO 8601 date or UTC time."""
    if value is None or value == "":
        return None
    if value.isdigit() and len(value) <= 15:
        return int(value)
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return int(when.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise RequestRefused(
            ErrorCode.BAD_REQUEST,
            f"{name} must be YYYY-MM-DD, YYYY-MM-DDThh:mm:ssZ or milliseconds since 1970",
        ) from None


def _cursor(created_at: int, pid: str) -> str:
    return b64u_encode(f"{created_at}.{pid}".encode())


def _read_cursor(cursor: str) -> tuple[int, str]:
    try:
        created, _, pid = b64u_decode(cursor[:128]).decode("ascii").partition(".")
        if not pid or not created.isdigit() or len(created) > 15:
            raise ValueError
        return int(created), pid
    except (HandoverError, ValueError, UnicodeDecodeError):
        raise RequestRefused(
            ErrorCode.BAD_REQUEST, "after is not a cursor this node gave (use next_after)"
        ) from None


class Queries:
    """Read-only listings over the node's database."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def sent(
        self, *, status: str | None, case_ref: str | None, after: str | None, limit: int
    ) -> dict[str, Any]:
        """Sent packets newest first with their deliveries; `next_after` or None."""
        if status is not None and status not in STATUSES:
            raise RequestRefused(
                ErrorCode.BAD_REQUEST, f"status must be one of {', '.join(STATUSES)}"
            )
        if case_ref is not None and not 0 < len(case_ref) <= CASE_REF_MAX:
            raise RequestRefused(ErrorCode.BAD_REQUEST, "case is 1 to 64 characters")
        before = None if not after else _read_cursor(after)
        async with self.db.connection() as conn:
            lines = await listings.sent_page(
                conn, status=status, case_ref=case_ref, before=before, limit=limit
            )
            states = await listings.deliveries_of(conn, [line.pid for line in lines])
        by_pid: dict[str, list[dict[str, Any]]] = {}
        for d in states:
            by_pid.setdefault(d.pid, []).append(
                {
                    "node": d.node,
                    "status": d.status,
                    "attempts": d.attempts,
                    "reason": d.reason,
                    "finished_at": d.finished_at,
                }
            )
        items = [
            {
                "pid": line.pid,
                "schema": line.schema_id,
                "case_ref": line.case_ref,
                "created_at": line.created_at,
                "deliveries": by_pid.get(line.pid, []),
            }
            for line in lines
        ]
        last = lines[-1] if len(lines) == limit else None
        return {
            "items": items,
            "next_after": None if last is None else _cursor(last.created_at, last.pid),
        }

    async def audit(self, *, after: int, limit: int, filters: dict[str, Any]) -> dict[str, Any]:
        """Audit entries matching `filters`, in order; `next_after` or None."""
        async with self.db.connection() as conn:
            rows, next_after = await listings.audit_page(
                conn, after=after, limit=limit, filters=filters
            )
        entries = [
            {"seq": r.seq, "entry": cj_loads(r.entry), "head": b64u_encode(r.head)} for r in rows
        ]
        return {"entries": entries, "next_after": next_after}

    async def owed(self, *, limit: int) -> dict[str, Any]:
        """Answers this node owes to senders, soonest first, with `overdue`."""
        now = self.clock()
        async with self.db.connection() as conn:
            rows = await listings.owed_open(conn, limit=limit)
        return {
            "items": [
                {
                    "to": r.sender,
                    "pid": r.pid,
                    "case_ref": r.case_ref,
                    "schemas": list(r.schemas),
                    "deadline": r.deadline,
                    "received_at": r.created_at,
                    "overdue": r.deadline < now,
                }
                for r in rows
            ]
        }
