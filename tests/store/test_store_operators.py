"""The operators store against a real (embedded) PostgreSQL, through a node of
its own (`lone`): `add` refuses an existing name, tokens expire, are replaced,
operators are disabled, enabled and removed; and the node's Authenticator
says why a token was refused."""

from __future__ import annotations

import pytest

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
