"""Who we talk to: pinned peers, their accepted keysets, and our own keys.

A peer is pinned as (node id, URL, root fingerprint). Its keyset is fetched
only from the pinned URL, accepted only under every rule of docs/protocol.md
section 2, and stored durably (last serial and bytes) so a rollback is
refused even across restarts. A failed fetch keeps the last accepted keyset
until it expires.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog

from handover.node import keystore
from handover.node.errors import TransportError
from handover.node.keystore import NodeKeys
from handover.node.transport import Transport
from handover.protocol.errors import ConfigError, InvalidKeyset
from handover.protocol.keyset import Keyset, accept_keyset, parse_keyset
from handover.protocol.timeutil import DAY_MS, MINUTE_MS, Clock
from handover.store import outbox as outbox_store
from handover.store import peers as peer_store
from handover.store.db import Database
from handover.store.errors import StoreError

log = structlog.get_logger(__name__)
REFRESH_BEFORE_EXPIRY_MS = 2 * DAY_MS
OWN_RESIGN_BEFORE_EXPIRY_MS = 6 * DAY_MS  # re-sign our own keyset daily
UNKNOWN_KID_REFETCH_MS = MINUTE_MS
RELOAD_UNKNOWN_S = 5.0


@dataclass
class Peer:
    node: str
    url: str
    fingerprint: str
    kind: str | None
    keyset: Keyset | None
    last_error: str | None = None
    last_forced_fetch: int = 0


class Directory:
    """Pinned peers and keys; shared by the receive path, delivery and the API."""

    def __init__(self, db: Database, transport: Transport, keys: NodeKeys, clock: Clock) -> None:
        self.db = db
        self.transport = transport
        self.keys = keys
        self.clock = clock
        self.peers: dict[str, Peer] = {}
        self._lock = asyncio.Lock()
        # One load at a time: two overlapping loads (a NOTIFY right after a
        # reconnect) could otherwise finish out of order, the older rows last.
        self._load_lock = asyncio.Lock()
        self._loaded_at = float("-inf")

    # --- own keys -------------------------------------------------------------

    def reload_keys(self) -> None:
        """Pick up a rotation done by `handover keys rotate` (another process)."""
        self.keys = keystore.load_keys(self.keys.directory)

    def maintain_own_keyset(self) -> bool:
        """Re-sign our keyset before it expires; destroy expired private keys."""
        now = self.clock()
        changed = False
        if self.keys.keyset.exp - now < OWN_RESIGN_BEFORE_EXPIRY_MS:
            self.keys = keystore.resign(self.keys, now)
            changed = True
        if keystore.destroy_expired(self.keys, now):
            self.keys = keystore.load_keys(self.keys.directory)
        return changed

    # --- peers ----------------------------------------------------------------

    async def load(self) -> None:
        """(Re)load pins and last accepted keysets from the database."""
        async with self._load_lock:
            await self._load()

    async def reload(self, attempts: int = 5, pause_s: float = 0.5) -> None:
        """`load` on a NOTIFY of a pin change (or a reconnect): retried a few
        times, since it runs on its own and nobody else would see it fail."""
        for attempt in range(1, attempts + 1):
            try:
                await self.load()
                return
            except StoreError as exc:
                log.warning("peers_reload_failed", attempt=attempt, error=str(exc))
                await asyncio.sleep(pause_s)

    async def _load(self) -> None:
        self._loaded_at = time.monotonic()
        async with self.db.connection() as conn:
            rows = await peer_store.all_peers(conn)
        now = self.clock()
        loaded: dict[str, Peer] = {}
        for row in rows:
            keyset = None
            if row.keyset is not None:
                try:
                    keyset = parse_keyset(row.keyset)
                except InvalidKeyset:
                    keyset = None
            old = self.peers.get(row.node)
            loaded[row.node] = Peer(
                node=row.node,
                url=row.url,
                fingerprint=row.fingerprint,
                kind=row.kind,
                keyset=keyset,
                last_error=row.last_error,
                last_forced_fetch=old.last_forced_fetch if old else 0,
            )
            if keyset is not None and keyset.exp < now:
                log.warning("peer_keyset_expired", peer=row.node)
        self.peers = loaded

    def keyset(self, node: str) -> Keyset | None:
        """The peer's accepted keyset if it is still valid now."""
        peer = self.peers.get(node)
        if peer is None or peer.keyset is None or self.clock() > peer.keyset.exp:
            return None
        return peer.keyset

    def url(self, node: str) -> str | None:
        peer = self.peers.get(node)
        return None if peer is None else peer.url

    def kind(self, node: str) -> str | None:
        peer = self.peers.get(node)
        return None if peer is None else peer.kind

    async def refresh(self, node: str) -> Keyset | None:
        """Fetch and accept the peer's keyset from its pinned URL.

        A failure is recorded and the last accepted keyset kept until it expires.
        """
        peer = self.peers.get(node)
        if peer is None:
            return None
        now = self.clock()
        try:
            wire = await self.transport.fetch_keyset(peer.url)
            keyset = accept_keyset(
                wire, node=peer.node, fingerprint=peer.fingerprint, now=now, last=peer.keyset
            )
        except (TransportError, InvalidKeyset) as exc:
            peer.last_error = str(exc)
            log.warning("peer_keyset_refresh_failed", peer=node, error=str(exc))
            async with self.db.connection() as conn:
                await peer_store.note_fetch_error(conn, node, str(exc)[:500], now)
                await peer_store.note_failure(conn, node, str(exc), now)
            return self.keyset(node)
        if peer.keyset is None or keyset.kb != peer.keyset.kb:
            async with self.db.transaction() as conn:
                current = await peer_store.get(conn, node)
                # Another process may have accepted a newer one meanwhile.
                if current and current.serial is not None and current.serial > keyset.serial:
                    await self.load()
                    return self.keyset(node)
                await peer_store.store_keyset(
                    conn, node, keyset.serial, keyset.wire, keyset.exp, now
                )
            log.info("peer_keyset_accepted", peer=node, serial=keyset.serial)
        peer.keyset = keyset
        peer.last_error = None
        async with self.db.connection() as conn:
            await peer_store.note_success(conn, node, now)
        return keyset

    async def keyset_for_kid(self, node: str, kid: str) -> Keyset | None:
        """The peer's keyset; refetched (at most once a minute) if it lacks `kid`."""
        keyset = self.keyset(node)
        if keyset is not None and keyset.key(kid) is not None:
            return keyset
        if node not in self.peers:
            # A peer pinned since we started: NOTIFY reloads the list at once, so
            # reloading here is a fallback, at most every few seconds (an
            # unknown sender must not cost a database round trip per packet).
            now = time.monotonic()
            if now - self._loaded_at < RELOAD_UNKNOWN_S:
                return None
            await self.load()
            if node not in self.peers:
                return None
        peer = self.peers[node]
        now = self.clock()
        if now - peer.last_forced_fetch < UNKNOWN_KID_REFETCH_MS:
            return keyset
        peer.last_forced_fetch = now
        return await self.refresh(node)

    async def refresh_due(self) -> None:
        """Refresh every peer whose keyset is missing or expires within two days."""
        now = self.clock()
        for node, peer in list(self.peers.items()):
            if peer.keyset is None or peer.keyset.exp - now < REFRESH_BEFORE_EXPIRY_MS:
                await self.refresh(node)

    async def pin(
        self, url: str, fingerprint: str, kind: str | None, *, change_kind: bool = False
    ) -> Keyset:
        """Fetch a new peer's keyset, check its root fingerprint, and pin it.

        Raises:
            TransportError: the URL cannot be reached.
            InvalidKeyset: the keyset fails a rule (wrong fingerprint, expired, ...).
            ConfigError: the peer is this node, or its kind would change without
                `change_kind`, or with packets to it waiting under the old kind.
        """
        keyset, _old_kind = await self.pin_checked(url, fingerprint, kind, change_kind=change_kind)
        return keyset

    async def pin_checked(
        self,
        url: str,
        fingerprint: str,
        kind: str | None,
        *,
        change_kind: bool = False,
        node: str | None = None,
    ) -> tuple[Keyset, str | None]:
        """:meth:`pin`; also returns the kind the peer had before if it changed.
        With `node`, a keyset of another node is refused."""
        now = self.clock()
        wire = await self.transport.fetch_keyset(url)
        unverified = parse_keyset(wire)
        if node is not None and unverified.node != node:
            raise InvalidKeyset(f"the keyset at {url} is for another node than {node}")
        if unverified.node == self.keys.node:
            raise ConfigError("that URL serves this node's own keyset")
        if unverified.fingerprint != fingerprint:
            # Not the fingerprint found: a person must compare, not copy it.
            raise InvalidKeyset(
                "the root fingerprint of that keyset is not the one given: call the partner"
                " agency on a number you already know and compare the fingerprint, or pair"
                " with `handover peers invite` / `handover peers accept`"
            )
        existing = self.peers.get(unverified.node)
        last = existing.keyset if existing and existing.fingerprint == fingerprint else None
        keyset = accept_keyset(
            wire, node=unverified.node, fingerprint=fingerprint, now=now, last=last
        )
        old_kind = existing.kind if existing is not None else None
        changes_kind = existing is not None and kind is not None and old_kind not in (None, kind)
        async with self.db.transaction() as conn:
            if changes_kind:
                if not change_kind:
                    raise ConfigError(
                        f"{keyset.node} is pinned as {old_kind}; changing its kind to {kind}"
                        " changes what the sharing policy sends it: say so with --change-kind"
                    )
                waiting = await outbox_store.pending_to(conn, keyset.node)
                if waiting:
                    raise ConfigError(
                        f"{waiting} deliveries to {keyset.node} wait in the outbox, planned"
                        f" under the {old_kind} view: change its kind once they are delivered"
                        " or ended"
                    )
            await peer_store.upsert_pin(conn, keyset.node, url.rstrip("/"), fingerprint, kind, now)
            await peer_store.store_keyset(
                conn, keyset.node, keyset.serial, keyset.wire, keyset.exp, now
            )
            await peer_store.notify_pins(conn)
        await self.load()
        return keyset, old_kind if changes_kind else None
