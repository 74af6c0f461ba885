"""Partner profiles: our own (signed with the root key) and our peers' (verified
with their pinned roots), with a `key` audit entry when a peer's profile changes."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import structlog

from handover.node.directory import Directory
from handover.node.errors import TransportError
from handover.node.transport import Transport
from handover.protocol.profile import InvalidProfile, Profile, build_profile, verify_profile
from handover.protocol.timeutil import Clock
from handover.store import profiles as profile_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database

log = structlog.get_logger(__name__)
REFRESH_MS = 60 * 60 * 1000  # the serving node re-reads each peer's profile hourly
FETCH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PeerProfile:
    """A peer's profile as we hold it, and whether the last fetch changed it."""

    node: str
    profile: Profile | None
    changed_at: int | None
    last_error: str | None
    changed: bool = False
    previous_serial: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": None if self.profile is None else self.profile.to_json(),
            "profile_changed_at": self.changed_at,
            "profile_previous_serial": self.previous_serial,
            "profile_error": self.last_error,
        }

    def changed_since(self, since: int) -> bool:
        """Did a profile held before change at or after `since`?"""
        return (
            self.previous_serial is not None
            and self.changed_at is not None
            and self.changed_at >= since
        )


class Profiles:
    def __init__(
        self,
        *,
        node: str,
        kind: str,
        db: Database,
        writer: AuditWriter,
        directory: Directory,
        transport: Transport,
        clock: Clock,
    ) -> None:
        self.node = node
        self.kind = kind
        self.db = db
        self.writer = writer
        self.directory = directory
        self.transport = transport
        self.clock = clock
        self._fetched: dict[str, int] = {}

    async def own_wire(self) -> bytes | None:
        async with self.db.connection() as conn:
            own = await profile_store.own(conn)
        return None if own is None else own[1]

    async def set_own(self, fields: dict[str, str]) -> Profile:
        """Sign and store a new own profile (next serial) from `fields` over the
        current profile's; the agency kind is the node's.

        Raises:
            InvalidProfile: a field missing, too long or unknown.
        """
        now = self.clock()
        keys = self.directory.keys

        async def job(conn: Connection, appender: Appender) -> Profile:
            serial = await profile_store.next_serial(conn)
            current = await profile_store.own(conn)
            held: dict[str, str] = {}
            if current is not None:  # fields not given stay as they are
                with contextlib.suppress(InvalidProfile):  # signed by a former root
                    before = verify_profile(
                        current[1], node=self.node, fingerprint=keys.fingerprint
                    )
                    held = dict(before.fields)
            wire = build_profile(
                node=self.node,
                serial=serial,
                iat=now,
                root=keys.root,
                fields={**held, **fields, "kind": self.kind},
            )
            await profile_store.set_own(conn, serial, wire, now)
            appender.append("key", action="profile_set", serial=serial, org=self.node)
            return verify_profile(wire, node=self.node, fingerprint=keys.fingerprint)

        result: Profile = await self.writer.run(job)
        return result

    async def record(self, node: str, wire: bytes, fingerprint: str) -> PeerProfile:
        """Verify a peer's profile with its root fingerprint and keep it; a change
        of a profile we held is audited (`peer_profile_changed`).

        Raises:
            InvalidProfile: it does not verify.
        """
        profile = verify_profile(wire, node=node, fingerprint=fingerprint)
        now = self.clock()

        async def job(conn: Connection, appender: Appender) -> PeerProfile:
            old = await profile_store.peer(conn, node)
            if old is not None and old.serial > profile.serial:
                raise InvalidProfile(
                    f"profile rollback: serial {profile.serial} is below the held {old.serial}"
                )
            changed = old is not None and old.wire != wire
            await profile_store.store_peer(conn, node, profile.serial, wire, now, changed)
            if changed and old is not None:
                before = verify_profile(old.wire, node=node, fingerprint=fingerprint)
                appender.append(
                    "key",
                    action="peer_profile_changed",
                    counterpart=node,
                    old_serial=old.serial,
                    new_serial=profile.serial,
                    fields=sorted(k for k, v in profile.fields.items() if before.fields[k] != v),
                    org=self.node,
                )
            elif old is None:
                appender.append(
                    "key",
                    action="peer_profile_recorded",
                    counterpart=node,
                    serial=profile.serial,
                    org=self.node,
                )
            return PeerProfile(
                node,
                profile,
                now if changed or old is None else old.changed_at,
                None,
                changed,
                old.serial if changed and old else (old.previous_serial if old else None),
            )

        result: PeerProfile = await self.writer.run(job)
        if result.changed:
            log.warning("peer_profile_changed", peer=node, serial=profile.serial)
        return result

    async def refresh(self, node: str) -> PeerProfile:
        """Fetch a pinned peer's profile from its pinned URL and record it; a
        failure is noted and the held profile kept."""
        peer = self.directory.peers.get(node)
        if peer is None:
            return PeerProfile(node, None, None, "not pinned")
        self._fetched[node] = self.clock()
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                wire = await self.transport.fetch_profile(peer.url)
            return await self.record(node, wire, peer.fingerprint)
        except TimeoutError:
            return await self._failed(node, f"no profile from {peer.url} in {FETCH_TIMEOUT_S} s")
        except (TransportError, InvalidProfile) as exc:
            return await self._failed(node, str(exc))

    async def refresh_due(self) -> list[PeerProfile]:
        """Refresh every pinned peer's profile not read within the hour; the changed ones."""
        now = self.clock()
        due = [n for n in self.directory.peers if now - self._fetched.get(n, 0) >= REFRESH_MS]
        seen = await asyncio.gather(*(self.refresh(n) for n in due))
        return [p for p in seen if p.changed]

    async def _failed(self, node: str, error: str) -> PeerProfile:
        error = error[:500]
        log.warning("peer_profile_refresh_failed", peer=node, error=error)
        async with self.db.connection() as conn:
            await profile_store.note_error(conn, node, error, self.clock())
        held = await self.held(node)
        return PeerProfile(
            node, held.profile, held.changed_at, error, previous_serial=held.previous_serial
        )

    async def held(self, node: str) -> PeerProfile:
        peer = self.directory.peers.get(node)
        async with self.db.connection() as conn:
            row = await profile_store.peer(conn, node)
        if row is None or peer is None:
            return PeerProfile(node, None, None, None if row is None else row.last_error)
        try:
            profile = verify_profile(row.wire, node=node, fingerprint=peer.fingerprint)
        except InvalidProfile as exc:  # pinned again under another root since
            return PeerProfile(node, None, row.changed_at, str(exc))
        return PeerProfile(
            node, profile, row.changed_at, row.last_error, previous_serial=row.previous_serial
        )
