"""Queries for erasure that reaches every copy: cancelling deliveries of an
erased or restricted packet, rectification notices kept until acknowledged,
review proposals awaiting a second admin, and the wrapped data keys of stored
packets (crypto-shredding)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from handover.store.db import Connection, to_rows

# --- deliveries of an erased or restricted packet ---------------------------------------------


async def cancel_pending(conn: Connection, pid: str, reason: str, now: int) -> list[str]:
    """Cancel the pending deliveries of a sent packet; the nodes whose delivery was
    cancelled after at least one attempt (it may have arrived) are returned."""
    rows = await conn.fetch(
        "UPDATE deliveries SET status = 'cancelled', reason = $2, finished_at = $3"
        " WHERE pid = $1 AND status = 'pending' RETURNING node, attempts",
        pid,
        reason,
        now,
    )
    return sorted(r["node"] for r in rows if r["attempts"] > 0)


async def tried_nodes(conn: Connection, pid: str) -> list[str]:
    """Nodes whose still pending delivery of `pid` was attempted (it may have arrived)."""
    rows = await conn.fetch(
        "SELECT node FROM deliveries WHERE pid = $1 AND status = 'pending' AND attempts > 0"
        " ORDER BY node",
        pid,
    )
    return [r["node"] for r in rows]


# --- rectification notices kept until acknowledged ---------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingNotice:
    """A rectification notice to (re)queue for one recipient."""

    rectification_id: int
    node: str
    operator: str
    notice_box: bytes
    notice_key: bytes | None
    attempts: int


async def keep_notice(
    conn: Connection, rect_id: int, nodes: Sequence[str], box: bytes, key: bytes
) -> None:
    await conn.execute(
        "UPDATE rectification_recipients SET notice_box = $3, notice_key = $4"
        " WHERE rectification_id = $1 AND node = ANY($2::text[])",
        rect_id,
        list(nodes),
        box,
        key,
    )


async def notices_to_queue(conn: Connection, limit: int) -> list[PendingNotice]:
    """Kept notices never queued, or whose last delivery expired or was cancelled."""
    rows = await conn.fetch(
        "SELECT r.rectification_id, r.node, x.operator, r.notice_box, r.notice_key, r.attempts"
        " FROM rectification_recipients r JOIN rectifications x ON x.id = r.rectification_id"
        " LEFT JOIN deliveries d ON d.pid = r.notice_pid AND d.node = r.node"
        " WHERE r.notice_box IS NOT NULL"
        " AND (r.notice_pid IS NULL OR d.status IN ('expired', 'cancelled'))"
        " ORDER BY r.rectification_id, r.node LIMIT $1",
        limit,
    )
    return to_rows(PendingNotice, rows)


async def notice_failed(conn: Connection, rect_id: int, node: str, error: str) -> None:
    await conn.execute(
        "UPDATE rectification_recipients SET attempts = attempts + 1, last_error = $3"
        " WHERE rectification_id = $1 AND node = $2",
        rect_id,
        node,
        error,
    )


async def notice_queued(conn: Connection, rect_id: int, node: str, notice_pid: str) -> None:
    await conn.execute(
        "UPDATE rectification_recipients SET notice_pid = $3, attempts = attempts + 1,"
        " last_error = NULL WHERE rectification_id = $1 AND node = $2",
        rect_id,
        node,
        notice_pid,
    )


async def drop_acknowledged_notices(conn: Connection) -> int:
    """Forget the kept copy of notices the recipient acknowledged (or refused)."""
    result: str = await conn.execute(
        "UPDATE rectification_recipients r SET notice_box = NULL, notice_key = NULL"
        " FROM deliveries d WHERE r.notice_box IS NOT NULL AND d.pid = r.notice_pid"
        " AND d.node = r.node AND d.status IN ('delivered', 'rejected')"
    )
    return int(result.split()[-1])


async def drop_notices_of(conn: Connection, target_pid: str) -> None:
    """Forget kept notices that carry a corrected body of an erased packet."""
    await conn.execute(
        "UPDATE rectification_recipients r SET notice_box = NULL, notice_key = NULL"
        " FROM rectifications x WHERE x.id = r.rectification_id AND x.target_pid = $1"
        " AND x.action = 'RECTIFY' AND r.notice_box IS NOT NULL",
        target_pid,
    )


@dataclass(frozen=True, slots=True)
class NoticeState:
    rectification_id: int
    node: str
    attempts: int
    last_error: str | None


async def notice_states(conn: Connection, target_pid: str) -> list[NoticeState]:
    rows = await conn.fetch(
        "SELECT r.rectification_id, r.node, r.attempts, r.last_error"
        " FROM rectification_recipients r JOIN rectifications x ON x.id = r.rectification_id"
        " WHERE x.target_pid = $1",
        target_pid,
    )
    return to_rows(NoticeState, rows)


# --- review proposals (four eyes) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proposal:
    id: int
    direction: str
    pid: str
    sender: str | None
    outcome: str
    review_at: int | None
    reason_code: str
    justification: str
    proposer: str
    created_at: int
    state: str
    approver: str | None
    decided_at: int | None


_PROPOSAL = (
    "SELECT id, direction, pid, sender, outcome, review_at, reason_code, justification,"
    " proposer, created_at, state, approver, decided_at FROM review_proposals"
)


async def add_proposal(
    conn: Connection,
    *,
    direction: str,
    pid: str,
    sender: str | None,
    outcome: str,
    review_at: int | None,
    reason_code: str,
    justification: str,
    proposer: str,
    now: int,
) -> int:
    """A new proposal; an open proposal for the same packet is withdrawn first."""
    await conn.execute(
        "UPDATE review_proposals SET state = 'withdrawn', decided_at = $4"
        " WHERE direction = $1 AND pid = $2 AND sender IS NOT DISTINCT FROM $3"
        " AND state = 'pending_approval'",
        direction,
        pid,
        sender,
        now,
    )
    proposal_id: int = await conn.fetchval(
        "INSERT INTO review_proposals (direction, pid, sender, outcome, review_at, reason_code,"
        " justification, proposer, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " RETURNING id",
        direction,
        pid,
        sender,
        outcome,
        review_at,
        reason_code,
        justification,
        proposer,
        now,
    )
    return proposal_id


async def all_open_proposals(conn: Connection, limit: int) -> list[Proposal]:
    rows = await conn.fetch(
        _PROPOSAL + " WHERE state = 'pending_approval' ORDER BY id LIMIT $1", limit
    )
    return to_rows(Proposal, rows)


async def open_proposals(conn: Connection, pid: str) -> list[Proposal]:
    rows = await conn.fetch(
        _PROPOSAL + " WHERE pid = $1 AND state = 'pending_approval' ORDER BY id", pid
    )
    return to_rows(Proposal, rows)


async def approve(conn: Connection, proposal_id: int, approver: str, now: int) -> bool:
    """Mark an open proposal approved; False if it was no longer open."""
    result: str = await conn.execute(
        "UPDATE review_proposals SET state = 'approved', approver = $2, decided_at = $3"
        " WHERE id = $1 AND state = 'pending_approval'",
        proposal_id,
        approver,
        now,
    )
    return result.endswith(" 1")


# --- wrapped data keys (crypto-shredding) --------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyedRow:
    """A stored packet's sealed content with its wrapped data key (None: sealed with
    the storage key itself, before migration 014)."""

    tbl: str
    pid: str
    sender: str
    body_box: bytes | None
    wire: bytes | None
    data_key: bytes | None


async def legacy_rows(conn: Connection, limit: int) -> list[KeyedRow]:
    """Stored packets whose content has no data key (sealed before migration 014)."""
    rows = await conn.fetch(
        "SELECT 'outbox' AS tbl, pid, '' AS sender, body_box, NULL::bytea AS wire, data_key"
        " FROM outbox WHERE data_key IS NULL AND body_box IS NOT NULL"
        " UNION ALL"
        " SELECT 'received', pid, sender, body_box, wire, data_key FROM received"
        " WHERE status = 'accepted' AND data_key IS NULL AND body_box IS NOT NULL LIMIT $1",
        limit,
    )
    return to_rows(KeyedRow, rows)


@dataclass(frozen=True, slots=True)
class DataKey:
    tbl: str
    pid: str
    sender: str
    data_key: bytes


async def data_keys(conn: Connection, after: tuple[str, str, str], limit: int) -> list[DataKey]:
    """Wrapped data keys in (table, pid, sender) order after `after` (keys only)."""
    rows = await conn.fetch(
        "SELECT tbl, pid, sender, data_key FROM ("
        " SELECT 'outbox' AS tbl, pid, '' AS sender, data_key FROM outbox"
        "  WHERE data_key IS NOT NULL"
        " UNION ALL SELECT 'received', pid, sender, data_key FROM received"
        "  WHERE data_key IS NOT NULL) k"
        " WHERE (tbl, pid, sender) > ($1, $2, $3) ORDER BY tbl, pid, sender LIMIT $4",
        *after,
        limit,
    )
    return to_rows(DataKey, rows)


async def set_data_keys(conn: Connection, keys: Sequence[tuple[str, str, str, bytes]]) -> None:
    """(table, pid, sender, data_key): keys re-wrapped under a new storage key."""
    out = [(pid, key) for tbl, pid, _s, key in keys if tbl == "outbox"]
    into = [(pid, s, key) for tbl, pid, s, key in keys if tbl == "received"]
    if out:
        await conn.executemany("UPDATE outbox SET data_key = $2 WHERE pid = $1", out)
    if into:
        await conn.executemany(
            "UPDATE received SET data_key = $3 WHERE pid = $1 AND sender = $2", into
        )


async def set_keys(
    conn: Connection, rows: Sequence[tuple[str, str, str, bytes | None, bytes | None, bytes]]
) -> None:
    """(table, pid, sender, body_box, wire, data_key): content re-sealed or a key re-wrapped."""
    out = [(pid, box, key) for tbl, pid, _s, box, _w, key in rows if tbl == "outbox"]
    into = [(pid, s, box, wire, key) for tbl, pid, s, box, wire, key in rows if tbl == "received"]
    if out:
        await conn.executemany("UPDATE outbox SET body_box = $2, data_key = $3 WHERE pid = $1", out)
    if into:
        await conn.executemany(
            "UPDATE received SET body_box = $3, wire = $4, data_key = $5"
            " WHERE pid = $1 AND sender = $2",
            into,
        )


async def rewrap_notice_keys(conn: Connection, rewrap: Sequence[tuple[int, str, bytes]]) -> None:
    await conn.executemany(
        "UPDATE rectification_recipients SET notice_key = $3"
        " WHERE rectification_id = $1 AND node = $2",
        rewrap,
    )


async def notice_keys(conn: Connection) -> list[tuple[int, str, bytes]]:
    rows = await conn.fetch(
        "SELECT rectification_id, node, notice_key FROM rectification_recipients"
        " WHERE notice_key IS NOT NULL"
    )
    return [(r["rectification_id"], r["node"], bytes(r["notice_key"])) for r in rows]


# --- rectification requests (a recipient's inaccuracy report) ---------------------------------


@dataclass(frozen=True, slots=True)
class RequestRow:
    sender: str
    pid: str
    concern: str
    fields: tuple[str, ...]
    received_at: int
    answered_by: int | None


async def add_request(
    conn: Connection,
    *,
    sender: str,
    pid: str,
    target_pid: str,
    concern: str,
    fields: Sequence[str],
    now: int,
) -> None:
    await conn.execute(
        "INSERT INTO rectification_requests (sender, pid, target_pid, concern, fields,"
        " received_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        sender,
        pid,
        target_pid,
        concern,
        list(fields),
        now,
    )


async def requests_for(conn: Connection, target_pid: str) -> list[RequestRow]:
    rows = await conn.fetch(
        "SELECT sender, pid, concern, fields, received_at, answered_by"
        " FROM rectification_requests WHERE target_pid = $1 ORDER BY received_at, pid",
        target_pid,
    )
    return to_rows(RequestRow, rows)


async def answer_request(conn: Connection, target_pid: str, pid: str, rect_id: int) -> bool:
    result: str = await conn.execute(
        "UPDATE rectification_requests SET answered_by = $3"
        " WHERE target_pid = $1 AND pid = $2 AND answered_by IS NULL",
        target_pid,
        pid,
        rect_id,
    )
    return result.endswith(" 1")


async def item_boxes(conn: Connection) -> list[tuple[str, str, bytes]]:
    """Attachment items sealed with the storage key: (origin, aid, item_box)."""
    rows = await conn.fetch(
        "SELECT origin, aid, item_box FROM attachment_streams WHERE item_box IS NOT NULL"
    )
    return [(r["origin"], r["aid"], bytes(r["item_box"])) for r in rows]


async def set_item_boxes(conn: Connection, boxes: Sequence[tuple[str, str, bytes]]) -> None:
    await conn.executemany(
        "UPDATE attachment_streams SET item_box = $3 WHERE origin = $1 AND aid = $2", boxes
    )
