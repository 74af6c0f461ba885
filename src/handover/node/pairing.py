"""Pairing with a short code (docs/protocol.md section 9): both roles.

The inviting node (`handover peers invite`) holds invitations and answers the
three pairing messages on its federation listener; the accepting node
(`handover peers accept`) sends them. Nothing is pinned before both sides
have proved the SPAKE2 key; every step is audited (`key` entries, identifiers
only, never the code).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import structlog

from handover.node.directory import Directory
from handover.node.errors import PairingRefused, TransportError
from handover.node.profiles import Profiles
from handover.node.transport import Transport
from handover.protocol import crypto
from handover.protocol import pairing as proto
from handover.protocol.errors import ConfigError, InvalidKeyset
from handover.protocol.pairing import Offer, PairingError, SessionKeys, Spake
from handover.protocol.profile import InvalidProfile, verify_profile
from handover.protocol.timeutil import MINUTE_MS, Clock
from handover.store import pairing as invitation_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection
from handover.workflow.errors import ErrorCode, RequestRefused

log = structlog.get_logger(__name__)
INVITATION_MS = 60 * MINUTE_MS  # an invitation is valid for one hour
MAX_ATTEMPTS = 3
SESSION_MS = 5 * MINUTE_MS  # a started session must be confirmed within this
ENDED = "the invitation has ended or does not exist: ask the partner for a new code"


@dataclass(frozen=True)
class Identity:
    """What this node offers about itself."""

    node: str
    kind: str
    url: str


class Pairing:
    def __init__(
        self,
        *,
        identity: Identity,
        writer: AuditWriter,
        directory: Directory,
        profiles: Profiles,
        transport: Transport,
        storage_key: bytes,
        clock: Clock,
    ) -> None:
        self.me = identity
        self.writer = writer
        self.directory = directory
        self.profiles = profiles
        self.transport = transport
        self._key = storage_key
        self.clock = clock

    async def _offer(self) -> bytes:
        return proto.make_offer(
            node=self.me.node,
            kind=self.me.kind,
            url=self.me.url,
            root=self.directory.keys.root.public_key,
            profile=await self.profiles.own_wire(),
        )

    # --- inviting side ---------------------------------------------------------------

    async def invite(self, kind: str) -> dict[str, Any]:
        """A new invitation for a partner of `kind`: its code, shown once."""
        now = self.clock()
        expires = now + INVITATION_MS

        async def job(conn: Connection, appender: Appender) -> str:
            await invitation_store.expire(conn, now)
            taken = await invitation_store.open_numbers(conn)
            free = [n for n in range(1, proto.MAX_INVITATION + 1) if n not in taken]
            if not free:
                raise ConfigError("999 invitations are open: wait for some to end")
            number = secrets.choice(free[:99] if len(free) >= 99 else free)
            code = proto.new_code(number)
            sealed = crypto.seal_at_rest(self._key, code.encode("utf-8"))
            await invitation_store.create(conn, number, sealed, kind, now, expires)
            appender.append(
                "key",
                action="pairing_invited",
                invitation=number,
                kind=kind,
                expires_at=expires,
                org=self.me.node,
            )
            return code

        code: str = await self.writer.run(job)
        return {"code": code, "kind": kind, "expires_at": expires, "url": self.me.url}

    async def answer(self, raw: bytes) -> bytes:
        """Answer one pairing message.

        Raises:
            RequestRefused: `bad_request`, `invitation_ended` or `pairing_failed`.
        """
        try:
            step = proto.peek_step(raw)
            if step == "start":
                msg = proto.parse_message(raw, "start", {"invitation": None, "spake": 33})
                return await self._start(msg["invitation"], msg["spake"])
            if step == "confirm":
                msg = proto.parse_message(
                    raw, "confirm", {"invitation": None, "confirm": 32, "offer": None, "mac": 32}
                )
                return await self._confirm(msg)
            msg = proto.parse_message(raw, "finish", {"invitation": None, "mac": 32})
            return await self._finish(msg["invitation"], msg["mac"])
        except PairingError as exc:
            raise RequestRefused(ErrorCode.BAD_REQUEST, str(exc)) from exc

    async def _start(self, number: int, msg_accepter: bytes) -> bytes:
        now = self.clock()
        async with self.directory.db.connection() as conn:
            seen = await invitation_store.get(conn, number)
        if seen is None or seen.status != "open":
            raise RequestRefused(ErrorCode.INVITATION_ENDED, ENDED)
        # SPAKE2 (pure Python, ~20 ms) runs before the audit writer's transaction.
        code = crypto.open_at_rest(self._key, seen.code_sealed).decode("utf-8")
        spake = Spake("inviter", code)
        try:
            key = spake.finish(msg_accepter)
        except PairingError:
            key = crypto.random_bytes(32)  # fails at confirm, as a wrong code does
        sealed = crypto.seal_at_rest(self._key, key)

        async def job(conn: Connection, appender: Appender) -> bool:
            await invitation_store.expire(conn, now)
            inv = await invitation_store.get(conn, number, lock=True)
            if inv is None or inv.status != "open" or inv.code_sealed != seen.code_sealed:
                return False
            if inv.attempts >= MAX_ATTEMPTS:  # three started, none finished: no fourth
                await self._fail(conn, appender, inv, "attempts")
                return False
            attempt = await invitation_store.start_session(
                conn, number, spake.message, msg_accepter, sealed, now
            )
            appender.append(
                "key", action="pairing_started", invitation=number, attempt=attempt,
                org=self.me.node,
            )  # fmt: skip
            return True

        if not await self.writer.run(job):
            raise RequestRefused(ErrorCode.INVITATION_ENDED, ENDED)
        return proto.message("start", spake=spake.message)

    async def _session(
        self, conn: Connection, number: int, now: int
    ) -> tuple[invitation_store.Invitation, SessionKeys] | None:
        await invitation_store.expire(conn, now)
        inv = await invitation_store.get(conn, number, lock=True)
        if (
            inv is None
            or inv.status != "open"
            or inv.key_sealed is None
            or inv.msg_inviter is None
            or inv.msg_accepter is None
            or inv.session_at is None
            or now - inv.session_at > SESSION_MS
        ):
            return None
        key = crypto.open_at_rest(self._key, inv.key_sealed)
        return inv, proto.derive(key, number, inv.msg_inviter, inv.msg_accepter)

    async def _fail(
        self, conn: Connection, appender: Appender, inv: invitation_store.Invitation, why: str
    ) -> None:
        """A failed attempt: the session dropped, the invitation ended at the third."""
        ended = inv.attempts >= MAX_ATTEMPTS
        if ended:
            await invitation_store.end(conn, inv.invitation, "ended", self.clock(), None)
        else:
            await invitation_store.drop_session(conn, inv.invitation)
        appender.append(
            "key", action="pairing_failed", invitation=inv.invitation, attempt=inv.attempts,
            problem=why, ended=ended, org=self.me.node,
        )  # fmt: skip

    async def _confirm(self, msg: dict[str, Any]) -> bytes:
        number: int = msg["invitation"]
        now = self.clock()
        own_offer = await self._offer()

        async def job(conn: Connection, appender: Appender) -> tuple[str, bytes]:
            session = await self._session(conn, number, now)
            if session is None:
                return "ended", b""
            inv, keys = session
            try:
                keys.check(keys.confirmation("accepter"), msg["confirm"])
                keys.check(keys.offer_mac("accepter", msg["offer"]), msg["mac"])
            except PairingError:
                await self._fail(conn, appender, inv, "key_confirmation")
                return "failed", b"the code did not confirm: nothing was pinned"
            try:
                offer = proto.parse_offer(msg["offer"])
                self._check_partner(offer, inv.kind)
            except (PairingError, InvalidProfile) as exc:
                await self._fail(conn, appender, inv, "offer")
                return "failed", str(exc).encode("utf-8")
            await invitation_store.hold_offer(conn, number, offer.raw)
            appender.append(
                "key", action="pairing_confirmed", invitation=number, counterpart=offer.node,
                fingerprint=offer.fingerprint, org=self.me.node,
            )  # fmt: skip
            return "ok", proto.message(
                "confirm",
                confirm=keys.confirmation("inviter"),
                offer=own_offer,
                mac=keys.offer_mac("inviter", own_offer),
            )

        outcome, data = await self.writer.run(job)
        if outcome == "ended":
            raise RequestRefused(ErrorCode.INVITATION_ENDED, ENDED)
        if outcome == "failed":
            raise RequestRefused(ErrorCode.PAIRING_FAILED, data.decode("utf-8"))
        answer: bytes = data
        return answer

    def _check_partner(self, offer: Offer, kind: str) -> None:
        """Raises PairingError: the offer is ours, of another kind, or its
        profile does not verify with the offered root."""
        if offer.node == self.me.node:
            raise PairingError("the partner offered this node's own id")
        if offer.kind != kind:
            raise PairingError(
                f"the partner is a {offer.kind} agency but the code was made for {kind}"
            )
        pinned = self.directory.peers.get(offer.node)
        if pinned is not None and pinned.kind not in (None, offer.kind):
            raise PairingError(
                f"{offer.node} is pinned as {pinned.kind}: change its kind with"
                " `handover peers add --change-kind` first"
            )
        if offer.profile is not None:
            verify_profile(offer.profile, node=offer.node, fingerprint=offer.fingerprint)

    async def _finish(self, number: int, mac: bytes) -> bytes:
        now = self.clock()

        async def job(
            conn: Connection, appender: Appender
        ) -> tuple[str, Offer | None, SessionKeys | None]:
            session = await self._session(conn, number, now)
            if session is None or session[0].offer is None:
                return "ended", None, None
            inv, keys = session
            offer = proto.parse_offer(inv.offer or b"")
            try:
                keys.check(keys.finish_mac("accepter", offer.raw), mac)
            except PairingError:
                await self._fail(conn, appender, inv, "finish_mac")
                return "failed", None, None
            return "ok", offer, keys

        outcome, offer, keys = await self.writer.run(job)
        if outcome == "ended" or offer is None or keys is None:
            if outcome == "failed":
                raise RequestRefused(ErrorCode.PAIRING_FAILED, "the finish message did not check")
            raise RequestRefused(ErrorCode.INVITATION_ENDED, ENDED)
        inv = await self._invitation(number)
        await self._pin(offer, inv.kind, role="inviter", invitation=number)
        return proto.message("finish", mac=keys.finish_mac("inviter", offer.raw))

    async def _invitation(self, number: int) -> invitation_store.Invitation:
        async with self.directory.db.connection() as conn:
            inv = await invitation_store.get(conn, number)
        if inv is None:
            raise RequestRefused(ErrorCode.INVITATION_ENDED, ENDED)
        return inv

    async def _pin(self, offer: Offer, kind: str, *, role: str, invitation: int) -> None:
        """Pin the partner (its keyset fetched from its URL and checked against the
        exchanged root), keep its profile, end the invitation (inviter)."""
        try:
            keyset, _ = await self.directory.pin_checked(
                offer.url, offer.fingerprint, kind, node=offer.node
            )
        except TransportError as exc:
            raise RequestRefused(
                ErrorCode.UNAVAILABLE, f"cannot fetch the partner's keyset from its URL: {exc}"
            ) from exc
        except (InvalidKeyset, ConfigError) as exc:
            raise RequestRefused(
                ErrorCode.PAIRING_FAILED, f"the partner's keyset was refused: {exc}"
            ) from exc
        now = self.clock()

        async def job(conn: Connection, appender: Appender) -> None:
            if role == "inviter":
                await invitation_store.end(conn, invitation, "paired", now, offer.node)
            appender.append(
                "key", action="peer_pinned", counterpart=offer.node, fingerprint=offer.fingerprint,
                serial=keyset.serial, kind=kind, via="pairing", role=role, invitation=invitation,
                org=self.me.node,
            )  # fmt: skip

        await self.writer.run(job)
        if offer.profile is not None:
            await self.profiles.record(offer.node, offer.profile, offer.fingerprint)
        log.info("paired", peer=offer.node, role=role)

    # --- accepting side -------------------------------------------------------------

    async def accept(self, url: str, code: str) -> dict[str, Any]:
        """Pair with the node at `url` that made `code`; both pin each other.

        Raises:
            PairingError: the code is not well formed.
            PairingRefused: the inviting node refused a step (its code and message).
            ConfigError: the inviting node's answer did not check out (nothing pinned).
            TransportError: the inviting node cannot be reached.
        """
        number, password = proto.parse_code(code)
        base = url.rstrip("/")
        spake = Spake("accepter", password)
        try:
            answer = await self.transport.post_pairing(
                base, proto.message("start", invitation=number, spake=spake.message)
            )
            msg = proto.parse_message(answer, "start", {"spake": 33})
            keys = proto.derive(spake.finish(msg["spake"]), number, msg["spake"], spake.message)
            own_offer = await self._offer()
            answer = await self.transport.post_pairing(
                base,
                proto.message(
                    "confirm",
                    invitation=number,
                    confirm=keys.confirmation("accepter"),
                    offer=own_offer,
                    mac=keys.offer_mac("accepter", own_offer),
                ),
            )
        except PairingRefused as exc:  # the partner's message is not ours to log
            code = exc.code if exc.code in ErrorCode.__members__.values() else "other"
            await self._audit_failure(base, number, f"refused:{code}")
            raise
        except PairingError:
            await self._audit_failure(base, number, "malformed_answer")
            raise
        try:
            msg = proto.parse_message(answer, "confirm", {"confirm": 32, "offer": None, "mac": 32})
            keys.check(keys.confirmation("inviter"), msg["confirm"])
            keys.check(keys.offer_mac("inviter", msg["offer"]), msg["mac"])
            offer = proto.parse_offer(msg["offer"])
            pinned = self.directory.peers.get(offer.node)
            if pinned is not None and pinned.kind not in (None, offer.kind):
                raise PairingError(
                    f"{offer.node} is pinned as {pinned.kind} but says it is {offer.kind}:"
                    " change its kind with `handover peers add --change-kind` first"
                )
            if offer.node == self.me.node:
                raise PairingError("the partner offered this node's own id")
            if offer.profile is not None:
                verify_profile(offer.profile, node=offer.node, fingerprint=offer.fingerprint)
        except (PairingError, InvalidProfile) as exc:
            await self._audit_failure(base, number, "answer_check")
            raise ConfigError(f"pairing with {base} failed, nothing was pinned: {exc}") from exc
        try:
            await self._pin(offer, offer.kind, role="accepter", invitation=number)
        except RequestRefused as exc:
            raise ConfigError(f"pairing with {base}: {exc.message}") from exc
        try:
            answer = await self.transport.post_pairing(
                base,
                proto.message(
                    "finish", invitation=number, mac=keys.finish_mac("accepter", own_offer)
                ),
            )
            msg = proto.parse_message(answer, "finish", {"mac": 32})
            keys.check(keys.finish_mac("inviter", own_offer), msg["mac"])
        except (PairingRefused, PairingError, TransportError) as exc:
            await self._audit_failure(base, number, "finish")
            raise ConfigError(
                f"{offer.node} is pinned here, but it did not confirm pinning this node"
                f" ({type(exc).__name__}): ask its administrator to check `handover peers"
                " list` there, and pair again with a new code if this node is missing"
            ) from exc
        return {
            "node": offer.node,
            "url": offer.url,
            "fingerprint": offer.fingerprint,
            "kind": offer.kind,
            "safety_number": proto.safety_number(
                offer.fingerprint, self.directory.keys.fingerprint
            ),
        }

    async def _audit_failure(self, base: str, number: int, problem: str) -> None:
        async def job(_conn: Connection, appender: Appender) -> None:
            appender.append(
                "key", action="pairing_failed", role="accepter", invitation=number,
                problem=problem, org=self.me.node,
            )  # fmt: skip

        await self.writer.run(job)
        log.warning("pairing_failed", invitation=number, url=base)
