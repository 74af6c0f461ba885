"""Server-side web sessions (migration 008): only a hash of the session id is kept."""

from __future__ import annotations

from dataclasses import dataclass

from handover.store.db import Connection


@dataclass(frozen=True, slots=True)
class SessionRow:
    operator: str
    role: str
    disabled: bool
    csrf_token: str
    last_seen: int


async def create(conn: Connection, id_hash: bytes, operator: str, csrf: str, now: int) -> None:
    await conn.execute(
        "INSERT INTO ui_sessions (id_hash, operator, csrf_token, created_at, last_seen)"
        " VALUES ($1, $2, $3, $4, $4)",
        id_hash,
        operator,
        csrf,
        now,
    )


async def get(conn: Connection, id_hash: bytes) -> SessionRow | None:
    """The session with its operator's current role and disabled flag."""
    row = await conn.fetchrow(
        "SELECT s.operator, o.role, o.disabled, s.csrf_token, s.last_seen"
        " FROM ui_sessions s JOIN operators o ON o.name = s.operator WHERE s.id_hash = $1",
        id_hash,
    )
    if row is None:
        return None
    return SessionRow(
        row["operator"], row["role"], row["disabled"], row["csrf_token"], row["last_seen"]
    )


async def touch(conn: Connection, id_hash: bytes, now: int) -> None:
    await conn.execute("UPDATE ui_sessions SET last_seen = $2 WHERE id_hash = $1", id_hash, now)


async def delete(conn: Connection, id_hash: bytes) -> None:
    await conn.execute("DELETE FROM ui_sessions WHERE id_hash = $1", id_hash)


async def end_for(conn: Connection, operator: str) -> int:
    """End every session of an operator (disabled, password reset); how many ended."""
    status: str = await conn.execute("DELETE FROM ui_sessions WHERE operator = $1", operator)
    return int(status.split()[-1])


async def prune(conn: Connection, idle_before: int) -> int:
    status: str = await conn.execute("DELETE FROM ui_sessions WHERE last_seen < $1", idle_before)
    return int(status.split()[-1])
