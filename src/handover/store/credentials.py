"""Operators' web sign-in credentials: an Argon2id password hash and an
optional TOTP secret (migration 008)."""

from __future__ import annotations

from dataclasses import dataclass

from handover.store.db import Connection


@dataclass(frozen=True, slots=True)
class Credential:
    name: str
    role: str
    disabled: bool
    password_hash: str
    totp_secret: bytes | None


async def set_password(conn: Connection, name: str, password_hash: str, now: int) -> bool:
    """Set (or replace) an operator's password hash; False when there is no such operator."""
    status: str = await conn.execute(
        "INSERT INTO operator_credentials (name, password_hash, updated_at)"
        " SELECT name, $2, $3 FROM operators WHERE name = $1"
        " ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash,"
        " updated_at = excluded.updated_at",
        name,
        password_hash,
        now,
    )
    return status.endswith(" 1")


async def set_totp(conn: Connection, name: str, secret: bytes | None, now: int) -> bool:
    """Turn the second factor on (a secret) or off (None); False without a password."""
    status: str = await conn.execute(
        "UPDATE operator_credentials SET totp_secret = $2, updated_at = $3 WHERE name = $1",
        name,
        secret,
        now,
    )
    return status.endswith(" 1")


async def get(conn: Connection, name: str) -> Credential | None:
    row = await conn.fetchrow(
        "SELECT o.name, o.role, o.disabled, c.password_hash, c.totp_secret"
        " FROM operators o JOIN operator_credentials c ON c.name = o.name WHERE o.name = $1",
        name,
    )
    if row is None:
        return None
    return Credential(
        row["name"], row["role"], row["disabled"], row["password_hash"], row["totp_secret"]
    )


async def names_with_password(conn: Connection) -> set[str]:
    rows = await conn.fetch("SELECT name FROM operator_credentials")
    return {r["name"] for r in rows}


async def set_role(conn: Connection, name: str, role: str) -> bool:
    """Change an operator's role (token caches are told); False when there is none."""
    found = await conn.fetchval(
        "UPDATE operators SET role = $2 WHERE name = $1 RETURNING name", name, role
    )
    if found is None:
        return False
    await conn.execute("NOTIFY handover_operators")
    return True
