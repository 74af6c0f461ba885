"""Queries for local API operators: who they are, their token hashes, and their
lifecycle (disabled, removed, a token that expires or is replaced).

Every change sends `NOTIFY handover_operators` (delivered when the
transaction commits), so every process of the node forgets the tokens it
had cached (`node/auth.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handover.protocol.timeutil import now_ms
from handover.store.db import Connection
from handover.store.errors import Conflict


@dataclass(frozen=True, slots=True)
class TokenHolder:
    """The operator a token hash belongs to, whether or not it may be used now."""

    name: str
    role: str
    disabled: bool
    expires_at: int | None

    def refusal(self, now: int) -> str | None:
        """Why the token may not be used at `now` (`disabled`, `expired`), or None."""
        if self.disabled:
            return "disabled"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return None


async def _notify(conn: Connection) -> None:
    await conn.execute("NOTIFY handover_operators")


async def add(
    conn: Connection,
    name: str,
    role: str,
    token_hash: bytes,
    now: int,
    expires_at: int | None = None,
) -> None:
    """A new operator.

    Raises:
        Conflict: an operator of that name exists (its token is left as it is).
    """
    added = await conn.fetchval(
        "INSERT INTO operators (name, role, token_hash, created_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING name",
        name,
        role,
        token_hash,
        now,
        expires_at,
    )
    if added is None:
        raise Conflict(f"an operator named {name} exists")
    await _notify(conn)


async def lookup(conn: Connection, token_hash: bytes) -> TokenHolder | None:
    """Whoever holds this token hash, disabled or expired included."""
    row = await conn.fetchrow(
        "SELECT name, role, disabled, expires_at FROM operators WHERE token_hash = $1",
        token_hash,
    )
    if row is None:
        return None
    return TokenHolder(row["name"], row["role"], row["disabled"], row["expires_at"])


async def by_token_hash(
    conn: Connection, token_hash: bytes, now: int | None = None
) -> tuple[str, str] | None:
    """(name, role) of the operator whose token this is, if it may be used at `now`
    (default: the clock): not when the operator is disabled or the token expired."""
    holder = await lookup(conn, token_hash)
    if holder is None or holder.refusal(now_ms() if now is None else now) is not None:
        return None
    return holder.name, holder.role


async def set_disabled(conn: Connection, name: str, disabled: bool) -> bool:
    """Disable or enable an operator; False when there is no such operator."""
    found = await conn.fetchval(
        "UPDATE operators SET disabled = $2 WHERE name = $1 RETURNING name", name, disabled
    )
    if found is None:
        return False
    await _notify(conn)
    return True


async def remove(conn: Connection, name: str) -> bool:
    """Delete an operator (audit entries keep its name); False when there is none."""
    found = await conn.fetchval("DELETE FROM operators WHERE name = $1 RETURNING name", name)
    if found is None:
        return False
    await _notify(conn)
    return True


async def replace_token(
    conn: Connection, name: str, token_hash: bytes, expires_at: int | None
) -> bool:
    """Give an operator a new token (the old one no longer works) with its own
    expiry; False when there is no such operator."""
    found = await conn.fetchval(
        "UPDATE operators SET token_hash = $2, expires_at = $3 WHERE name = $1 RETURNING name",
        name,
        token_hash,
        expires_at,
    )
    if found is None:
        return False
    await _notify(conn)
    return True


async def all_operators(conn: Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT name, role, created_at, disabled, expires_at FROM operators ORDER BY name"
    )
    return [dict(r) for r in rows]
