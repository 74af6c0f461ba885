"""Attachment streams in PostgreSQL (docs/protocol.md section 8; migration 013).

A stream is a row of `attachment_streams` and its bytes are rows of
`attachment_chunks` of at most :data:`PIECE_BYTES`. Each piece is committed
together with the offset it advances (`received = received + len` guarded by
the offset the writer expected), so:

- an upload cut off anywhere resumes from what is durably held, on any
  replica of the node (they share the database);
- two writers of one stream cannot interleave: the second one's guard fails;
- reading goes piece by piece through a cursor, never the whole stream.

`origin` is '' for streams this node made and the peer's node id for
streams a peer uploaded to us.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from handover.store.db import Connection, Database, to_row, to_rows

PIECE_BYTES = 1024 * 1024
READ_BATCH = 4  # pieces per query when reading a stream
OWN = ""


@dataclass(frozen=True, slots=True)
class StreamRow:
    origin: str
    aid: str
    alen: int
    ah: bytes
    exp: int
    received: int
    complete: bool
    pid: str | None
    item_box: bytes | None
    created_at: int
    scan: str | None


_COLUMNS = "origin, aid, alen, ah, exp, received, complete, pid, item_box, created_at, scan"
# Our own streams with the pid of each sent packet that carries them.
_SENT = (
    "SELECT s.origin, s.aid, s.alen, s.ah, s.exp, s.received, s.complete, l.pid, s.item_box,"
    " s.created_at, s.scan FROM attachment_streams s"
    " JOIN attachment_sent l ON s.origin = '' AND s.aid = l.aid"
)
# Our own streams that no sent packet carries any more (after erasure).
ORPHANS = (
    "DELETE FROM attachment_streams s WHERE s.origin = '' AND s.pid IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM attachment_sent l WHERE l.aid = s.aid)"
)


async def get(conn: Connection, origin: str, aid: str) -> StreamRow | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM attachment_streams WHERE origin = $1 AND aid = $2",  # noqa: S608
        origin,
        aid,
    )
    return None if row is None else to_row(StreamRow, row)


async def lock_origin(conn: Connection, origin: str) -> None:
    """Serialise quota decisions for one origin across replicas (transaction lock)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('attachments/' || $1))", origin)


async def incomplete_bytes(conn: Connection, origin: str) -> int:
    value = await conn.fetchval(
        "SELECT coalesce(sum(alen), 0) FROM attachment_streams WHERE origin = $1 AND NOT complete",
        origin,
    )
    return int(value)


async def create(
    conn: Connection,
    *,
    origin: str,
    aid: str,
    alen: int,
    ah: bytes,
    exp: int,
    now: int,
    item_box: bytes | None = None,
    pid: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO attachment_streams (origin, aid, alen, ah, exp, created_at, item_box, pid)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        origin,
        aid,
        alen,
        ah,
        exp,
        now,
        item_box,
        pid,
    )


async def append_piece(db: Database, origin: str, aid: str, offset: int, data: bytes) -> bool:
    """Store `data` at `offset` and advance the offset, in one transaction.

    False (nothing stored) if the stored offset is no longer `offset`.
    """
    async with db.transaction() as conn:
        result: str = await conn.execute(
            "UPDATE attachment_streams SET received = received + $4"
            " WHERE origin = $1 AND aid = $2 AND received = $3 AND NOT complete"
            " AND received + $4 <= alen",
            origin,
            aid,
            offset,
            len(data),
        )
        if not result.endswith(" 1"):
            return False
        await conn.execute(
            "INSERT INTO attachment_chunks (origin, aid, start, data) VALUES ($1, $2, $3, $4)",
            origin,
            aid,
            offset,
            data,
        )
    return True


async def read_pieces(db: Database, origin: str, aid: str, start: int = 0) -> AsyncGenerator[bytes]:
    """The stored bytes from `start` (a piece that begins earlier is cut), in
    order, a few pieces per query: no connection is held while the caller
    (a slow download, an upload to a peer) consumes them."""
    position = start
    while True:
        async with db.connection() as conn:
            rows = await conn.fetch(
                "SELECT start, data FROM attachment_chunks WHERE origin = $1 AND aid = $2"
                " AND start + length(data) > $3 ORDER BY start LIMIT $4",
                origin,
                aid,
                position,
                READ_BATCH,
            )
        if not rows:
            return
        for row in rows:
            data = bytes(row["data"])
            piece_start = int(row["start"])
            if piece_start > position:
                return  # a gap: the stream is not whole (the caller's check fails)
            yield data[position - piece_start :]
            position = piece_start + len(data)


async def mark_complete(conn: Connection, origin: str, aid: str) -> None:
    await conn.execute(
        "UPDATE attachment_streams SET complete = true WHERE origin = $1 AND aid = $2"
        " AND received = alen",
        origin,
        aid,
    )


async def finish_own(conn: Connection, aid: str, alen: int, ah: bytes, item_box: bytes) -> None:
    """A local upload fully written: its real length and hash, its item, complete."""
    await conn.execute(
        "UPDATE attachment_streams SET alen = $2, ah = $3, item_box = $4, complete = true"
        " WHERE origin = '' AND aid = $1 AND received = $2",
        aid,
        alen,
        ah,
        item_box,
    )


async def delete(conn: Connection, origin: str, aid: str) -> None:
    await conn.execute("DELETE FROM attachment_streams WHERE origin = $1 AND aid = $2", origin, aid)


async def complete_for(
    conn: Connection, origin: str, aids: list[str], pid: str
) -> dict[str, StreamRow]:
    """The complete streams of `origin` among `aids` that no other packet claimed."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM attachment_streams"  # noqa: S608 - fixed columns
        " WHERE origin = $1 AND aid = ANY($2::text[]) AND complete"
        " AND (pid IS NULL OR pid = $3)",
        origin,
        aids,
        pid,
    )
    return {r.aid: r for r in to_rows(StreamRow, rows)}


async def claim(
    conn: Connection,
    origin: str,
    aid: str,
    pid: str,
    item_box: bytes | None,
    scan: str | None = None,
) -> bool:
    """Bind a stream to the packet that carries it (its retention from then on)."""
    result: str = await conn.execute(
        "UPDATE attachment_streams SET pid = $3, item_box = coalesce($4, item_box), scan = $5"
        " WHERE origin = $1 AND aid = $2 AND (pid IS NULL OR pid = $3)",
        origin,
        aid,
        pid,
        item_box,
        scan,
    )
    return result.endswith(" 1")


async def of_packet(conn: Connection, origin: str, pid: str) -> list[StreamRow]:
    if origin == OWN:
        rows = await conn.fetch(f"{_SENT} WHERE l.pid = $1 ORDER BY s.created_at, s.aid", pid)
    else:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM attachment_streams"  # noqa: S608 - fixed columns
            " WHERE origin = $1 AND pid = $2 ORDER BY created_at, aid",
            origin,
            pid,
        )
    return to_rows(StreamRow, rows)


async def link_sent(conn: Connection, aid: str, pid: str) -> None:
    await conn.execute(
        "INSERT INTO attachment_sent (aid, pid) VALUES ($1, $2) ON CONFLICT DO NOTHING", aid, pid
    )


async def delete_of_packet(conn: Connection, origin: str, pid: str) -> int:
    result: str = await conn.execute(
        "DELETE FROM attachment_streams WHERE origin = $1 AND pid = $2", origin, pid
    )
    return int(result.split()[-1])


async def sweep_unclaimed(conn: Connection, now: int, grace_ms: int) -> int:
    """Delete streams no packet claimed by `exp + grace`."""
    result: str = await conn.execute(
        "DELETE FROM attachment_streams WHERE pid IS NULL AND exp + $2 < $1", now, grace_ms
    )
    return int(result.split()[-1])


async def note_read(
    conn: Connection, *, origin: str, aid: str, pid: str, operator: str, at: int
) -> None:
    await conn.execute(
        "INSERT INTO attachment_reads (origin, aid, pid, operator, at) VALUES ($1, $2, $3, $4, $5)",
        origin,
        aid,
        pid,
        operator,
        at,
    )


@dataclass(frozen=True, slots=True)
class HeldPacket:
    """What reading an attachment needs to know of the packet that carries it."""

    origin: str  # '' for a sent packet, the sender for a received one
    case_ref: str | None
    schema_id: str | None
    erased: bool
    restricted: str | None


async def held_packet(conn: Connection, pid: str, *, sent: bool) -> HeldPacket | None:
    """The accepted received packet `pid` (or, with `sent`, our sent packet)."""
    if sent:
        row = await conn.fetchrow(
            "SELECT '' AS origin, case_ref, schema_id, erased_at IS NOT NULL AS erased,"
            " restricted FROM outbox WHERE pid = $1",
            pid,
        )
    else:
        row = await conn.fetchrow(
            "SELECT sender AS origin, case_ref, schema_id, erased_at IS NOT NULL AS erased,"
            " restricted FROM received WHERE pid = $1 AND status = 'accepted'"
            " ORDER BY received_at LIMIT 1",
            pid,
        )
    return None if row is None else to_row(HeldPacket, row)


async def of_packets(conn: Connection, pids: list[str]) -> list[StreamRow]:
    """Every stream bound to one of `pids` (received ones, and our own per sent pid)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM attachment_streams"  # noqa: S608 - fixed columns
        " WHERE origin <> '' AND pid = ANY($1::text[])"
        f" UNION ALL {_SENT} WHERE l.pid = ANY($1::text[])"
        " ORDER BY created_at, aid",
        pids,
    )
    return to_rows(StreamRow, rows)


@dataclass(frozen=True, slots=True)
class PacketRead:
    pid: str
    aid: str
    operator: str
    at: int


async def reads_of_packets(conn: Connection, pids: list[str]) -> list[PacketRead]:
    rows = await conn.fetch(
        "SELECT pid, aid, operator, at FROM attachment_reads WHERE pid = ANY($1::text[])"
        " ORDER BY at",
        pids,
    )
    return to_rows(PacketRead, rows)


async def extend_lease(conn: Connection, pid: str, node: str, until: int) -> None:
    """Keep a delivery leased while its attachments upload (outbox claims skip it)."""
    await conn.execute(
        "UPDATE deliveries SET next_attempt_at = greatest(next_attempt_at, $3)"
        " WHERE pid = $1 AND node = $2 AND status = 'pending'",
        pid,
        node,
        until,
    )


async def pending_scans(conn: Connection, limit: int) -> list[StreamRow]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM attachment_streams"  # noqa: S608 - fixed columns
        " WHERE scan = 'pending' ORDER BY created_at LIMIT $1",
        limit,
    )
    return to_rows(StreamRow, rows)


async def set_scan(conn: Connection, origin: str, aid: str, state: str) -> None:
    await conn.execute(
        "UPDATE attachment_streams SET scan = $3"
        " WHERE origin = $1 AND aid = $2 AND scan = 'pending'",
        origin,
        aid,
        state,
    )


async def relink_sent(conn: Connection, pid: str, aids: list[str]) -> None:
    """Our sent packet `pid` now carries exactly `aids` (a rectification replaced
    its attachments); streams no sent packet carries any more are deleted."""
    await conn.execute("DELETE FROM attachment_sent WHERE pid = $1", pid)
    for aid in aids:
        await link_sent(conn, aid, pid)
    await conn.execute(ORPHANS)


async def replace_received(
    conn: Connection, sender: str, notice_pid: str, target_pid: str
) -> list[str]:
    """A rectification notice's attachments replace its target's: the target's
    streams from `sender` are deleted and the notice's are bound to the target.
    Nothing changes when the notice carries none; returns the aids moved."""
    moved = await conn.fetch(
        "SELECT aid FROM attachment_streams WHERE origin = $1 AND pid = $2 ORDER BY aid",
        sender,
        notice_pid,
    )
    if not moved:
        return []
    await conn.execute(
        "DELETE FROM attachment_streams WHERE origin = $1 AND pid = $2", sender, target_pid
    )
    await conn.execute(
        "UPDATE attachment_streams SET pid = $3 WHERE origin = $1 AND pid = $2",
        sender,
        notice_pid,
        target_pid,
    )
    return [r["aid"] for r in moved]
