"""Deferred writes of a group commit, against a real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from handover.node.runtime import Node
from handover.store.db import Deferred

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_notifies_go_once_each_after_the_rows_and_a_reset_forgets_them(lone: Node) -> None:
    heard: list[str] = []

    def hear(_conn: object, _pid: int, channel: str, _payload: object) -> None:
        heard.append(channel)

    async with lone.db.pool.acquire() as listener:
        for channel in ("probe_a", "probe_b"):
            await listener.add_listener(channel, hear)
        try:
            deferred = Deferred()
            deferred.once("NOTIFY probe_a")
            mark = deferred.mark()
            deferred.once("NOTIFY probe_b")
            deferred.once("NOTIFY probe_a")
            assert len(deferred) == 2
            deferred.reset(mark)  # the job that added probe_b failed
            assert len(deferred) == 1
            deferred.once("NOTIFY probe_a")
            deferred.add("SELECT $1::int", 1)
            async with lone.db.transaction() as conn:
                await deferred.flush(conn)
                assert len(deferred) == 0
            for _ in range(100):
                if heard:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)
            assert heard == ["probe_a"]
        finally:
            for channel in ("probe_a", "probe_b"):
                await listener.remove_listener(channel, hear)
