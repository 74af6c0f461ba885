"""The byte budget admits work up to its limit and makes the rest wait."""

from __future__ import annotations

import asyncio

from handover.node.budget import ByteBudget


async def _scenario() -> list[str]:
    budget = ByteBudget(100)
    events: list[str] = []
    release_a = asyncio.Event()

    async def work(name: str, size: int, until: asyncio.Event | None = None) -> None:
        async with budget.take(size):
            events.append(f"{name} in ({budget.in_use})")
            if until is not None:
                await until.wait()
        events.append(f"{name} out")

    a = asyncio.create_task(work("a", 70, release_a))
    await asyncio.sleep(0)
    b = asyncio.create_task(work("b", 50))  # 70 + 50 > 100: waits for a
    c = asyncio.create_task(work("c", 500))  # larger than the budget: waits for all of it
    await asyncio.sleep(0.01)
    assert events == ["a in (70)"]
    release_a.set()
    await asyncio.gather(a, b, c)
    assert budget.in_use == 0
    return events


def test_budget_orders_work_by_size() -> None:
    events = asyncio.run(_scenario())
    assert events[:2] == ["a in (70)", "a out"]
    assert "b in (50)" in events and "c in (100)" in events
    # b and c never held the budget at the same time.
    b_in, b_out = events.index("b in (50)"), events.index("b out")
    c_in = events.index("c in (100)")
    assert not b_in < c_in < b_out
