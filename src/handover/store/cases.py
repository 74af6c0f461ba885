"""Queries for cases, consent, continuity expectations and responsibility agreements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handover.store.db import Connection, Deferred, write


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


async def get(conn: Connection, case_ref: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM cases WHERE case_ref = $1", case_ref)
    return None if row is None else dict(row)


async def by_local_id(conn: Connection, local_id: str) -> str | None:
    value: str | None = await conn.fetchval(
        "SELECT case_ref FROM cases WHERE local_id = $1", local_id
    )
    return value


async def all_cases(conn: Connection, *, limit: int, before: int | None) -> list[dict[str, Any]]:
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
    return [dict(r) for r in rows]


async def timeline(conn: Connection, case_ref: str) -> list[dict[str, Any]]:
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
    return [dict(r) for r in rows]


async def sent_packets(conn: Connection, case_ref: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT o.pid, o.schema_id, o.created_at, o.fields, o.removed, o.consents,"
        " o.review_at, o.restricted, o.erased_at, o.operator,"
        " array_agg(d.node ORDER BY d.node) AS nodes,"
        " array_agg(d.status ORDER BY d.node) AS statuses"
        " FROM outbox o JOIN deliveries d USING (pid) WHERE o.case_ref = $1"
        " GROUP BY o.pid ORDER BY o.created_at, o.pid",
        case_ref,
    )
    return [dict(r) for r in rows]


async def received_packets(conn: Connection, case_ref: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT sender, pid, schema_id, received_at, review_at, restricted, erased_at,"
        " rectified_by FROM received WHERE case_ref = $1 AND status = 'accepted'"
        " ORDER BY received_at, pid",
        case_ref,
    )
    return [dict(r) for r in rows]


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
) -> None:
    await conn.execute(
        "INSERT INTO consents (case_ref, scope, state, consent_id, basis, pid, author,"
        " recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        case_ref,
        scope,
        state,
        consent_id,
        basis,
        pid,
        author,
        now,
    )


async def consent_states(conn: Connection, case_ref: str) -> dict[str, dict[str, Any]]:
    """The newest consent record per scope for a case."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (scope) scope, state, consent_id, basis, pid, author, recorded_at"
        " FROM consents WHERE case_ref = $1 ORDER BY scope, id DESC",
        case_ref,
    )
    return {r["scope"]: dict(r) for r in rows}


async def recipients_under_consent(conn: Connection, case_ref: str, scope: str) -> list[str]:
    """Nodes that were sent data of this case that needed `scope` (from the disclosure record)."""
    rows = await conn.fetch(
        "SELECT DISTINCT d.node FROM outbox o JOIN deliveries d USING (pid)"
        " WHERE o.case_ref = $1 AND $2 = ANY(o.consents) ORDER BY d.node",
        case_ref,
        scope,
    )
    return [r["node"] for r in rows]


# --- continuity of care -------------------------------------------------------------------


async def expect(
    conn: Connection,
    *,
    pid: str,
    node: str,
    case_ref: str,
    schemas: Sequence[str],
    deadline: int,
    now: int,
    defer: Deferred | None = None,
) -> None:
    await write(
        conn,
        defer,
        "INSERT INTO expectations (pid, node, case_ref, schemas, deadline, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        pid,
        node,
        case_ref,
        list(schemas),
        deadline,
        now,
    )


async def satisfy(
    conn: Connection,
    *,
    case_ref: str,
    node: str,
    schema: str,
    pid: str,
    now: int,
    in_reply_to: str | None = None,
) -> list[str]:
    """Mark open expectations of `schema` from `node` on this case as answered:
    only the one for packet `in_reply_to` when the answer names one."""
    rows = await conn.fetch(
        "UPDATE expectations SET satisfied_pid = $4, satisfied_at = $5"
        " WHERE case_ref = $1 AND node = $2 AND $3 = ANY(schemas) AND satisfied_pid IS NULL"
        " AND ($6::text IS NULL OR pid = $6) RETURNING pid",
        case_ref,
        node,
        schema,
        pid,
        now,
        in_reply_to,
    )
    return [r["pid"] for r in rows]


async def move_deadline(conn: Connection, pid: str, deadline: int) -> None:
    """A rectified release date moves the open expectations its packet opened."""
    await conn.execute(
        "UPDATE expectations SET deadline = $2 WHERE pid = $1 AND satisfied_pid IS NULL",
        pid,
        deadline,
    )


async def overdue(conn: Connection, now: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT e.*, c.local_id FROM expectations e LEFT JOIN cases c USING (case_ref)"
        " WHERE e.satisfied_pid IS NULL AND e.deadline < $1 ORDER BY e.deadline, e.pid, e.node",
        now,
    )
    return [dict(r) for r in rows]


async def overdue_count(conn: Connection, now: int) -> int:
    value = await conn.fetchval(
        "SELECT count(*) FROM expectations WHERE satisfied_pid IS NULL AND deadline < $1", now
    )
    return int(value)


async def expectations_for_case(conn: Connection, case_ref: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM expectations WHERE case_ref = $1 ORDER BY created_at, pid, node", case_ref
    )
    return [dict(r) for r in rows]


# --- responsibility agreements ---------------------------------------------------------------


async def record_agreement(
    conn: Connection,
    *,
    case_ref: str,
    agreement_id: str,
    revision: int,
    pid: str,
    author: str,
    parties: Sequence[str],
    valid_from: str,
    valid_to: str | None,
    now: int,
) -> None:
    await conn.execute(
        "INSERT INTO agreements (case_ref, agreement_id, revision, pid, author, parties,"
        " valid_from, valid_to, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (case_ref, agreement_id, revision) DO NOTHING",
        case_ref,
        agreement_id,
        revision,
        pid,
        author,
        list(parties),
        valid_from,
        valid_to,
        now,
    )


async def acknowledge_agreement(
    conn: Connection,
    *,
    case_ref: str,
    agreement_id: str,
    revision: int,
    node: str,
    acknowledged_at: str,
    pid: str,
) -> None:
    await conn.execute(
        "INSERT INTO agreement_acks (case_ref, agreement_id, revision, node, acknowledged_at,"
        " pid) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        case_ref,
        agreement_id,
        revision,
        node,
        acknowledged_at,
        pid,
    )


async def held_body(conn: Connection, pid: str) -> tuple[bytes | None, bool]:
    """The sealed-at-rest body this node holds for a packet (received or sent)
    and whether it is restricted."""
    row = await conn.fetchrow(
        "SELECT body_box, restricted IS NOT NULL AS restricted FROM received"
        " WHERE pid = $1 AND status = 'accepted'"
        " UNION ALL SELECT body_box, restricted IS NOT NULL FROM outbox WHERE pid = $1 LIMIT 1",
        pid,
    )
    if row is None:
        return None, False
    box = row["body_box"]
    return (None if box is None else bytes(box)), bool(row["restricted"])


async def current_agreement(conn: Connection, case_ref: str) -> dict[str, Any] | None:
    """The newest revision of the most recently recorded agreement, with its acknowledgements."""
    row = await conn.fetchrow(
        "SELECT * FROM agreements WHERE case_ref = $1"
        " ORDER BY recorded_at DESC, revision DESC LIMIT 1",
        case_ref,
    )
    if row is None:
        return None
    acks = await conn.fetch(
        "SELECT node, acknowledged_at, pid FROM agreement_acks"
        " WHERE case_ref = $1 AND agreement_id = $2 AND revision = $3 ORDER BY node",
        case_ref,
        row["agreement_id"],
        row["revision"],
    )
    out = dict(row)
    out["acknowledgements"] = [dict(a) for a in acks]
    return out
