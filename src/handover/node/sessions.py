"""Web sign-in and server-side sessions for the web interface (web/ui/).

A session id is 32 random bytes shown once, in the cookie; the database keeps
only its SHA-256. Every lookup reads the operator's role and disabled flag
afresh, so disabling an operator ends their sessions at once. Failed sign-ins
are limited per operator name and per source address.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from handover.node import totp
from handover.node.auth import token_hash
from handover.protocol.canonical import b64u_encode
from handover.protocol.crypto import hash_password, random_bytes, verify_password
from handover.protocol.timeutil import Clock
from handover.store import credentials as credential_store
from handover.store import operators as operator_store
from handover.store import sessions as session_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database
from handover.workflow.access import Operator

IDLE_TIMEOUT_MS = 30 * 60 * 1000
# Failed sign-ins: at most MAX_FAILURES per operator name and per address in a window.
MAX_FAILURES = 5
FAILURE_WINDOW_S = 15 * 60.0
MAX_TRACKED = 10_000
MAX_PASSWORD = 1024


@functools.cache
def _dummy_hash() -> str:
    """Verified when the operator does not exist, so a wrong name costs as long
    as a wrong password."""
    return hash_password(b64u_encode(random_bytes(16)))


@dataclass(frozen=True)
class Session:
    operator: Operator
    csrf_token: str


class SignInRefused(Exception):
    """Sign-in failed; `limited` when it was refused for too many failures."""

    def __init__(self, limited: bool = False) -> None:
        super().__init__("sign-in refused")
        self.limited = limited


def session_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8")).digest()


class WebSessions:
    def __init__(self, db: Database, writer: AuditWriter, clock: Clock, node: str) -> None:
        self.db = db
        self.writer = writer
        self.node = node
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    # --- rate limiting -----------------------------------------------------------------

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] < now - FAILURE_WINDOW_S:
            times.popleft()
        return times

    def limited(self, name: str, address: str) -> bool:
        now = time.monotonic()
        keys = (f"op:{name}", f"ip:{address}")
        return any(len(self._recent(k, now)) >= MAX_FAILURES for k in keys)

    def _fail(self, name: str, address: str) -> None:
        if len(self._failures) > MAX_TRACKED:
            self._failures.clear()
        now = time.monotonic()
        for key in (f"op:{name}", f"ip:{address}"):
            self._recent(key, now).append(now)

    # --- sign-in -----------------------------------------------------------------------

    async def needs_code(self, name: str) -> bool:
        async with self.db.connection() as conn:
            found = await credential_store.get(conn, name)
        return found is not None and found.totp_secret is not None

    async def sign_in(self, name: str, password: str, code: str, address: str) -> tuple[str, str]:
        """A new session for an operator whose password (and code) match:
        (session id for the cookie, CSRF token).

        Raises:
            SignInRefused: anything wrong (which part is not said), or too many failures.
        """
        if self.limited(name, address):
            raise SignInRefused(limited=True)
        async with self.db.connection() as conn:
            found = await credential_store.get(conn, name[:200])
        encoded = found.password_hash if found is not None else _dummy_hash()
        ok = await asyncio.to_thread(verify_password, encoded, password[:MAX_PASSWORD])
        if found is None or found.disabled or not ok:
            ok = False
        elif found.totp_secret is not None:
            ok = totp.check(found.totp_secret, code, self.clock() // 1000)
        if not ok or found is None:
            self._fail(name, address)
            raise SignInRefused()
        session_id = b64u_encode(random_bytes(32))
        csrf = b64u_encode(random_bytes(24))
        now = self.clock()
        async with self.db.connection() as conn:
            await session_store.prune(conn, now - IDLE_TIMEOUT_MS)
            await session_store.create(conn, session_hash(session_id), found.name, csrf, now)
        return session_id, csrf

    async def lookup(self, session_id: str) -> Session | None:
        """The live session with this id (touched), or None: unknown, idle over 30
        minutes (then removed), or its operator disabled."""
        id_hash = session_hash(session_id)
        now = self.clock()
        async with self.db.connection() as conn:
            row = await session_store.get(conn, id_hash)
            if row is None:
                return None
            if row.disabled or row.last_seen < now - IDLE_TIMEOUT_MS:
                await session_store.delete(conn, id_hash)
                return None
            await session_store.touch(conn, id_hash, now)
        return Session(Operator(row.operator, row.role), row.csrf_token)

    async def sign_out(self, session_id: str) -> None:
        async with self.db.connection() as conn:
            await session_store.delete(conn, session_hash(session_id))

    async def set_password(self, name: str, password: str, *, by: str | None = None) -> bool:
        """Set an operator's password and end their sessions, with a `key` audit
        entry naming who did it; False without that operator."""
        encoded = await asyncio.to_thread(hash_password, password)
        now = self.clock()

        async def job(conn: Connection, appender: Appender) -> bool:
            done = await credential_store.set_password(conn, name, encoded, now)
            if done:
                await session_store.end_for(conn, name)
                appender.append(
                    "key", action="operator_password_set", operator=name, by=by, org=self.node
                )
            return done

        return bool(await self.writer.run(job))

    async def set_totp(self, name: str, on: bool) -> bytes | None:
        """Turn the second factor on (returns the new secret) or off (None); the
        operator must have a password. Raises KeyError without one."""
        secret = random_bytes(totp.SECRET_BYTES) if on else None
        now = self.clock()

        async def job(conn: Connection, appender: Appender) -> bool:
            done = await credential_store.set_totp(conn, name, secret, now)
            if done:
                action = "operator_totp_on" if on else "operator_totp_off"
                appender.append("key", action=action, operator=name, org=self.node)
            return done

        if not await self.writer.run(job):
            raise KeyError(name)
        return secret

    async def end_sessions(self, name: str) -> int:
        async with self.db.connection() as conn:
            return await session_store.end_for(conn, name)

    # --- operators, for administrators (the same audit entries as the CLI's) -------------

    async def operators(self) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            rows = await operator_store.all_operators(conn)
            with_password = await credential_store.names_with_password(conn)
        for row in rows:
            row["password"] = row["name"] in with_password
        return rows

    async def add_operator(self, name: str, role: str, password: str, *, by: str) -> str:
        """A new operator with a web password; returns its bearer token (shown once).

        Raises:
            Conflict: the name is taken.
        """
        token = "hov_" + b64u_encode(random_bytes(32))
        encoded = await asyncio.to_thread(hash_password, password)
        now = self.clock()

        async def job(conn: Connection, appender: Appender) -> None:
            await operator_store.add(conn, name, role, token_hash(token), now)
            await credential_store.set_password(conn, name, encoded, now)
            appender.append(
                "key", action="operator_added", operator=name, role=role, by=by, org=self.node
            )

        await self.writer.run(job)
        return token

    async def set_disabled(self, name: str, disabled: bool, *, by: str) -> bool:
        """Disable (ending every session at once) or enable an operator."""

        async def job(conn: Connection, appender: Appender) -> bool:
            done = await operator_store.set_disabled(conn, name, disabled)
            if done:
                if disabled:
                    await session_store.end_for(conn, name)
                action = "operator_disabled" if disabled else "operator_enabled"
                appender.append("key", action=action, operator=name, by=by, org=self.node)
            return done

        return bool(await self.writer.run(job))

    async def set_role(self, name: str, role: str, *, by: str) -> bool:
        async def job(conn: Connection, appender: Appender) -> bool:
            done = await credential_store.set_role(conn, name, role)
            if done:
                appender.append(
                    "key", action="operator_role_set", operator=name, role=role, by=by,
                    org=self.node,
                )  # fmt: skip
            return done

        return bool(await self.writer.run(job))
