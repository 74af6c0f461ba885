"""Queries for local API operators."""

from __future__ import annotations

from typing import Any

from handover.store.db import Connection


async def add(conn: Connection, name: str, role: str, token_hash: bytes, now: int) -> None:
    await conn.execute(
        "INSERT INTO operators (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (name) DO UPDATE SET role = excluded.role,"
        " token_hash = excluded.token_hash, disabled = false",
        name,
        role,
        token_hash,
        now,
    )


async def by_token_hash(conn: Connection, token_hash: bytes) -> tuple[str, str] | None:
    row = await conn.fetchrow(
        "SELECT name, role FROM operators WHERE token_hash = $1 AND NOT disabled", token_hash
    )
    return None if row is None else (row["name"], row["role"])


async def all_operators(conn: Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT name, role, created_at, disabled FROM operators ORDER BY name")
    return [dict(r) for r in rows]
