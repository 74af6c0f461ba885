"""Queries for cases, their timelines and packets, and consent.

Continuity-of-care expectations and responsibility agreements are in `continuity`.
"""

from __future__ import annotations

from dataclasses import dataclass

from handover.store.db import Connection, Deferred, to_row, to_rows

_CASE = "case_ref, local_id, created_at, first_pid, release_date, supervision_end, updated_at"
_CONSENT = "scope, state, consent_id, basis, pid, author, recorded_at"


@dataclass(frozen=True, slots=True)
class CaseRow:
    """A case this node sent or received packets for, with its key dates (YYYY-MM-DD)."""

    case_ref: str
    local_id: str | None
    created_at: int
    first_pid: str
    release_date: str | None
    supervision_end: str | None
    updated_at: int


@dataclass(frozen=True, slots=True)
class CaseSummary:
    """A case in the case list: its row and how many packets it sent and received."""

    case_ref: str
    local_id: str | None
    created_at: int
    first_pid: str
    release_date: str | None
    supervision_end: str | None
    updated_at: int
    sent: int
    received: int


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One event of a case's timeline: queued or finished per recipient, or accepted."""

    at: int
    direction: str  # sent | received
    pid: str
    schema_id: str
    counterpart: str
    event: str  # queued | delivered | rejected | expired | accepted


@dataclass(frozen=True, slots=True)
class CaseSentPacket:
    """A packet sent for a case: what it disclosed and each recipient's delivery status."""

    pid: str
    schema_id: str
    created_at: int
    fields: tuple[str, ...] | None
    removed: tuple[str, ...] | None
    consents: tuple[str, ...] | None
    review_at: int | None
    restricted: str | None
    erased_at: int | None
    operator: str | None
    nodes: tuple[str, ...]
    statuses: tuple[str, ...]  # one per node


@dataclass(frozen=True, slots=True)
class CaseReceivedPacket:
    """An accepted packet received for a case."""

    sender: str
    pid: str
    schema_id: str
    received_at: int
    review_at: int | None
    restricted: str | None
    erased_at: int | None
    rectified_by: str | None


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """A consent-record of a case, given or withdrawn, sent or received."""

    scope: str
    state: str  # GIVEN | WITHDRAWN
    consent_id: str
    basis: str
    pid: str
    author: str
    recorded_at: int


async def touch(
    conn: Connection,
    *,
    case_ref: str,
    pid: str,
    now: int,
    release_date: str | None = None,
    supervision_end: str | None = None,
    defer: Deferred | None = None,
) -> bool:
    """Create the case on its first packet; keep the newest known key dates.

    Returns True when an existing case's key dates changed (what it holds may
    then fall due for review at another time). Deferred when `defer` is given
    (and then returns False: use it only when no key date is being set).
    """
    sql = (
        "INSERT INTO cases (case_ref, created_at, first_pid, release_date, supervision_end,"
        " updated_at) VALUES ($1, $2, $3, $4, $5, $2)"
        " ON CONFLICT (case_ref) DO UPDATE SET updated_at = $2,"
        " release_date = coalesce($4, cases.release_date),"
        " supervision_end = coalesce($5, cases.supervision_end)"
    )
    if defer is not None:
        defer.add(sql, case_ref, now, pid, release_date, supervision_end)
        return False
    changed = await conn.fetchval(
        "WITH old AS (SELECT release_date, supervision_end FROM cases WHERE case_ref = $1), "  # noqa: S608 - constant SQL
        "new AS (" + sql + " RETURNING release_date, supervision_end)"
        " SELECT EXISTS (SELECT 1 FROM old, new WHERE"
        " old.release_date IS DISTINCT FROM new.release_date"
        " OR old.supervision_end IS DISTINCT FROM new.supervision_end)",
        case_ref,
        now,
        pid,
        release_date,
        supervision_end,
    )
    return bool(changed)


async def set_local_id(conn: Connection, case_ref: str, local_id: str | None) -> bool:
    result: str = await conn.execute(
        "UPDATE cases SET local_id = $2 WHERE case_ref = $1", case_ref, local_id
    )
    return result.endswith(" 1")


async def get(conn: Connection, case_ref: str) -> CaseRow | None:
    row = await conn.fetchrow(f"SELECT {_CASE} FROM cases WHERE case_ref = $1", case_ref)  # noqa: S608
    return None if row is None else to_row(CaseRow, row)


async def by_local_id(conn: Connection, local_id: str) -> str | None:
    value: str | None = await conn.fetchval(
        "SELECT case_ref FROM cases WHERE local_id = $1", local_id
    )
    return value


async def all_cases(conn: Connection, *, limit: int, before: int | None) -> list[CaseSummary]:
    rows = await conn.fetch(
        "SELECT c.*,"
        " (SELECT count(*) FROM outbox o WHERE o.case_ref = c.case_ref) AS sent,"
        " (SELECT count(*) FROM received r WHERE r.case_ref = c.case_ref"
        "  AND r.status = 'accepted') AS received"
        " FROM cases c WHERE ($1::bigint IS NULL OR c.updated_at < $1)"
        " ORDER BY c.updated_at DESC, c.case_ref LIMIT $2",
        before,
        limit,
    )
    return to_rows(CaseSummary, rows)


async def timeline(conn: Connection, case_ref: str) -> list[TimelineEvent]:
    """What this node sent and received for the case, derived from the outbox,
    the deliveries and the inbox (queued, then delivered / rejected / expired
    per recipient; accepted on receipt)."""
    rows = await conn.fetch(
        "SELECT o.created_at AS at, 'sent' AS direction, o.pid, o.schema_id,"
        " d.node AS counterpart, 'queued' AS event"
        " FROM outbox o JOIN deliveries d USING (pid) WHERE o.case_ref = $1"
        " UNION ALL"
        " SELECT d.finished_at, 'sent', o.pid, o.schema_id, d.node, d.status"
        " FROM outbox o JOIN deliveries d USING (pid)"
        " WHERE o.case_ref = $1 AND d.finished_at IS NOT NULL"
        " UNION ALL"
        " SELECT r.received_at, 'received', r.pid, r.schema_id, r.sender, 'accepted'"
        " FROM received r WHERE r.case_ref = $1 AND r.status = 'accepted'"
        " ORDER BY at, pid, counterpart",
        case_ref,
    )
    return to_rows(TimelineEvent, rows)


async def sent_packets(conn: Connection, case_ref: str) -> list[CaseSentPacket]:
    rows = await conn.fetch(
        "SELECT o.pid, o.schema_id, o.created_at, o.fields, o.removed, o.consents,"
        " o.review_at, o.restricted, o.erased_at, o.operator,"
        " array_agg(d.node ORDER BY d.node) AS nodes,"
        " array_agg(d.status ORDER BY d.node) AS statuses"
        " FROM outbox o JOIN deliveries d USING (pid) WHERE o.case_ref = $1"
        " GROUP BY o.pid ORDER BY o.created_at, o.pid",
        case_ref,
    )
    return to_rows(CaseSentPacket, rows)


async def received_packets(conn: Connection, case_ref: str) -> list[CaseReceivedPacket]:
    rows = await conn.fetch(
        "SELECT sender, pid, schema_id, received_at, review_at, restricted, erased_at,"
        " rectified_by FROM received WHERE case_ref = $1 AND status = 'accepted'"
        " ORDER BY received_at, pid",
        case_ref,
    )
    return to_rows(CaseReceivedPacket, rows)


# --- consent ----------------------------------------------------------------------------


async def add_consent(
    conn: Connection,
    *,
    case_ref: str,
    scope: str,
    state: str,
    consent_id: str,
    basis: str,
    pid: str,
    author: str,
    now: int,
    recipients: list[str] | None = None,
    effective_on: str | None = None,
    expires_on: str | None = None,
) -> None:
    """Record a consent-record; `recipients` (None: every node) and the dates
    (YYYY-MM-DD) bound what it covers (LED Art 8)."""
    await conn.execute(
        "INSERT INTO consents (case_ref, scope, state, consent_id, basis, pid, author,"
        " recorded_at, recipients, effective_on, expires_on)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        case_ref,
        scope,
        state,
        consent_id,
        basis,
        pid,
        author,
        now,
        recipients,
        effective_on,
        expires_on,
    )


async def scopes_in_force(conn: Connection, case_ref: str, node: str, today: str) -> set[str]:
    """The consent scopes in force today for data of a case going to (or held by) `node`.

    Per scope, of the records that cover `node` (no `recipients`, `node` among
    them, or `node` is the agency that recorded the consent) and have taken
    effect by `today`, the one with the latest date of its own (given or
    withdrawn) holds, not the last to arrive; a given consent past its
    `expires_on` is not in force. Records without dates (stored before
    these columns existed) count as the oldest, in arrival order.
    """
    rows = await conn.fetch(
        "SELECT DISTINCT ON (scope) scope, state, expires_on FROM consents"
        " WHERE case_ref = $1"
        " AND (recipients IS NULL OR $2 = ANY(recipients) OR author = $2)"
        " AND COALESCE(effective_on, '') <= $3"
        " ORDER BY scope, COALESCE(effective_on, '') DESC, id DESC",
        case_ref,
        node,
        today,
    )
    return {
        r["scope"]
        for r in rows
        if r["state"] == "GIVEN" and (r["expires_on"] is None or r["expires_on"] >= today)
    }


async def consent_states(conn: Connection, case_ref: str) -> dict[str, ConsentRecord]:
    """The newest consent record per scope for a case."""
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (scope) {_CONSENT}"  # noqa: S608 - constant SQL
        " FROM consents WHERE case_ref = $1 ORDER BY scope, id DESC",
        case_ref,
    )
    return {r["scope"]: to_row(ConsentRecord, r) for r in rows}


async def recipients_under_consent(conn: Connection, case_ref: str, scope: str) -> list[str]:
    """Nodes that were sent data of this case that needed `scope` (from the disclosure record)."""
    rows = await conn.fetch(
        "SELECT DISTINCT d.node FROM outbox o JOIN deliveries d USING (pid)"
        " WHERE o.case_ref = $1 AND $2 = ANY(o.consents) ORDER BY d.node",
        case_ref,
        scope,
    )
    return [r["node"] for r in rows]


async def held_body(conn: Connection, pid: str) -> tuple[bytes | None, bool, bytes | None]:
    """The sealed-at-rest body this node holds for a packet (received or sent),
    whether it is restricted, and its wrapped data key."""
    row = await conn.fetchrow(
        "SELECT body_box, restricted IS NOT NULL AS restricted, data_key FROM received"
        " WHERE pid = $1 AND status = 'accepted'"
        " UNION ALL SELECT body_box, restricted IS NOT NULL, data_key FROM outbox WHERE pid = $1"
        " LIMIT 1",
        pid,
    )
    if row is None:
        return None, False, None
    box, key = row["body_box"], row["data_key"]
    return (
        None if box is None else bytes(box),
        bool(row["restricted"]),
        None if key is None else bytes(key),
    )
