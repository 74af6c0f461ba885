"""Web sign-in and sessions (node/sessions.py) against a real (embedded)
PostgreSQL, through a node of its own (`lone`): only a hash of a session id is
stored, failed sign-ins are limited per name and per address, a disabled
operator's session ends at once, a new password ends every session with an
audit entry, the second factor is asked for, idle sessions expire."""

from __future__ import annotations

import hashlib

import pytest

from handover.node import totp
from handover.node.runtime import Node
from handover.node.sessions import IDLE_TIMEOUT_MS, MAX_FAILURES, SignInRefused

pytestmark = pytest.mark.asyncio(loop_scope="session")
PASSWORD = "a long enough password"


async def _operator(node: Node, name: str, role: str = "caseworker") -> None:
    await node.web_sessions.add_operator(name, role, PASSWORD, by="test")


async def test_a_session_is_stored_as_a_hash_and_ends_at_sign_out(lone: Node) -> None:
    await _operator(lone, "una")
    session_id, csrf = await lone.web_sessions.sign_in("una", PASSWORD, "", "10.0.0.1")
    found = await lone.web_sessions.lookup(session_id)
    assert found is not None and found.operator.name == "una" and found.csrf_token == csrf
    async with lone.db.connection() as conn:
        rows = await conn.fetch("SELECT id_hash FROM ui_sessions WHERE operator = 'una'")
    assert [bytes(r["id_hash"]) for r in rows] == [hashlib.sha256(session_id.encode()).digest()]
    await lone.web_sessions.sign_out(session_id)
    assert await lone.web_sessions.lookup(session_id) is None


async def test_failed_sign_ins_are_limited_per_name_and_per_address(lone: Node) -> None:
    await _operator(lone, "vic")
    for i in range(MAX_FAILURES):
        with pytest.raises(SignInRefused) as refused:
            await lone.web_sessions.sign_in("vic", "wrong password", "", f"10.0.1.{i}")
        assert not refused.value.limited
    with pytest.raises(SignInRefused) as refused:  # the right password, too many failures
        await lone.web_sessions.sign_in("vic", PASSWORD, "", "10.0.1.99")
    assert refused.value.limited
    await _operator(lone, "wes")
    for _ in range(MAX_FAILURES):
        with pytest.raises(SignInRefused):
            await lone.web_sessions.sign_in("nobody", "x", "", "10.0.2.1")
    with pytest.raises(SignInRefused) as refused:  # another name from the same address
        await lone.web_sessions.sign_in("wes", PASSWORD, "", "10.0.2.1")
    assert refused.value.limited


async def test_disabling_ends_the_session_and_a_new_password_ends_all(lone: Node) -> None:
    await _operator(lone, "xan")
    first, _ = await lone.web_sessions.sign_in("xan", PASSWORD, "", "10.0.3.1")
    assert await lone.web_sessions.set_disabled("xan", True, by="admin-1")
    assert await lone.web_sessions.lookup(first) is None
    with pytest.raises(SignInRefused):
        await lone.web_sessions.sign_in("xan", PASSWORD, "", "10.0.3.1")
    assert await lone.web_sessions.set_disabled("xan", False, by="admin-1")
    second, _ = await lone.web_sessions.sign_in("xan", PASSWORD, "", "10.0.3.1")
    assert await lone.web_sessions.set_password("xan", "another long password", by="admin-1")
    assert await lone.web_sessions.lookup(second) is None
    entries = await lone.audit.entries(after=0, limit=500, case_ref=None, pid=None)
    actions = [e["entry"].get("action") for e in entries if e["entry"].get("operator") == "xan"]
    assert actions == [
        "operator_added",
        "operator_disabled",
        "operator_enabled",
        "operator_password_set",
    ]
    assert not await lone.web_sessions.set_password("nobody", "another long password")


async def test_the_second_factor_is_asked_for(lone: Node) -> None:
    await _operator(lone, "yul")
    secret = await lone.web_sessions.set_totp("yul", True)
    assert secret is not None
    with pytest.raises(SignInRefused):
        await lone.web_sessions.sign_in("yul", PASSWORD, "", "10.0.4.1")
    code = totp.code_at(secret, lone.clock() // 1000)
    session_id, _ = await lone.web_sessions.sign_in("yul", PASSWORD, code, "10.0.4.1")
    assert await lone.web_sessions.lookup(session_id) is not None


async def test_an_idle_session_expires(lone: Node) -> None:
    await _operator(lone, "zed")
    session_id, _ = await lone.web_sessions.sign_in("zed", PASSWORD, "", "10.0.5.1")
    async with lone.db.connection() as conn:
        await conn.execute(
            "UPDATE ui_sessions SET last_seen = last_seen - $1 WHERE operator = 'zed'",
            IDLE_TIMEOUT_MS + 1,
        )
    assert await lone.web_sessions.lookup(session_id) is None
