"""The node's own signed profile and its peers' verified profiles (migration 012)."""

from __future__ import annotations

from dataclasses import dataclass

from handover.store.db import Connection, to_row, to_rows


@dataclass(frozen=True, slots=True)
class PeerProfileRow:
    node: str
    serial: int
    wire: bytes
    fetched_at: int
    changed_at: int
    previous_serial: int | None
    last_error: str | None


async def own(conn: Connection) -> tuple[int, bytes] | None:
    """The newest own profile: (serial, wire)."""
    r = await conn.fetchrow("SELECT serial, wire FROM own_profiles ORDER BY serial DESC LIMIT 1")
    return None if r is None else (int(r["serial"]), bytes(r["wire"]))


async def next_serial(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(serial), 0) + 1 FROM own_profiles"))


async def set_own(conn: Connection, serial: int, wire: bytes, now: int) -> None:
    await conn.execute(
        "INSERT INTO own_profiles (serial, wire, set_at) VALUES ($1, $2, $3)", serial, wire, now
    )


async def peer(conn: Connection, node: str) -> PeerProfileRow | None:
    r = await conn.fetchrow("SELECT * FROM peer_profiles WHERE node = $1", node)
    return None if r is None else to_row(PeerProfileRow, r)


async def peers(conn: Connection) -> list[PeerProfileRow]:
    return to_rows(PeerProfileRow, await conn.fetch("SELECT * FROM peer_profiles ORDER BY node"))


async def store_peer(
    conn: Connection, node: str, serial: int, wire: bytes, now: int, changed: bool
) -> None:
    await conn.execute(
        "INSERT INTO peer_profiles (node, serial, wire, fetched_at, changed_at)"
        " VALUES ($1, $2, $3, $4, $4) ON CONFLICT (node) DO UPDATE SET"
        " serial = excluded.serial, wire = excluded.wire, fetched_at = excluded.fetched_at,"
        " last_error = NULL, changed_at = CASE WHEN $5 THEN excluded.changed_at"
        " ELSE peer_profiles.changed_at END, previous_serial = CASE WHEN $5"
        " THEN peer_profiles.serial ELSE peer_profiles.previous_serial END",
        node,
        serial,
        wire,
        now,
        changed,
    )


async def note_error(conn: Connection, node: str, error: str, now: int) -> None:
    await conn.execute(
        "UPDATE peer_profiles SET last_error = $2, fetched_at = $3 WHERE node = $1",
        node,
        error,
        now,
    )
