"""The embedded PostgreSQL's server settings: faster where it costs no durability."""

from __future__ import annotations

import asyncio

import pytest

from handover.node.runtime import Node

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_new_wal_segments_are_not_zero_filled_and_commits_stay_durable(lone: Node) -> None:
    assert lone.db.embedded is not None
    async with lone.db.connection() as conn:
        written = await conn.fetchval(
            "SELECT setting FROM pg_file_settings WHERE name = 'wal_init_zero' AND error IS NULL"
        )
        assert written == "off"
        # The reload reaches each server process between its queries.
        for _ in range(100):
            if await conn.fetchval("SELECT current_setting('wal_init_zero')") == "off":
                break
            await asyncio.sleep(0.05)
        assert await conn.fetchval("SELECT current_setting('wal_init_zero')") == "off"
        assert await conn.fetchval("SELECT current_setting('fsync')") == "on"
        assert await conn.fetchval("SELECT current_setting('synchronous_commit')") == "on"
        assert await conn.fetchval("SELECT current_setting('full_page_writes')") == "on"
