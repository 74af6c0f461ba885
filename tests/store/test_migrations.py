"""Migrations against a real (embedded) PostgreSQL: a number missing below the
highest applied one is still applied (branches merge with their own numbers)."""

from __future__ import annotations

import pytest

from handover.node.runtime import Node
from handover.store.db import migrate, migrations

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_missing_migration_below_the_highest_applied_one_is_applied(lone: Node) -> None:
    every = migrations()
    versions = [v for v, _, _ in every]
    assert versions == sorted(set(versions)), "two migration files share a number"
    gap = next(v for v, name, _ in every if name.endswith("_events.sql"))
    async with lone.db.connection() as conn, conn.transaction():
        # A schema of its own, dropped at the end: the node's tables are untouched.
        await conn.execute("CREATE SCHEMA migration_probe")
        await conn.execute("SET LOCAL search_path TO migration_probe")
        first = await migrate(conn, [m for m in every if m[0] != gap])
        assert first == versions[-1]
        assert await conn.fetchval("SELECT to_regclass('migration_probe.events')") is None
        assert await migrate(conn) == versions[-1]
        assert await conn.fetchval("SELECT to_regclass('migration_probe.events')") is not None
        applied = [r["version"] for r in await conn.fetch("SELECT version FROM schema_version")]
        assert sorted(applied) == versions
        await conn.execute("SET LOCAL search_path TO public")
        await conn.execute("DROP SCHEMA migration_probe CASCADE")
