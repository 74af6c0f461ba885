"""Shared test helpers: deterministic nodes, a fixed clock, validators, a replay store.

Everything here is plain functions and small classes (importable as
``from conftest import ...``) plus a few fixtures wrapping them. Keys are
derived from the node name, so a test run is reproducible and hypothesis can
replay failures.

    NOW                   the fixed protocol clock (ms) every test uses by default
    make_node(name, now)  a Node: Identity, accepted Keyset, ReceiverKeys, root key
    sig_entry, box_entry  keyset entries, for nodes with retired/revoked/future keys
    PERMISSIVE            a validator that accepts any schema id and body
    registry()            the real schema registry (schemas/*.json)
    SCHEMA_ID             the release-notice schema; example_body() its first example
    seal_to(a, b, c)      seal the example body from a to b and c at NOW
    receive(b, wire, a)   open_packet as b with a pinned (real registry for step 9)
    DictReplay            a dict-backed replay store for `open_packet(..., replay=)`
    fixtures              alice (sender), bob and carol (recipients), mallory (outsider)

Real nodes in one process (embedded PostgreSQL, MemoryTransport) are the
fixtures of `tests/inproc.py`: cluster, prison, probation, exit_org, lone.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any

import pytest

from handover.protocol import crypto
from handover.protocol.keyset import KeyEntry, Keyset, accept_keyset, build_keyset
from handover.protocol.opening import Opened, OwnBoxKey, ReceiverKeys, StoredReplay, open_packet
from handover.protocol.packet import Identity, Recipient, SealedPacket, seal
from handover.protocol.timeutil import DAY_MS

# Real in-process nodes (embedded PostgreSQL, MemoryTransport): tests/inproc.py.
pytest_plugins = ("inproc",)

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
KEYSET_TTL_MS = 7 * DAY_MS


class PermissiveValidator:
    """Accepts every schema id and body: for tests about the envelope, not the body."""

    def validate(self, schema_id: str, body: object) -> None:
        return None


PERMISSIVE = PermissiveValidator()

SCHEMA_ID = "handover/release-notice/1"


@functools.cache
def registry() -> Any:
    """The real schema registry (schemas/*.json)."""
    from handover.workflow.schemas import default_registry

    return default_registry()


def example_body(schema_id: str = SCHEMA_ID) -> dict[str, Any]:
    """The first example body of a real schema (a fresh deep copy)."""
    return copy.deepcopy(registry().examples(schema_id)[0])


def seed(label: str, name: str) -> bytes:
    """32 deterministic bytes for key `label` of node `name`."""
    return crypto.h32(crypto.pae("test-seed", label, name))


@dataclass
class Node:
    """A test node: its keys, its own accepted keyset and what it needs to send and receive."""

    name: str
    root: crypto.SigningKey
    sig: crypto.SigningKey
    box: crypto.BoxKey
    keyset: Keyset
    identity: Identity
    receiver: ReceiverKeys
    extra_boxes: dict[str, crypto.BoxKey] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.keyset.fingerprint

    @property
    def sig_kid(self) -> str:
        return crypto.kid("ed25519-sig", self.sig.public_key)

    @property
    def box_kid(self) -> str:
        return crypto.kid("x25519-box", self.box.public_key)

    def recipient(self, now: int = NOW) -> Recipient:
        return Recipient.from_keyset(self.keyset, now)


def sig_entry(
    key: crypto.SigningKey, nbf: int, status: Any = "active", until: int | None = None
) -> KeyEntry:
    """A keyset entry for an Ed25519 signing key."""
    kid = crypto.kid("ed25519-sig", key.public_key)
    return KeyEntry(kid, "ed25519-sig", key.public_key, nbf, status, until)


def box_entry(
    key: crypto.BoxKey, nbf: int, status: Any = "active", until: int | None = None
) -> KeyEntry:
    """A keyset entry for an X25519 encryption key."""
    kid = crypto.kid("x25519-box", key.public_key)
    return KeyEntry(kid, "x25519-box", key.public_key, nbf, status, until)


def make_node(
    name: str,
    now: int = NOW,
    *,
    serial: int = 1,
    keys: list[KeyEntry] | None = None,
    extra_boxes: dict[str, crypto.BoxKey] | None = None,
) -> Node:
    """A node whose keys derive from `name`, with a keyset signed at `now` (valid 7 days).

    `keys` replaces the default key list (one active signing key and one
    active x25519 key, both with `nbf = now - 1 day`); `extra_boxes` adds
    private x25519 keys (by kid) the receiver may decrypt with.
    """
    root = crypto.SigningKey.from_seed(seed("root", name))
    sig = crypto.SigningKey.from_seed(seed("sig", name))
    box = crypto.BoxKey.from_secret(seed("box", name))
    if keys is None:
        keys = [sig_entry(sig, now - DAY_MS), box_entry(box, now - DAY_MS)]
    wire = build_keyset(
        node=name, serial=serial, iat=now, exp=now + KEYSET_TTL_MS, root=root, keys=keys
    )
    keyset = accept_keyset(
        wire, node=name, fingerprint=crypto.kid("ed25519-root", root.public_key), now=now
    )
    privates = {crypto.kid("x25519-box", box.public_key): box, **(extra_boxes or {})}
    own = {
        entry.kid: OwnBoxKey(privates[entry.kid], entry)
        for entry in keyset.keys
        if entry.type == "x25519-box" and entry.kid in privates
    }
    return Node(
        name=name,
        root=root,
        sig=sig,
        box=box,
        keyset=keyset,
        identity=Identity.create(name, sig),
        receiver=ReceiverKeys(name, own),
        extra_boxes=dict(extra_boxes or {}),
    )


def peers(*nodes: Node):
    """A `peer_keyset` callable for `open_packet`: pinned node id -> accepted keyset."""
    table = {n.name: n.keyset for n in nodes}
    return table.get


def seal_to(
    sender: Node,
    *recipients: Node,
    now: int = NOW,
    schema_id: str = SCHEMA_ID,
    body: dict[str, Any] | None = None,
    validator: Any = None,
    **kwargs: Any,
) -> SealedPacket:
    """Seal the example release notice (or `body`) from `sender` at `now`.

    The real registry validates unless `validator` is given; `kwargs` go to `seal`.
    """
    return seal(
        sender.identity,
        [r.recipient(now) for r in recipients],
        schema_id,
        example_body(schema_id) if body is None else body,
        now=now,
        validator=registry() if validator is None else validator,
        **kwargs,
    )


class DictReplay:
    """Replay records `(sender, pid) -> StoredReplay` in a dict."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], StoredReplay] = {}

    def lookup(self, sender: str, pid: str) -> StoredReplay | None:
        return self.records.get((sender, pid))

    def record(self, opened: Opened, receipt: bytes) -> None:
        self.records[(opened.sender, opened.pid)] = StoredReplay(opened.pd, receipt)


def receive(
    node: Node,
    wire: bytes,
    *senders: Node,
    now: int = NOW,
    replay: DictReplay | None = None,
    validator: Any = None,
) -> Any:
    """`open_packet` as `node` with `senders` pinned (an Opened or Replayed).

    The real registry validates step 9 unless `validator` is given.
    """
    return open_packet(
        wire,
        receiver=node.receiver,
        peer_keyset=peers(*senders),
        now=now,
        replay=replay.lookup if replay is not None else None,
        validator=registry() if validator is None else validator,
    )


@pytest.fixture
def alice() -> Node:
    """The usual sender (a prison)."""
    return make_node("prison.alice.example")


@pytest.fixture
def bob() -> Node:
    """The usual first recipient (a probation office)."""
    return make_node("probation.bob.example")


@pytest.fixture
def carol() -> Node:
    """The usual second recipient (an exit organisation)."""
    return make_node("exit.carol.example")


@pytest.fixture
def mallory() -> Node:
    """A pinned peer that is not a recipient and misbehaves."""
    return make_node("mallory.example")
