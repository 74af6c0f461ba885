"""Queries for pinned peers, their keysets and their checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

from handover.store.db import Connection, to_row, to_rows


@dataclass(frozen=True, slots=True)
class PeerRow:
    """A pinned peer and the last keyset accepted from it (wire)."""

    node: str
    url: str
    fingerprint: str
    kind: str | None
    serial: int | None
    keyset: bytes | None
    keyset_exp: int | None
    fetched_at: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class PeerCheckpoint:
    """A signed checkpoint fetched from a peer: its log had `head` after entry `seq`."""

    seq: int
    head: bytes
    wire: bytes


async def all_peers(conn: Connection) -> list[PeerRow]:
    return to_rows(PeerRow, await conn.fetch("SELECT * FROM peers ORDER BY node"))


async def get(conn: Connection, node: str) -> PeerRow | None:
    r = await conn.fetchrow("SELECT * FROM peers WHERE node = $1", node)
    return None if r is None else to_row(PeerRow, r)


async def upsert_pin(
    conn: Connection, node: str, url: str, fingerprint: str, kind: str | None, now: int
) -> None:
    await conn.execute(
        "INSERT INTO peers (node, url, fingerprint, kind, added_at) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (node) DO UPDATE SET url = excluded.url,"
        " fingerprint = excluded.fingerprint, kind = coalesce(excluded.kind, peers.kind)",
        node,
        url,
        fingerprint,
        kind,
        now,
    )


async def store_keyset(
    conn: Connection, node: str, serial: int, wire: bytes, exp: int, now: int
) -> None:
    """Record a newly accepted keyset as the last accepted one, and in the history."""
    await conn.execute(
        "UPDATE peers SET serial = $2, keyset = $3, keyset_exp = $4, fetched_at = $5,"
        " last_error = NULL WHERE node = $1",
        node,
        serial,
        wire,
        exp,
        now,
    )
    await conn.execute(
        "INSERT INTO peer_keysets (node, serial, wire, accepted_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (node, serial) DO NOTHING",
        node,
        serial,
        wire,
        now,
    )


async def note_fetch_error(conn: Connection, node: str, error: str, now: int) -> None:
    await conn.execute(
        "UPDATE peers SET last_error = $2, fetched_at = $3 WHERE node = $1", node, error, now
    )


async def store_checkpoint(
    conn: Connection,
    node: str,
    seq: int,
    head: bytes,
    iat: int,
    wire: bytes,
    serial: int,
    now: int,
) -> None:
    await conn.execute(
        "INSERT INTO peer_checkpoints (node, seq, head, iat, wire, keyset_serial, fetched_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        node,
        seq,
        head,
        iat,
        wire,
        serial,
        now,
    )


async def checkpoints(conn: Connection, node: str) -> list[PeerCheckpoint]:
    """Every checkpoint held from `node`, by seq."""
    rows = await conn.fetch(
        "SELECT seq, head, wire FROM peer_checkpoints WHERE node = $1 ORDER BY seq", node
    )
    return to_rows(PeerCheckpoint, rows)


async def notify_pins(conn: Connection) -> None:
    """Tell every process of this node that the pinned peers changed."""
    await conn.execute("NOTIFY handover_peers")


async def notify_keys(conn: Connection) -> None:
    """Tell every process of this node to reload its key files (after a rotation)."""
    await conn.execute("NOTIFY handover_keys")


@dataclass(frozen=True, slots=True)
class PeerContact:
    """When this node last reached a peer, and the last failure (plain words)."""

    node: str
    last_success_at: int | None
    last_failure: str | None
    last_failure_at: int | None


async def note_success(conn: Connection, node: str, now: int) -> None:
    """The peer was reached (a verified receipt, an accepted keyset)."""
    await conn.execute(
        "UPDATE peers SET last_success_at = greatest(last_success_at, $2) WHERE node = $1",
        node,
        now,
    )


async def note_failure(conn: Connection, node: str, failure: str, now: int) -> None:
    """The peer could not be reached, or answered outside the protocol."""
    await conn.execute(
        "UPDATE peers SET last_failure = $2, last_failure_at = $3 WHERE node = $1",
        node,
        failure[:300],
        now,
    )


async def contacts(conn: Connection) -> list[PeerContact]:
    rows = await conn.fetch(
        "SELECT node, last_success_at, last_failure, last_failure_at FROM peers ORDER BY node"
    )
    return to_rows(PeerContact, rows)
