"""Queries for the lifecycle of held packets: review dates, restriction,
erasure, rectification (the sender's record and the receiver's).

A held packet is a sent one (`outbox`, direction `sent`) or an accepted
received one (`received`, direction `received`, keyed by sender and pid).
Statements that address one held packet take `(direction, pid, sender)`;
a sent packet has no sender, so `sender` is None for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from handover.store import attachments as attachment_store
from handover.store.db import Connection, Deferred, to_rows, write


@dataclass(frozen=True, slots=True)
class HeldCopy:
    """A packet this node holds: sent (`outbox`) or accepted received (`received`)."""

    direction: str  # sent | received
    pid: str
    sender: str | None  # None for a sent packet
    schema_id: str
    case_ref: str | None
    stored_at: int
    review_at: int | None
    review_extended: int | None  # the date an EXTEND decision set
    restricted: str | None  # the reason, while restricted
    restricted_by: str | None  # a received copy: the originator whose notice restricted it
    erased_at: int | None
    body_box: bytes | None
    data_key: bytes | None  # the body's data key, wrapped (None: sealed before 014)
    fields: tuple[str, ...] | None  # what a sent packet disclosed; None when received
    counterparts: tuple[str, ...]  # the recipients, or the sender
    pending: int  # deliveries still pending


@dataclass(frozen=True, slots=True)
class UnscheduledCopy:
    """A held packet without a review date, with its case's key dates (YYYY-MM-DD)."""

    direction: str
    pid: str
    sender: str | None
    schema_id: str
    stored_at: int
    review_extended: int | None
    supervision_end: str | None
    release_date: str | None


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    node: str
    status: str


@dataclass(frozen=True, slots=True)
class RectificationRecipient:
    """One recipient of a rectification this node made, with its notice's delivery
    (`status`, `receipt`, ... are None until the notice is queued)."""

    id: int  # the rectification
    action: str
    reason: str
    operator: str
    created_at: int
    node: str
    notice_pid: str | None
    status: str | None
    receipt: bytes | None
    delivery_reason: str | None
    finished_at: int | None


_HELD = (
    "SELECT 'sent' AS direction, o.pid, NULL::text AS sender, o.schema_id, o.case_ref,"
    " o.created_at AS stored_at, o.review_at, o.review_extended, o.restricted,"
    " NULL::text AS restricted_by, o.erased_at,"
    " o.body_box, o.data_key, o.fields,"
    " (SELECT coalesce(array_agg(d.node ORDER BY d.node), '{{}}') FROM deliveries d"
    "  WHERE d.pid = o.pid) AS counterparts,"
    " (SELECT count(*) FROM deliveries d WHERE d.pid = o.pid AND d.status = 'pending')"
    "  AS pending"
    " FROM outbox o WHERE {outbox}"
    " UNION ALL"
    " SELECT 'received', r.pid, r.sender, r.schema_id, r.case_ref, r.received_at,"
    " r.review_at, r.review_extended, r.restricted, r.restricted_by, r.erased_at, r.body_box,"
    " r.data_key,"
    " NULL::text[],"
    " ARRAY[r.sender], 0"
    " FROM received r WHERE r.status = 'accepted' AND {received}"
)


def _table(direction: str) -> str:
    return "outbox" if direction == "sent" else "received"


def _filter(direction: str) -> str:
    """Row filter of one held, not erased packet: $1 pid, $2 sender (NULL for a sent one)."""
    if direction == "sent":
        return "pid = $1 AND $2::text IS NULL AND erased_at IS NULL"
    return "pid = $1 AND sender = $2 AND status = 'accepted' AND erased_at IS NULL"


# --- finding held packets --------------------------------------------------------------


async def due(conn: Connection, now: int, limit: int) -> list[HeldCopy]:
    """Held, not erased packets whose review date is `now` or earlier, oldest first."""
    rows = await conn.fetch(
        _HELD.format(
            outbox="o.erased_at IS NULL AND o.review_at <= $1",
            received="r.erased_at IS NULL AND r.review_at <= $1",
        )
        + " ORDER BY review_at, pid, direction LIMIT $2",
        now,
        limit,
    )
    return to_rows(HeldCopy, rows)


async def held(conn: Connection, pid: str) -> list[HeldCopy]:
    """Every held packet with this pid: ours and, rarely, another sender's with the same id."""
    rows = await conn.fetch(
        _HELD.format(outbox="o.pid = $1", received="r.pid = $1") + " ORDER BY direction, sender",
        pid,
    )
    return to_rows(HeldCopy, rows)


async def held_one(
    conn: Connection, direction: str, pid: str, sender: str | None
) -> HeldCopy | None:
    for copy in await held(conn, pid):
        if copy.direction == direction and copy.sender == sender:
            return copy
    return None


async def held_in_case(conn: Connection, case_ref: str) -> list[HeldCopy]:
    """The case's held packets that are not erased (to recompute review dates)."""
    rows = await conn.fetch(
        _HELD.format(
            outbox="o.case_ref = $1 AND o.erased_at IS NULL",
            received="r.case_ref = $1 AND r.erased_at IS NULL",
        ),
        case_ref,
    )
    return to_rows(HeldCopy, rows)


async def unschedule_case(conn: Connection, case_ref: str, defer: Deferred | None) -> None:
    """Clear the review dates of a case's held packets (its key dates changed):
    :func:`unscheduled` then finds them and they are dated again."""
    await write(conn, defer, _UNSCHEDULE_CASE, case_ref)


# Both tables in one statement (one round trip in every commit that sets a key date).
_UNSCHEDULE_CASE = (
    "WITH sent AS (UPDATE outbox SET review_at = NULL"
    " WHERE case_ref = $1 AND erased_at IS NULL AND review_at IS NOT NULL RETURNING 1)"
    " UPDATE received SET review_at = NULL"
    " WHERE case_ref = $1 AND erased_at IS NULL AND review_at IS NOT NULL"
)


async def unscheduled(conn: Connection, limit: int) -> list[UnscheduledCopy]:
    """Held, not erased packets without a review date yet, with their case's key dates."""
    inner = _HELD.format(
        outbox="o.review_at IS NULL AND o.erased_at IS NULL",
        received="r.review_at IS NULL AND r.erased_at IS NULL",
    )
    rows = await conn.fetch(
        "SELECT h.direction, h.pid, h.sender, h.schema_id, h.stored_at, h.review_extended,"  # noqa: S608 - fixed
        f" c.supervision_end, c.release_date FROM ({inner}) h"
        " LEFT JOIN cases c ON c.case_ref = h.case_ref LIMIT $1",
        limit,
    )
    return to_rows(UnscheduledCopy, rows)


async def set_reviews(conn: Connection, dates: Sequence[tuple[str, str, str | None, int]]) -> None:
    """Set computed review dates, (direction, pid, sender, review_at) each, where still unset."""
    for direction in ("sent", "received"):
        rows = [(pid, sender, at) for d, pid, sender, at in dates if d == direction]
        if rows:
            await conn.executemany(
                f"UPDATE {_table(direction)} SET review_at = $3"  # noqa: S608 - fixed names
                f" WHERE {_filter(direction)} AND review_at IS NULL",
                rows,
            )


# --- changing one held packet --------------------------------------------------------------


async def set_review(
    conn: Connection,
    direction: str,
    pid: str,
    sender: str | None,
    *,
    review_at: int,
    extended: int | None = None,
) -> None:
    """Set the review date; `extended` also records it as an EXTEND decision's date."""
    await conn.execute(
        f"UPDATE {_table(direction)} SET review_at = $3,"  # noqa: S608 - fixed names
        f" review_extended = coalesce($4, review_extended) WHERE {_filter(direction)}",
        pid,
        sender,
        review_at,
        extended,
    )


async def set_restricted(
    conn: Connection,
    direction: str,
    pid: str,
    sender: str | None,
    reason: str | None,
    *,
    by: str | None = None,
) -> None:
    """Restrict (with the reason) or, with None, lift the restriction; `by` names the
    originator whose notice imposed it on a received copy."""
    if direction == "received":
        await conn.execute(
            f"UPDATE received SET restricted = $3, restricted_by = $4"  # noqa: S608 - fixed
            f" WHERE {_filter(direction)}",
            pid,
            sender,
            reason,
            by if reason is not None else None,
        )
        return
    await conn.execute(
        f"UPDATE outbox SET restricted = $3"  # noqa: S608 - fixed names
        f" WHERE {_filter(direction)}",
        pid,
        sender,
        reason,
    )


async def replace_body(
    conn: Connection,
    direction: str,
    pid: str,
    sender: str | None,
    *,
    body_box: bytes,
    data_key: bytes,
    rectified_by: str | None,
) -> None:
    """A rectified body (encrypted at rest); a received copy names the notice."""
    if direction == "sent":
        await conn.execute(
            "UPDATE outbox SET body_box = $2, data_key = $3 WHERE pid = $1",
            pid,
            body_box,
            data_key,
        )
    else:
        await conn.execute(
            "UPDATE received SET body_box = $3, rectified_by = $4, data_key = $5"
            " WHERE pid = $1 AND sender = $2 AND status = 'accepted'",
            pid,
            sender,
            body_box,
            rectified_by,
            data_key,
        )


async def erase(conn: Connection, direction: str, pid: str, sender: str | None, now: int) -> bool:
    """Clear a held packet's content; metadata, `pd` and the receipt stay.

    A received packet loses its wire and body (the row stays as the replay
    record). A sent packet loses its body, and its wire once no delivery of it
    is pending (:func:`clear_erased_wires` finishes that later). False if it
    was already erased.
    """
    if direction == "sent":
        result: str = await conn.execute(
            "UPDATE outbox SET body_box = NULL, data_key = NULL, review_at = NULL, erased_at = $2,"
            " wire = CASE WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.pid = outbox.pid"
            "  AND d.status = 'pending') THEN wire END"
            " WHERE pid = $1 AND erased_at IS NULL",
            pid,
            now,
        )
    else:
        result = await conn.execute(
            "UPDATE received SET wire = NULL, body_box = NULL, data_key = NULL, review_at = NULL,"
            " erased_at = $3"
            " WHERE pid = $1 AND sender = $2 AND status = 'accepted' AND erased_at IS NULL",
            pid,
            sender,
            now,
        )
    # Attachments share the packet's erasure (a sent packet's once no delivery needs
    # them, and our own stream once no other sent packet carries it).
    if direction == "sent":
        await conn.execute(
            "DELETE FROM attachment_sent WHERE pid = $1 AND NOT EXISTS (SELECT 1 FROM"
            " deliveries d WHERE d.pid = $1 AND d.status = 'pending')",
            pid,
        )
        await conn.execute(attachment_store.ORPHANS)
    else:
        await conn.execute(
            "DELETE FROM attachment_streams WHERE origin = $2 AND pid = $1", pid, sender
        )
    return result.endswith(" 1")


async def clear_erased_wires(conn: Connection) -> int:
    """Drop the wire of erased sent packets whose last pending delivery has finished."""
    result: str = await conn.execute(
        "UPDATE outbox SET wire = NULL WHERE erased_at IS NOT NULL AND wire IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.pid = outbox.pid"
        "  AND d.status = 'pending')"
    )
    await conn.execute(
        "DELETE FROM attachment_sent l USING outbox o WHERE l.pid = o.pid"
        " AND o.erased_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM deliveries d"
        "  WHERE d.pid = o.pid AND d.status = 'pending')"
    )
    await conn.execute(attachment_store.ORPHANS)
    return int(result.split()[-1])


# --- rectification: the sender's record ------------------------------------------------------


async def deliveries(conn: Connection, pid: str) -> list[DeliveryStatus]:
    rows = await conn.fetch("SELECT node, status FROM deliveries WHERE pid = $1 ORDER BY node", pid)
    return to_rows(DeliveryStatus, rows)


async def add_rectification(
    conn: Connection,
    *,
    target_pid: str,
    action: str,
    reason: str,
    operator: str,
    nodes: Sequence[str],
    now: int,
) -> int:
    rect_id: int = await conn.fetchval(
        "INSERT INTO rectifications (target_pid, action, reason, operator, created_at)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING id",
        target_pid,
        action,
        reason,
        operator,
        now,
    )
    await conn.executemany(
        "INSERT INTO rectification_recipients (rectification_id, node) VALUES ($1, $2)",
        [(rect_id, node) for node in nodes],
    )
    return rect_id


async def set_notice(conn: Connection, rect_id: int, node: str, notice_pid: str) -> None:
    await conn.execute(
        "UPDATE rectification_recipients SET notice_pid = $3"
        " WHERE rectification_id = $1 AND node = $2",
        rect_id,
        node,
        notice_pid,
    )


async def rectifications_of(conn: Connection, target_pid: str) -> list[RectificationRecipient]:
    """Each rectification of a sent packet with, per recipient, its notice's delivery."""
    rows = await conn.fetch(
        "SELECT x.id, x.action, x.reason, x.operator, x.created_at, r.node, r.notice_pid,"
        " d.status, d.receipt, d.reason AS delivery_reason, d.finished_at"
        " FROM rectifications x JOIN rectification_recipients r ON r.rectification_id = x.id"
        " LEFT JOIN deliveries d ON d.pid = r.notice_pid AND d.node = r.node"
        " WHERE x.target_pid = $1 ORDER BY x.id, r.node",
        target_pid,
    )
    return to_rows(RectificationRecipient, rows)


async def sent_rectify_notices(conn: Connection, target_pid: str) -> list[str]:
    """Notices we sent that carry a corrected body of `target_pid`."""
    rows = await conn.fetch(
        "SELECT DISTINCT r.notice_pid FROM rectifications x"
        " JOIN rectification_recipients r ON r.rectification_id = x.id"
        " WHERE x.target_pid = $1 AND x.action = 'RECTIFY' AND r.notice_pid IS NOT NULL"
        " ORDER BY 1",
        target_pid,
    )
    return [r["notice_pid"] for r in rows]


# --- rectification: the receiver's record -------------------------------------------------------


async def record_applied(
    conn: Connection,
    *,
    sender: str,
    notice_pid: str,
    target_pid: str,
    action: str,
    reason: str,
    now: int,
) -> None:
    await conn.execute(
        "INSERT INTO rectifications_applied (sender, notice_pid, target_pid, action, reason,"
        " applied_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        sender,
        notice_pid,
        target_pid,
        action,
        reason,
        now,
    )


async def received_rectify_notices(conn: Connection, sender: str, target_pid: str) -> list[str]:
    """Notices from `sender` we applied that carry a corrected body of `target_pid`."""
    rows = await conn.fetch(
        "SELECT notice_pid FROM rectifications_applied"
        " WHERE sender = $1 AND target_pid = $2 AND action = 'RECTIFY' ORDER BY notice_pid",
        sender,
        target_pid,
    )
    return [r["notice_pid"] for r in rows]
