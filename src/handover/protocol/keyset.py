"""Keysets: a node's root-signed list of signing and encryption keys (docs/protocol.md section 2).

`build_keyset` makes the wire form; `accept_keyset` applies every acceptance
rule against a pin (node id + root fingerprint) and the last accepted keyset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from handover.protocol import crypto
from handover.protocol.canonical import (
    b64u_decode,
    b64u_encode,
    cj_dumps,
    cj_loads,
    dump_wire_object,
    parse_wire_object,
)
from handover.protocol.errors import EncodingError, InvalidKeyset
from handover.protocol.timeutil import DAY_MS, SKEW_MS

KEYSET_LABEL = "hp1/keyset/v1"
MAX_KEYSET_LIFETIME_MS = 7 * DAY_MS
# A retired x25519 key still decrypts for the longest packet lifetime (30 days) + skew.
RETIRED_BOX_GRACE_MS = 30 * DAY_MS + SKEW_MS
NODE_ID_RE = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)*$")
MAX_NODE_ID = 253

Status = Literal["active", "retired", "revoked"]
SubKeyType = Literal["ed25519-sig", "x25519-box"]


def is_node_id(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) <= MAX_NODE_ID and bool(NODE_ID_RE.fullmatch(value))
    )


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class KeyEntry:
    """One key of a keyset."""

    kid: str
    type: SubKeyType
    public_key: bytes
    nbf: int
    status: Status
    until: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kid": self.kid,
            "type": self.type,
            "pk": b64u_encode(self.public_key),
            "nbf": self.nbf,
            "status": self.status,
        }
        if self.until is not None:
            out["until"] = self.until
        return out

    def verifies_at(self, iat: int) -> bool:
        """May this signing key verify a statement dated `iat`?"""
        if self.type != "ed25519-sig" or iat < self.nbf - SKEW_MS:
            return False
        if self.status == "active":
            return True
        if self.status == "retired":
            return self.until is not None and iat <= self.until
        return False  # revoked: nothing new is accepted

    def decrypts_at(self, now: int) -> bool:
        """May this x25519 key be used for decryption at `now`?"""
        if self.type != "x25519-box" or now < self.nbf - SKEW_MS:
            return False
        if self.status == "active":
            return True
        if self.status == "retired":
            return self.until is not None and now <= self.until + RETIRED_BOX_GRACE_MS
        return False


@dataclass(frozen=True)
class Keyset:
    """A parsed keyset; `kb` are the exact signed bytes and `wire` the wire JSON."""

    node: str
    serial: int
    iat: int
    exp: int
    root: bytes
    keys: tuple[KeyEntry, ...]
    kb: bytes
    wire: bytes

    @property
    def fingerprint(self) -> str:
        return crypto.kid("ed25519-root", self.root)

    def key(self, kid: str) -> KeyEntry | None:
        for entry in self.keys:
            if entry.kid == kid:
                return entry
        return None

    def signing_key_for(self, kid: str, iat: int) -> KeyEntry | None:
        """The `ed25519-sig` key `kid` if it may verify a statement dated `iat`."""
        entry = self.key(kid)
        if entry is None or not entry.verifies_at(iat):
            return None
        return entry

    def newest_box_key(self, now: int) -> KeyEntry | None:
        """The key senders encrypt to: active x25519, greatest nbf <= now, lowest kid on ties."""
        candidates = [
            k for k in self.keys if k.type == "x25519-box" and k.status == "active" and k.nbf <= now
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda k: (-k.nbf, k.kid.encode("ascii")))


def build_keyset(
    *,
    node: str,
    serial: int,
    iat: int,
    exp: int,
    root: crypto.SigningKey,
    keys: list[KeyEntry] | tuple[KeyEntry, ...],
) -> bytes:
    """Sign a keyset with the root key and return its wire JSON bytes."""
    kb = cj_dumps(
        {
            "typ": "hp1.keyset",
            "v": 1,
            "node": node,
            "serial": serial,
            "iat": iat,
            "exp": exp,
            "root": b64u_encode(root.public_key),
            "keys": [k.to_json() for k in keys],
        }
    )
    sig = root.sign(crypto.pae(KEYSET_LABEL, kb))
    return dump_wire_object({"hp1k": b64u_encode(kb), "sig": b64u_encode(sig)})


_KEYSET_MEMBERS = {"typ", "v", "node", "serial", "iat", "exp", "root", "keys"}
_KEY_MEMBERS = {"kid", "type", "pk", "nbf", "status"}


def _parse_key(raw: object) -> KeyEntry:
    if not isinstance(raw, dict):
        raise InvalidKeyset("a key entry is not an object")
    members = set(raw)
    status = raw.get("status")
    expected = _KEY_MEMBERS | ({"until"} if status in ("retired", "revoked") else set())
    if members != expected:
        raise InvalidKeyset("a key entry has missing or extra members")
    key_type = raw["type"]
    if key_type not in ("ed25519-sig", "x25519-box"):
        raise InvalidKeyset("a key entry has an unknown type")
    if status not in ("active", "retired", "revoked"):
        raise InvalidKeyset("a key entry has an unknown status")
    if not is_int(raw["nbf"]) or ("until" in raw and not is_int(raw["until"])):
        raise InvalidKeyset("a key entry has a non-integer time")
    try:
        pk = b64u_decode(raw["pk"], 32)
    except EncodingError as exc:
        raise InvalidKeyset("a key entry has a malformed public key") from exc
    if raw["kid"] != crypto.kid(key_type, pk):
        raise InvalidKeyset(f"key id {raw['kid']!r} does not match its key and type")
    if key_type == "ed25519-sig" and not crypto.ed25519_public_key_ok(pk):
        raise InvalidKeyset(f"signing key {raw['kid']!r} is non-canonical or of small order")
    if key_type == "x25519-box" and not crypto.x25519_public_key_ok(pk):
        raise InvalidKeyset(f"encryption key {raw['kid']!r} is of small order")
    return KeyEntry(
        kid=raw["kid"],
        type=key_type,
        public_key=pk,
        nbf=raw["nbf"],
        status=status,
        until=raw.get("until"),
    )


def parse_keyset(wire: bytes | str) -> Keyset:
    """Parse a keyset and verify its signature under the root key it names.

    This checks structure and self-consistency only; `accept_keyset` adds the
    pin, the time window and the rollback rule.

    Raises:
        InvalidKeyset: with a message naming the rule broken.
    """
    try:
        outer = parse_wire_object(wire, ("hp1k", "sig"))
        kb = b64u_decode(outer["hp1k"])
        sig = b64u_decode(outer["sig"], 64)
        body = cj_loads(kb)
    except EncodingError as exc:
        raise InvalidKeyset(f"keyset is not well-formed: {exc}") from exc
    if not isinstance(body, dict) or set(body) != _KEYSET_MEMBERS:
        raise InvalidKeyset("keyset has missing or extra members")
    if body["typ"] != "hp1.keyset" or body["v"] != 1 or not is_int(body["v"]):
        raise InvalidKeyset("not an hp1 keyset (typ or v)")
    if not is_node_id(body["node"]):
        raise InvalidKeyset("keyset node id is malformed")
    for name in ("serial", "iat", "exp"):
        if not is_int(body[name]):
            raise InvalidKeyset(f"keyset {name} is not an integer")
    if body["serial"] < 0:
        raise InvalidKeyset("keyset serial is negative")
    try:
        root = b64u_decode(body["root"], 32)
    except EncodingError as exc:
        raise InvalidKeyset("keyset root key is malformed") from exc
    if not crypto.ed25519_public_key_ok(root):
        raise InvalidKeyset("keyset root key is non-canonical or of small order")
    if not crypto.ed25519_verify(root, crypto.pae(KEYSET_LABEL, kb), sig):
        raise InvalidKeyset("keyset signature does not verify under its root key")
    if not isinstance(body["keys"], list):
        raise InvalidKeyset("keyset keys is not a list")
    keys = tuple(_parse_key(k) for k in body["keys"])
    kids = [k.kid for k in keys]
    if len(set(kids)) != len(kids):
        raise InvalidKeyset("keyset lists a key id twice")
    return Keyset(
        node=body["node"],
        serial=body["serial"],
        iat=body["iat"],
        exp=body["exp"],
        root=root,
        keys=keys,
        kb=kb,
        wire=wire.encode("utf-8") if isinstance(wire, str) else wire,
    )


def accept_keyset(
    wire: bytes | str,
    *,
    node: str,
    fingerprint: str | None,
    now: int,
    last: Keyset | None = None,
) -> Keyset:
    """Apply every acceptance rule of docs/protocol.md section 2.

    Args:
        node: the pinned node id.
        fingerprint: the pinned root fingerprint; None only for offline tools
            that trust the file's own root (they must say so).
        last: the last accepted keyset of this peer, for the rollback rule.

    Raises:
        InvalidKeyset: with a message naming the rule broken.
    """
    ks = parse_keyset(wire)
    if ks.node != node:
        raise InvalidKeyset(f"keyset is for node {ks.node!r}, expected {node!r}")
    if fingerprint is not None and ks.fingerprint != fingerprint:
        raise InvalidKeyset(
            f"keyset root fingerprint {ks.fingerprint} does not match the pinned {fingerprint}"
        )
    if ks.iat > now + SKEW_MS:
        raise InvalidKeyset("keyset is dated in the future")
    if not 0 < ks.exp - ks.iat <= MAX_KEYSET_LIFETIME_MS:
        raise InvalidKeyset("keyset lifetime is not within (0, 7 days]")
    if now > ks.exp:
        raise InvalidKeyset("keyset has expired")
    if last is not None:
        if last.kb == ks.kb:
            return ks
        if ks.serial <= last.serial:
            raise InvalidKeyset(
                f"keyset rollback: serial {ks.serial} is not above the accepted {last.serial}"
            )
        for old in last.keys:
            new = ks.key(old.kid)
            if new is None:
                raise InvalidKeyset(f"keyset dropped key {old.kid!r}")
    return ks
