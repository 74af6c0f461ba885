"""Queries for received packets (the inbox and the replay records)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handover.protocol.opening import StoredReplay
from handover.store.db import Connection, Deferred, to_row, to_rows, write


@dataclass(frozen=True, slots=True)
class InboxItem:
    """An accepted packet as the inbox lists it (no content)."""

    sender: str
    pid: str
    schema_id: str
    case_ref: str | None
    iat: int
    exp: int
    received_at: int
    log_seq: int
    has_body: bool  # False once erased
    restricted: bool


@dataclass(frozen=True, slots=True)
class ReceivedPacket:
    """An accepted received packet: its metadata, the receipt we signed for it
    (wire) and its body sealed at rest (None once erased)."""

    sender: str
    pid: str
    pd: bytes
    status: str
    reason: str | None
    receipt: bytes
    schema_id: str
    case_ref: str | None
    iat: int
    exp: int
    received_at: int
    log_seq: int
    sender_seq: int
    sender_head: bytes
    keyset_serial: int
    body_box: bytes | None
    data_key: bytes | None
    restricted: str | None  # the reason, while restricted
    restricted_by: str | None  # the originator that imposed it by its notice


@dataclass(frozen=True, slots=True)
class SenderCommitment:
    """A sender's log position carried by a packet it sent us (`pid`)."""

    pid: str
    sender_seq: int
    sender_head: bytes


async def replay_records(
    conn: Connection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], StoredReplay]:
    """The replay record of each (sender, pid) received before, in one query."""
    if not keys:
        return {}
    rows = await conn.fetch(
        "SELECT r.sender, r.pid, r.pd, r.receipt FROM received r"
        " JOIN unnest($1::text[], $2::text[]) AS k(sender, pid)"
        " ON r.sender = k.sender AND r.pid = k.pid",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {
        (r["sender"], r["pid"]): StoredReplay(bytes(r["pd"]), bytes(r["receipt"])) for r in rows
    }


async def insert(conn: Connection, defer: Deferred | None = None, **values: Any) -> None:
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await write(
        conn,
        defer,
        f"INSERT INTO received ({', '.join(columns)}) VALUES ({placeholders})",  # noqa: S608
        *values.values(),
    )


async def inbox(
    conn: Connection, *, limit: int, before: int | None, case_ref: str | None
) -> list[InboxItem]:
    rows = await conn.fetch(
        "SELECT sender, pid, schema_id, case_ref, iat, exp, received_at, log_seq,"
        " (body_box IS NOT NULL) AS has_body, (restricted IS NOT NULL) AS restricted"
        " FROM received"
        " WHERE status = 'accepted' AND ($1::bigint IS NULL OR received_at < $1)"
        " AND ($2::text IS NULL OR case_ref = $2)"
        " ORDER BY received_at DESC, pid LIMIT $3",
        before,
        case_ref,
        limit,
    )
    return to_rows(InboxItem, rows)


async def get(conn: Connection, pid: str) -> ReceivedPacket | None:
    """The accepted packet with this pid (the first received, should two senders
    have used the same pid)."""
    row = await conn.fetchrow(
        "SELECT sender, pid, pd, status, reason, receipt, schema_id, case_ref, iat, exp,"
        " received_at, log_seq, sender_seq, sender_head, keyset_serial, body_box, data_key,"
        " restricted, restricted_by"
        " FROM received WHERE pid = $1 AND status = 'accepted' ORDER BY received_at LIMIT 1",
        pid,
    )
    return None if row is None else to_row(ReceivedPacket, row)


async def sender_commitments(conn: Connection, node: str) -> list[SenderCommitment]:
    """Every sender log position held from `node`."""
    rows = await conn.fetch(
        "SELECT pid, sender_seq, sender_head FROM received WHERE sender = $1 AND sender_seq > 0",
        node,
    )
    return to_rows(SenderCommitment, rows)
