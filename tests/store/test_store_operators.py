"""The operators store against a real (embedded) PostgreSQL, through a node of
its own (`lone`): `add` refuses an existing name, tokens expire, are replaced,
operators are disabled, enabled and removed; and the node's Authenticator
says why a token was refused."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from handover.node.auth import Refusal, token_hash
from handover.node.runtime import Node
from handover.store import operators as operator_store
from handover.store.errors import Conflict
from handover.workflow.access import Operator

pytestmark = pytest.mark.asyncio(loop_scope="session")
NOW = 1_800_000_000_000


async def test_add_refuses_an_existing_name(lone: Node) -> None:
    async with lone.db.connection() as conn:
        await operator_store.add(conn, "ivy", "caseworker", token_hash("t-ivy"), NOW)
        with pytest.raises(Conflict, match="an operator named ivy exists"):
            await operator_store.add(conn, "ivy", "admin", token_hash("t-ivy-2"), NOW)
        assert await operator_store.by_token_hash(conn, token_hash("t-ivy"), NOW) == (
            "ivy",
            "caseworker",
        )
        assert await operator_store.by_token_hash(conn, token_hash("t-ivy-2"), NOW) is None


async def test_an_expired_token_is_refused(lone: Node) -> None:
    async with lone.db.connection() as conn:
        await operator_store.add(
            conn, "jo", "auditor", token_hash("t-jo"), NOW, expires_at=NOW + 1000
        )
        assert await operator_store.by_token_hash(conn, token_hash("t-jo"), NOW + 999)
        assert await operator_store.by_token_hash(conn, token_hash("t-jo"), NOW + 1000) is None
        holder = await operator_store.lookup(conn, token_hash("t-jo"))
        assert holder is not None and holder.refusal(NOW + 1000) == "expired"
        # A new token with no expiry; the old one ends.
        assert await operator_store.replace_token(conn, "jo", token_hash("t-jo-2"), None)
        assert await operator_store.lookup(conn, token_hash("t-jo")) is None
        assert await operator_store.by_token_hash(conn, token_hash("t-jo-2"), NOW + 10**12)
        assert not await operator_store.replace_token(conn, "nobody", token_hash("x"), None)


async def test_disable_enable_remove(lone: Node) -> None:
    async with lone.db.connection() as conn:
        await operator_store.add(conn, "kim", "caseworker", token_hash("t-kim"), NOW)
        assert await operator_store.set_disabled(conn, "kim", True)
        assert await operator_store.by_token_hash(conn, token_hash("t-kim"), NOW) is None
        assert await operator_store.set_disabled(conn, "kim", False)
        assert await operator_store.by_token_hash(conn, token_hash("t-kim"), NOW)
        assert not await operator_store.set_disabled(conn, "nobody", True)
        assert await operator_store.remove(conn, "kim")
        assert not await operator_store.remove(conn, "kim")
        assert await operator_store.lookup(conn, token_hash("t-kim")) is None
        names = [row["name"] for row in await operator_store.all_operators(conn)]
        assert "kim" not in names


async def test_the_authenticator_says_why_and_forgets_on_change(lone: Node) -> None:
    async with lone.db.connection() as conn:
        await operator_store.add(conn, "lee", "caseworker", token_hash("t-lee"), NOW)
    assert await lone.check_token("t-lee") == Operator("lee", "caseworker")
    assert await lone.check_token("t-nobody") == Refusal("unknown")
    async with lone.db.connection() as conn:
        await operator_store.set_disabled(conn, "lee", True)
    lone.auth.forget()  # what NOTIFY handover_operators does in a started node
    assert await lone.check_token("t-lee") == Refusal("disabled", "lee")
    assert await lone.authenticate("t-lee") is None


async def test_refusals_are_all_counted_but_their_log_is_bounded(lone: Node) -> None:
    def counted() -> float:
        value = lone.metrics.registry.get_sample_value(
            "handover_access_refused_total", {"code": "unauthorized", "reason": "unknown"}
        )
        return value or 0.0

    before = counted()
    with structlog.testing.capture_logs() as logs:
        for _ in range(100):
            lone.note_refused_access("unauthorized", "unknown", "/api/v1/inbox")
        lone.note_refused_access("forbidden", "role", "/api/v1/audit", "ivy")
    assert counted() == before + 100
    refused = [e for e in logs if e["event"] == "access_refused"]
    unknown = [e for e in refused if e["reason"] == "unknown"]
    assert 20 <= len(unknown) <= 22  # a burst of 20, then about one a second
    assert unknown[0]["route"] == "/api/v1/inbox" and unknown[0]["operator"] is None
    # Another reason has its own allowance.
    assert refused[-1] | {"log_level": None} == {
        "event": "access_refused",
        "error": "forbidden",
        "reason": "role",
        "route": "/api/v1/audit",
        "operator": "ivy",
        "log_level": None,
    }


async def test_a_cached_token_is_not_kept_past_its_expiry(lone: Node) -> None:
    at = lone.clock()
    async with lone.db.connection() as conn:
        await operator_store.add(
            conn, "mo", "caseworker", token_hash("t-mo"), at, expires_at=at + 1500
        )
    assert await lone.check_token("t-mo") == Operator("mo", "caseworker")  # cached now
    await asyncio.sleep(1.7)
    assert await lone.check_token("t-mo") == Refusal("expired", "mo")
