"""A second, independent implementation of hp1, written from docs/protocol.md only.

It imports nothing from `handover`: raw libsodium through `nacl.bindings`,
`hashlib.blake2b`, `base64`, `json`, `struct`. The cross-check tests
(`test_crosscheck.py`) make each side produce what the other must accept, and
make this side reproduce the known-answer vectors byte for byte, so a
misreading of the protocol in the package shows up as a disagreement here.

Receiver failures raise :class:`Refused` with the same reason names the
package records (`docs/protocol.md`, section "Receiving"), so both sides can
be compared on every tampered packet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions

SKEW = 5 * 60 * 1000
DAY = 24 * 60 * 60 * 1000
MAX_KEYSET_LIFETIME = 7 * DAY
MAX_TTL = 30 * DAY
RETIRED_BOX_GRACE = 30 * DAY + SKEW
MAX_REQUEST = 22 * 1024 * 1024 + 512 * 1024
MAX_HB = 64 * 1024
MAX_CT = 16 * 1024 * 1024
BLOCK = 4096
ZERO_HEAD = bytes(32)
NODE_RE = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*")


class Refused(Exception):
    """Input refused; `reason` names the rule (receiver reasons match the package's)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# --- 1. encodings ------------------------------------------------------------------


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def unb64u(text: Any, length: int | None = None) -> bytes:
    """Decode, re-encode and compare (docs/protocol.md 1)."""
    if not isinstance(text, str) or not text.isascii() or len(text) % 4 == 1:
        raise Refused("b64u")
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise Refused("b64u")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64u(raw) != text or (length is not None and len(raw) != length):
        raise Refused("b64u")
    return raw


def b64u_chars(n: int) -> int:
    return -(-4 * n // 3)


def h32(x: bytes) -> bytes:
    return hashlib.blake2b(x, digest_size=32).digest()


def h64(x: bytes) -> bytes:
    return hashlib.blake2b(x, digest_size=64).digest()


def kh32(k: bytes, x: bytes) -> bytes:
    return hashlib.blake2b(x, digest_size=32, key=k).digest()


def pae(*pieces: bytes | str) -> bytes:
    out = struct.pack("<Q", len(pieces))
    for p in pieces:
        raw = p.encode("utf-8") if isinstance(p, str) else p
        out += struct.pack("<Q", len(raw)) + raw
    return out


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _cj_string(s: str) -> str:
    out = ['"']
    for ch in s:
        c = ord(ch)
        if 0xD800 <= c <= 0xDFFF:
            raise Refused("cj", "surrogate")
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif c < 0x20:
            out.append(f"\\u{c:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _cj(v: Any, depth: int) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    if type(v) is int:
        if abs(v) > 2**53 - 1:
            raise Refused("cj", "integer range")
        return str(v)
    if type(v) is str:
        return _cj_string(v)
    if type(v) in (list, dict):
        if depth + 1 > 32:
            raise Refused("cj", "depth")
        if type(v) is list:
            return "[" + ",".join(_cj(x, depth + 1) for x in v) + "]"
        for k in v:
            if type(k) is not str or not k or not k.isascii():
                raise Refused("cj", "key")
        items = sorted(v.items())  # ASCII keys: code point order is byte order
        return "{" + ",".join(_cj_string(k) + ":" + _cj(x, depth + 1) for k, x in items) + "}"
    raise Refused("cj", f"type {type(v).__name__}")


def cj(v: Any) -> bytes:
    """CJ(o), written out by hand (no json.dumps) to be independent of the package."""
    return _cj(v, 0).encode("utf-8")


def _no_dups(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise Refused("json", "duplicate key")
        out[k] = v
    return out


def _refuse(_: str) -> Any:
    raise Refused("json", "float or constant")


def strict_json(data: bytes | str) -> Any:
    """Strict JSON: no duplicate keys, no floats or NaN (whitespace allowed)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(
            text, object_pairs_hook=_no_dups, parse_float=_refuse, parse_constant=_refuse
        )
    except Refused:
        raise
    except (ValueError, RecursionError) as exc:
        raise Refused("json", type(exc).__name__) from exc


def cj_parse(data: bytes) -> Any:
    v = strict_json(data)
    if cj(v) != data:
        raise Refused("cj", "not canonical")
    return v


def wire_object(data: bytes | str, members: tuple[str, ...]) -> dict[str, str]:
    v = strict_json(data)
    if type(v) is not dict or set(v) != set(members):
        raise Refused("wire", "members")
    if any(type(v[m]) is not str for m in members):
        raise Refused("wire", "member types")
    return v


def is_int(v: Any) -> bool:
    return type(v) is int


def is_node(v: Any) -> bool:
    return type(v) is str and len(v) <= 253 and NODE_RE.fullmatch(v) is not None


def is_b64(v: Any, n: int) -> bool:
    try:
        unb64u(v, n)
    except Refused:
        return False
    return True


def kid(key_type: str, pk: bytes) -> str:
    return b64u(h32(pae("hp1/kid", key_type, pk))[:16])


# --- Ed25519 / X25519 ----------------------------------------------------------------

_P = 2**255 - 19
# libsodium's list of small-order X25519 u-coordinates (compared without the top bit).
_X25519_SMALL_ORDER = {
    u.to_bytes(32, "little")
    for u in (
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
        _P - 1,
        _P,
        _P + 1,
    )
}


def x25519_small_order(pk: bytes) -> bool:
    return pk[:31] + bytes([pk[31] & 0x7F]) in _X25519_SMALL_ORDER


def ed25519_key_ok(pk: bytes) -> bool:
    """Canonical, not small order; libsodium's check also refuses mixed-order points."""
    return len(pk) == 32 and bool(sodium.crypto_core_ed25519_is_valid_point(pk))


def ed25519_keypair(seed: bytes) -> tuple[bytes, bytes]:
    pk, sk = sodium.crypto_sign_seed_keypair(seed)
    return pk, sk


def sign(sk: bytes, msg: bytes) -> bytes:
    return sodium.crypto_sign(msg, sk)[:64]


def verify(pk: bytes, msg: bytes, sig: bytes) -> bool:
    """crypto_sign_open is crypto_sign_verify_detached: the rule of docs/protocol.md 1."""
    if len(pk) != 32 or len(sig) != 64:
        return False
    try:
        sodium.crypto_sign_open(sig + msg, pk)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True


# --- 2. keys and keysets -------------------------------------------------------------


@dataclass
class NodeSecrets:
    """A node's private keys (seeds), enough to make its keyset and act as it."""

    node: str
    root_seed: bytes
    sig_seed: bytes
    box_secret: bytes
    nbf: int

    @property
    def root_pk(self) -> bytes:
        return ed25519_keypair(self.root_seed)[0]

    @property
    def sig_sk(self) -> bytes:
        return ed25519_keypair(self.sig_seed)[1]

    @property
    def sig_pk(self) -> bytes:
        return ed25519_keypair(self.sig_seed)[0]

    @property
    def box_pk(self) -> bytes:
        return sodium.crypto_scalarmult_base(self.box_secret)

    @property
    def fingerprint(self) -> str:
        return kid("ed25519-root", self.root_pk)

    @property
    def sig_kid(self) -> str:
        return kid("ed25519-sig", self.sig_pk)

    @property
    def box_kid(self) -> str:
        return kid("x25519-box", self.box_pk)

    def key_entries(self) -> list[dict[str, Any]]:
        return [
            {
                "kid": self.sig_kid,
                "type": "ed25519-sig",
                "pk": b64u(self.sig_pk),
                "nbf": self.nbf,
                "status": "active",
            },
            {
                "kid": self.box_kid,
                "type": "x25519-box",
                "pk": b64u(self.box_pk),
                "nbf": self.nbf,
                "status": "active",
            },
        ]

    def keyset(self, serial: int, iat: int, exp: int, keys: list[dict[str, Any]] | None = None):
        return build_keyset(self.node, serial, iat, exp, self.root_seed, keys or self.key_entries())


def build_keyset(
    node: str, serial: int, iat: int, exp: int, root_seed: bytes, keys: list[dict[str, Any]]
) -> bytes:
    root_pk, root_sk = ed25519_keypair(root_seed)
    kb = cj(
        {
            "typ": "hp1.keyset",
            "v": 1,
            "node": node,
            "serial": serial,
            "iat": iat,
            "exp": exp,
            "root": b64u(root_pk),
            "keys": keys,
        }
    )
    return cj({"hp1k": b64u(kb), "sig": b64u(sign(root_sk, pae("hp1/keyset/v1", kb)))})


@dataclass
class Key:
    kid: str
    type: str
    pk: bytes
    nbf: int
    status: str
    until: int | None

    def verifies_at(self, iat: int) -> bool:
        if self.type != "ed25519-sig" or iat < self.nbf - SKEW:
            return False
        return self.status == "active" or (
            self.status == "retired" and self.until is not None and iat <= self.until
        )

    def decrypts_at(self, now: int) -> bool:
        if self.type != "x25519-box" or now < self.nbf - SKEW:
            return False
        return self.status == "active" or (
            self.status == "retired"
            and self.until is not None
            and now <= self.until + RETIRED_BOX_GRACE
        )


@dataclass
class AcceptedKeyset:
    node: str
    serial: int
    iat: int
    exp: int
    root: bytes
    keys: dict[str, Key]
    kb: bytes

    @property
    def fingerprint(self) -> str:
        return kid("ed25519-root", self.root)

    def newest_box(self, now: int) -> Key:
        active = [k for k in self.keys.values() if k.type == "x25519-box" and k.status == "active"]
        active = [k for k in active if k.nbf <= now]
        if not active:
            raise Refused("keyset", "no active x25519 key")
        return min(active, key=lambda k: (-k.nbf, k.kid.encode("ascii")))


def verify_keyset(
    wire: bytes | str,
    *,
    now: int,
    node: str | None = None,
    fingerprint: str | None = None,
    last: AcceptedKeyset | None = None,
) -> AcceptedKeyset:
    """Every acceptance rule of docs/protocol.md 2. `node=None` trusts the file's node id."""
    try:
        outer = wire_object(wire, ("hp1k", "sig"))
        kb = unb64u(outer["hp1k"])
        sig = unb64u(outer["sig"], 64)
        b = cj_parse(kb)
    except Refused as exc:
        raise Refused("keyset", f"encoding: {exc}") from exc
    members = {"typ", "v", "node", "serial", "iat", "exp", "root", "keys"}
    if type(b) is not dict or set(b) != members:
        raise Refused("keyset", "members")
    if b["typ"] != "hp1.keyset" or not is_int(b["v"]) or b["v"] != 1:
        raise Refused("keyset", "typ/v")
    if not is_node(b["node"]) or not all(is_int(b[m]) for m in ("serial", "iat", "exp")):
        raise Refused("keyset", "node/serial/iat/exp")
    if not is_b64(b["root"], 32) or not ed25519_key_ok(unb64u(b["root"])):
        raise Refused("keyset", "root key")
    root = unb64u(b["root"])
    if not verify(root, pae("hp1/keyset/v1", kb), sig):
        raise Refused("keyset", "signature")
    if node is not None and b["node"] != node:
        raise Refused("keyset", "node")
    if fingerprint is not None and kid("ed25519-root", root) != fingerprint:
        raise Refused("keyset", "fingerprint")
    if b["iat"] > now + SKEW or not 0 < b["exp"] - b["iat"] <= MAX_KEYSET_LIFETIME:
        raise Refused("keyset", "iat/lifetime")
    if now > b["exp"]:
        raise Refused("keyset", "expired")
    if type(b["keys"]) is not list:
        raise Refused("keyset", "keys")
    keys: dict[str, Key] = {}
    for e in b["keys"]:
        if type(e) is not dict:
            raise Refused("keyset", "key entry")
        want = {"kid", "type", "pk", "nbf", "status"}
        if e.get("status") in ("retired", "revoked"):
            want.add("until")
        elif e.get("status") != "active":
            raise Refused("keyset", "status")
        if set(e) != want or e["type"] not in ("ed25519-sig", "x25519-box"):
            raise Refused("keyset", "key entry members/type")
        if not is_int(e["nbf"]) or ("until" in e and not is_int(e["until"])):
            raise Refused("keyset", "key times")
        if not is_b64(e["pk"], 32):
            raise Refused("keyset", "pk")
        pk = unb64u(e["pk"])
        if e["kid"] != kid(e["type"], pk) or e["kid"] in keys:
            raise Refused("keyset", "kid")
        if e["type"] == "ed25519-sig" and not ed25519_key_ok(pk):
            raise Refused("keyset", "small-order or non-canonical ed25519 key")
        if e["type"] == "x25519-box" and x25519_small_order(pk):
            raise Refused("keyset", "small-order x25519 key")
        keys[e["kid"]] = Key(e["kid"], e["type"], pk, e["nbf"], e["status"], e.get("until"))
    ks = AcceptedKeyset(b["node"], b["serial"], b["iat"], b["exp"], root, keys, kb)
    if last is not None and last.kb != kb:
        if ks.serial <= last.serial:
            raise Refused("keyset", "serial rollback")
        if set(last.keys) - set(keys):
            raise Refused("keyset", "a key was removed")
    return ks


# --- 3. packets ----------------------------------------------------------------------


def pad(inner: bytes) -> bytes:
    return inner + b"\x80" + bytes(-(len(inner) + 1) % BLOCK)


def derive(k: bytes, label: str, node: str, sig_kid: str, pid: str) -> bytes:
    return kh32(k, pae(label, node, sig_kid, pid))


def wrap_nonce(i: int) -> bytes:
    return b"hp1/wrap/nonce/1" + struct.pack(">Q", i)


@dataclass
class Draft:
    """Everything a sealer computed, before (or after) tampering; `wire()` signs it."""

    header: dict[str, Any]
    ct: bytes
    content_key: bytes
    inner: bytes
    sig_sk: bytes
    sig: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hb(self) -> bytes:
        return cj(self.header)

    def sign(self) -> bytes:
        self.sig = sign(self.sig_sk, pae("hp1/packet/v1", self.hb))
        return self.sig

    def wire(self, *, resign: bool = True) -> bytes:
        if resign or self.sig is None:
            self.sign()
        assert self.sig is not None
        return cj({"hp1": b64u(self.hb), "sig": b64u(self.sig), "ct": b64u(self.ct)})


def seal_draft(
    sender: NodeSecrets,
    recipients: list[tuple[str, str, bytes]],
    schema: str,
    body: dict[str, Any],
    *,
    now: int,
    rand,
    log: tuple[int, bytes] = (0, ZERO_HEAD),
    ttl: int = 14 * DAY,
    inner: bytes | None = None,
    padded: bytes | None = None,
) -> Draft:
    """Section 3 steps 2-7. `recipients` are (node, x25519 kid, pk); `rand(n)` gives bytes.

    `inner` / `padded` override the payload, for tampered packets.
    """
    if inner is None:
        inner = cj({"schema": schema, "body": body, "log": {"seq": log[0], "head": b64u(log[1])}})
    k, e, n, pid = rand(32), rand(32), rand(24), b64u(rand(16))
    epk = sodium.crypto_scalarmult_base(e)
    frm = (sender.node, sender.sig_kid, pid)
    ck = derive(k, "hp1/content-key/v1", *frm)
    kc = derive(k, "hp1/key-commitment/v1", *frm)
    ct = sodium.crypto_secretbox(padded if padded is not None else pad(inner), n, ck)
    to = [
        {"node": node, "kid": rkid, "wk": b64u(sodium.crypto_box(k, wrap_nonce(i), pk, e))}
        for i, (node, rkid, pk) in enumerate(recipients)
    ]
    header = {
        "typ": "hp1.packet",
        "v": 1,
        "pid": pid,
        "iat": now,
        "exp": now + ttl,
        "from": {"node": sender.node, "kid": sender.sig_kid},
        "to": to,
        "epk": b64u(epk),
        "kc": b64u(kc),
        "n": b64u(n),
        "clen": len(ct),
        "ch": b64u(h64(ct)),
    }
    return Draft(header, ct, k, inner, sender.sig_sk, extra={"e": e, "n": n, "ck": ck, "kc": kc})


def seal(sender: NodeSecrets, recipients: list[AcceptedKeyset], schema: str, body, **kw) -> bytes:
    """Seal to each recipient keyset's newest active x25519 key."""
    now = kw["now"]
    to = []
    for ks in recipients:
        key = ks.newest_box(now)
        to.append((ks.node, key.kid, key.pk))
    return seal_draft(sender, to, schema, body, **kw).wire()


def packet_digest(hb: bytes, sig: bytes) -> bytes:
    return h64(pae("hp1/packet-digest/v1", hb, sig))


@dataclass
class OpenedPacket:
    pid: str
    pd: bytes
    sender: str
    schema: str
    body: dict[str, Any]
    log: tuple[int, bytes]
    inner: bytes
    replayed: bool = False


def _check_header(h: Any) -> None:
    def ok(cond: bool, what: str) -> None:
        if not cond:
            raise Refused("bad_header", what)

    members = {"typ", "v", "pid", "iat", "exp", "from", "to", "epk", "kc", "n", "clen", "ch"}
    ok(type(h) is dict and set(h) == members, "members")
    ok(h["typ"] == "hp1.packet" and is_int(h["v"]) and h["v"] == 1, "typ/v")
    ok(is_b64(h["pid"], 16) and is_int(h["iat"]) and is_int(h["exp"]), "pid/iat/exp")
    f = h["from"]
    ok(type(f) is dict and set(f) == {"node", "kid"}, "from")
    ok(is_node(f["node"]) and is_b64(f["kid"], 16), "from values")
    ok(type(h["to"]) is list and 1 <= len(h["to"]) <= 64, "to count")
    for t in h["to"]:
        ok(type(t) is dict and set(t) == {"node", "kid", "wk"}, "to entry")
        ok(is_node(t["node"]) and is_b64(t["kid"], 16) and is_b64(t["wk"], 48), "to values")
    ok(len({t["node"] for t in h["to"]}) == len(h["to"]), "to nodes distinct")
    ok(is_b64(h["epk"], 32) and is_b64(h["kc"], 32) and is_b64(h["n"], 24), "epk/kc/n")
    ok(is_int(h["clen"]) and 0 <= h["clen"] <= MAX_CT and is_b64(h["ch"], 64), "clen/ch")


def _unpad(padded: bytes) -> bytes:
    body = padded.rstrip(b"\x00")
    if (
        not padded
        or len(padded) % BLOCK
        or not body.endswith(b"\x80")
        or len(padded) - len(body) >= BLOCK
    ):
        raise Refused("bad_padding")
    return body[:-1]


def open_packet(
    wire: bytes,
    *,
    me: NodeSecrets,
    my_keyset: AcceptedKeyset,
    senders: dict[str, AcceptedKeyset],
    now: int,
    seen: dict[tuple[str, str], bytes] | None = None,
) -> OpenedPacket:
    """The receiver's steps 1-8 of docs/protocol.md 3 (step 9, schema and policy, is the caller's).

    `seen` maps (sender, pid) to pd; an opened packet is recorded in it.
    """
    # 1
    if len(wire) > MAX_REQUEST:
        raise Refused("too_large")
    try:
        outer = wire_object(wire, ("hp1", "sig", "ct"))
    except Refused as exc:
        raise Refused("malformed_wire", str(exc)) from exc
    if len(outer["hp1"]) > b64u_chars(MAX_HB) or len(outer["ct"]) > b64u_chars(MAX_CT):
        raise Refused("too_large")
    # 2
    try:
        hb = unb64u(outer["hp1"])
        sig = unb64u(outer["sig"], 64)
    except Refused as exc:
        raise Refused("bad_encoding") from exc
    try:
        h = cj_parse(hb)
    except Refused as exc:
        raise Refused("bad_header", str(exc)) from exc
    _check_header(h)
    sender, pid = h["from"]["node"], h["pid"]
    # 3
    pd = packet_digest(hb, sig)
    if seen is not None and (sender, pid) in seen:
        if hmac.compare_digest(seen[(sender, pid)], pd):
            return OpenedPacket(pid, pd, sender, "", {}, (0, ZERO_HEAD), b"", replayed=True)
        raise Refused("replay_conflict")
    # 4
    ks = senders.get(sender)
    if ks is None:
        raise Refused("unknown_sender")
    key = ks.keys.get(h["from"]["kid"])
    if key is None or key.type != "ed25519-sig":
        raise Refused("unknown_signing_key")
    if not key.verifies_at(h["iat"]):
        raise Refused("key_not_valid")
    if not verify(key.pk, pae("hp1/packet/v1", hb), sig):
        raise Refused("bad_signature")
    # 5
    if h["iat"] > now + SKEW:
        raise Refused("not_yet_valid")
    if now > h["exp"]:
        raise Refused("expired")
    if not 0 < h["exp"] - h["iat"] <= MAX_TTL:
        raise Refused("bad_lifetime")
    # 6
    mine = [i for i, t in enumerate(h["to"]) if t["node"] == me.node]
    if len(mine) != 1:
        raise Refused("not_a_recipient")
    i = mine[0]
    own = my_keyset.keys.get(h["to"][i]["kid"])
    if own is None or own.pk != me.box_pk or not own.decrypts_at(now):
        raise Refused("unknown_recipient_key")
    # 7
    try:
        ct = unb64u(outer["ct"])
    except Refused as exc:
        raise Refused("bad_encoding") from exc
    if len(ct) != h["clen"] or not hmac.compare_digest(h64(ct), unb64u(h["ch"])):
        raise Refused("ciphertext_mismatch")
    # 8
    try:
        k = sodium.crypto_box_open(
            unb64u(h["to"][i]["wk"]), wrap_nonce(i), unb64u(h["epk"]), me.box_secret
        )
    except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError, ValueError) as exc:
        raise Refused("unwrap_failed") from exc
    frm = (sender, h["from"]["kid"], pid)
    if not hmac.compare_digest(derive(k, "hp1/key-commitment/v1", *frm), unb64u(h["kc"])):
        raise Refused("key_commitment_mismatch")
    try:
        padded = sodium.crypto_secretbox_open(
            ct, unb64u(h["n"]), derive(k, "hp1/content-key/v1", *frm)
        )
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise Refused("decrypt_failed") from exc
    inner = _unpad(padded)
    try:
        p = cj_parse(inner)
        # `att` (section 8) is checked by independent_att.py on the returned inner bytes.
        if type(p) is not dict or set(p) - {"att"} != {"schema", "body", "log"}:
            raise Refused("bad_payload", "members")
        if type(p["schema"]) is not str or type(p["body"]) is not dict:
            raise Refused("bad_payload", "schema/body")
        log = parse_position(p["log"])
    except Refused as exc:
        raise Refused("bad_payload", str(exc)) from exc
    if seen is not None:
        seen[(sender, pid)] = pd
    return OpenedPacket(pid, pd, sender, p["schema"], p["body"], log, inner)


def parse_position(raw: Any) -> tuple[int, bytes]:
    if type(raw) is not dict or set(raw) != {"seq", "head"}:
        raise Refused("log", "members")
    if not is_int(raw["seq"]) or raw["seq"] < 0 or not is_b64(raw["head"], 32):
        raise Refused("log", "types")
    head = unb64u(raw["head"])
    if (raw["seq"] == 0) != (head == ZERO_HEAD):
        raise Refused("log", "seq 0 exactly when head is zero")
    return raw["seq"], head


# --- 4. receipts ---------------------------------------------------------------------


def make_receipt(
    signer: NodeSecrets,
    *,
    rid: bytes,
    pid: str,
    pd: bytes,
    to: str,
    status: str,
    reason: str | None,
    now: int,
    log: tuple[int, bytes],
) -> bytes:
    rb: dict[str, Any] = {
        "typ": "hp1.receipt",
        "v": 1,
        "rid": b64u(rid),
        "pid": pid,
        "pd": b64u(pd),
        "from": {"node": signer.node, "kid": signer.sig_kid},
        "to": to,
        "status": status,
        "iat": now,
        "log": {"seq": log[0], "head": b64u(log[1])},
    }
    if reason is not None:
        rb["reason"] = reason
    raw = cj(rb)
    return cj({"hp1r": b64u(raw), "sig": b64u(sign(signer.sig_sk, pae("hp1/receipt/v1", raw)))})


REJECT_CODES = ("unknown_schema", "schema_invalid", "not_permitted", "consent_required")


def verify_receipt(
    wire: bytes,
    *,
    sender: str,
    pid: str,
    pd: bytes,
    recipients: dict[str, AcceptedKeyset],
    now: int,
) -> dict[str, Any]:
    """The sender's receipt check of docs/protocol.md 4; returns the receipt body."""
    outer = wire_object(wire, ("hp1r", "sig"))
    rb = unb64u(outer["hp1r"])
    sig = unb64u(outer["sig"], 64)
    r = cj_parse(rb)
    base = {"typ", "v", "rid", "pid", "pd", "from", "to", "status", "iat", "log"}
    if type(r) is not dict:
        raise Refused("receipt", "not an object")
    if r.get("status") == "rejected":
        if set(r) != base | {"reason"} or r["reason"] not in REJECT_CODES:
            raise Refused("receipt", "rejected members")
    elif r.get("status") != "accepted" or set(r) != base:
        raise Refused("receipt", "members/status")
    if r["typ"] != "hp1.receipt" or not is_int(r["v"]) or r["v"] != 1:
        raise Refused("receipt", "typ/v")
    f = r["from"]
    if type(f) is not dict or set(f) != {"node", "kid"} or not is_node(f["node"]):
        raise Refused("receipt", "from")
    if not is_b64(r["rid"], 16) or not is_int(r["iat"]):
        raise Refused("receipt", "rid/iat")
    seq, _head = parse_position(r["log"])
    if seq < 1:
        raise Refused("receipt", "log seq is 1-based")
    if f["node"] not in recipients:
        raise Refused("receipt", "signer was not a recipient")
    if r["to"] != sender or r["pid"] != pid or not is_b64(r["pd"], 64):
        raise Refused("receipt", "to/pid")
    if not hmac.compare_digest(unb64u(r["pd"]), pd):
        raise Refused("receipt", "pd")
    if r["iat"] > now + SKEW:
        raise Refused("receipt", "future")
    key = recipients[f["node"]].keys.get(f["kid"])
    if key is None or not key.verifies_at(r["iat"]):
        raise Refused("receipt", "signing key")
    if not verify(key.pk, pae("hp1/receipt/v1", rb), sig):
        raise Refused("receipt", "signature")
    return r


# --- 5. audit chain and checkpoints ---------------------------------------------------


def chain(entries: list[bytes], head: bytes = ZERO_HEAD) -> list[bytes]:
    heads = []
    for e in entries:
        head = h32(pae("hp1/audit/v1", head, h32(e)))
        heads.append(head)
    return heads


def make_checkpoint(signer: NodeSecrets, *, seq: int, head: bytes, now: int) -> bytes:
    cb = cj(
        {
            "typ": "hp1.checkpoint",
            "v": 1,
            "node": signer.node,
            "kid": signer.sig_kid,
            "seq": seq,
            "head": b64u(head),
            "iat": now,
        }
    )
    return cj({"hp1c": b64u(cb), "sig": b64u(sign(signer.sig_sk, pae("hp1/checkpoint/v1", cb)))})


def verify_checkpoint(wire: bytes, keyset: AcceptedKeyset, now: int) -> tuple[int, bytes]:
    outer = wire_object(wire, ("hp1c", "sig"))
    cb = unb64u(outer["hp1c"])
    sig = unb64u(outer["sig"], 64)
    c = cj_parse(cb)
    members = {"typ", "v", "node", "kid", "seq", "head", "iat"}
    if type(c) is not dict or set(c) != members:
        raise Refused("checkpoint", "members")
    if c["typ"] != "hp1.checkpoint" or not is_int(c["v"]) or c["v"] != 1:
        raise Refused("checkpoint", "typ/v")
    if c["node"] != keyset.node or not is_int(c["iat"]) or c["iat"] > now + SKEW:
        raise Refused("checkpoint", "node/iat")
    position = parse_position({"seq": c["seq"], "head": c["head"]})
    key = keyset.keys.get(c["kid"]) if type(c["kid"]) is str else None
    if key is None or not key.verifies_at(c["iat"]):
        raise Refused("checkpoint", "signing key")
    if not verify(key.pk, pae("hp1/checkpoint/v1", cb), sig):
        raise Refused("checkpoint", "signature")
    return position
