"""Pairing two nodes with a short spoken code (docs/protocol.md section 9).

The inviting node makes a one-time code `<number>-<word>-<word>`: the number
names the invitation, the two words (EFF short wordlist, CC BY 3.0 US, see
`eff_short_wordlist.txt`) are the secret. The two nodes run SPAKE2 (the
`spake2` package, Ed25519 group) with the whole code as the password, derive
confirmation and MAC keys from the SPAKE2 key with keyed BLAKE2b, prove the
key to each other, and only then exchange authenticated offers (node id, root
public key, kind, URL, signed profile). Everything here is pure: no I/O.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from spake2 import SPAKE2_A, SPAKE2_B, SPAKEError  # type: ignore[import-untyped]

from handover.protocol import crypto
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps, cj_loads
from handover.protocol.errors import EncodingError, InvalidKeyset
from handover.protocol.keyset import is_node_id

PAIR_TYP = "hp1.pair"
OFFER_TYP = "hp1.pair-offer"
ID_INVITER = b"hp1/pair/v1/inviter"
ID_ACCEPTER = b"hp1/pair/v1/accepter"
SPAKE_MESSAGE_BYTES = 33
MAX_INVITATION = 999
MAX_PAIR_MESSAGE = 16 * 1024
CODE_RE = re.compile(r"^([1-9][0-9]{0,2})-([a-z]+)-([a-z]+)$")
STEPS = ("start", "confirm", "finish")
KIND_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class PairingError(Exception):
    """A pairing message or key check failed; the message names no secret."""


@cache
def wordlist() -> tuple[str, ...]:
    """The EFF short wordlist (1296 words), less any word that is not plain a-z."""
    text = resources.files("handover.protocol").joinpath("eff_short_wordlist.txt").read_text()
    return tuple(w for w in (line.strip() for line in text.splitlines()) if w.isalpha())


def new_code(invitation: int) -> str:
    """`<invitation>-<word>-<word>`, the words drawn uniformly with `secrets`."""
    words = wordlist()
    return f"{invitation}-{secrets.choice(words)}-{secrets.choice(words)}"


def parse_code(code: str) -> tuple[int, str]:
    """The invitation number and the normalised code (the SPAKE2 password).

    Raises:
        PairingError: not of the form `<number>-<word>-<word>` with listed words.
    """
    normal = "-".join(code.strip().lower().split())
    match = CODE_RE.fullmatch(normal)
    words = set(wordlist())
    if match is None or match.group(2) not in words or match.group(3) not in words:
        raise PairingError("a code is a number and two words, e.g. 7-guitar-revenge")
    return int(match.group(1)), normal


# --- SPAKE2 and keys ------------------------------------------------------------------


@dataclass(frozen=True)
class SessionKeys:
    """What both sides derive from the SPAKE2 key and the two SPAKE2 messages."""

    transcript: bytes
    confirm_inviter: bytes
    confirm_accepter: bytes
    mac_inviter: bytes = b""
    mac_accepter: bytes = b""

    def confirmation(self, side: str) -> bytes:
        key = self.confirm_inviter if side == "inviter" else self.confirm_accepter
        return crypto.kh32(key, crypto.pae("hp1/pair/v1/confirm", side, self.transcript))

    def offer_mac(self, side: str, offer: bytes) -> bytes:
        key = self.mac_inviter if side == "inviter" else self.mac_accepter
        return crypto.kh32(key, crypto.pae("hp1/pair/v1/offer", side, self.transcript, offer))

    def finish_mac(self, side: str, offer_accepter: bytes) -> bytes:
        key = self.mac_inviter if side == "inviter" else self.mac_accepter
        return crypto.kh32(
            key, crypto.pae("hp1/pair/v1/finish", side, self.transcript, offer_accepter)
        )

    def check(self, expected: bytes, got: bytes) -> None:
        if not crypto.constant_time_equal(expected, got):
            raise PairingError("the key confirmation does not match: wrong code or a relay")


def derive(key: bytes, invitation: int, msg_inviter: bytes, msg_accepter: bytes) -> SessionKeys:
    """K_label = BLAKE2b-256(key=K, PAE("hp1/pair/v1/key", label)); T = PAE(
    "hp1/pair/v1", invitation, msg_inviter, msg_accepter)."""

    def sub(label: str) -> bytes:
        return crypto.kh32(key, crypto.pae("hp1/pair/v1/key", label))

    return SessionKeys(
        transcript=crypto.pae("hp1/pair/v1", str(invitation), msg_inviter, msg_accepter),
        confirm_inviter=sub("confirm-inviter"),
        confirm_accepter=sub("confirm-accepter"),
        mac_inviter=sub("mac-inviter"),
        mac_accepter=sub("mac-accepter"),
    )


class Spake:
    """One side of SPAKE2: `message` to send, `finish(inbound)` for the key."""

    def __init__(self, side: str, password: str) -> None:
        cls = SPAKE2_A if side == "inviter" else SPAKE2_B
        self._spake = cls(password.encode("utf-8"), idA=ID_INVITER, idB=ID_ACCEPTER)
        self.message: bytes = self._spake.start()

    def finish(self, inbound: bytes) -> bytes:
        """Raises PairingError: a message of the wrong side, group or length."""
        if len(inbound) != SPAKE_MESSAGE_BYTES:
            raise PairingError("a SPAKE2 message is 33 bytes")
        try:
            key: bytes = self._spake.finish(inbound)
        except (SPAKEError, ValueError, AssertionError) as exc:
            raise PairingError("the SPAKE2 message was refused") from exc
        return key


# --- messages -------------------------------------------------------------------------


def message(step: str, **fields: Any) -> bytes:
    """A pairing message: CJ of {"typ": "hp1.pair", "v": 1, "step": step, ...}."""
    out: dict[str, Any] = {"typ": PAIR_TYP, "v": 1, "step": step}
    for name, value in fields.items():
        out[name] = b64u_encode(value) if isinstance(value, bytes) else value
    return cj_dumps(out)


def peek_step(raw: bytes) -> str:
    """The `step` of a pairing message, before it is parsed in full.

    Raises:
        PairingError: not a JSON object with a known step.
    """
    if len(raw) > MAX_PAIR_MESSAGE:
        raise PairingError("pairing message too large")
    try:
        body = cj_loads(raw)
    except (EncodingError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PairingError("pairing message is not canonical JSON") from exc
    step = body.get("step") if isinstance(body, dict) else None
    if step not in STEPS:
        raise PairingError("pairing message step is start, confirm or finish")
    return str(step)


def parse_message(raw: bytes, step: str, members: dict[str, int | None]) -> dict[str, Any]:
    """Parse a pairing message of `step`; `members` maps each b64u member to its
    byte length (None: any length), `invitation` is an integer.

    Raises:
        PairingError: not CJ, other members, wrong step or encodings.
    """
    if len(raw) > MAX_PAIR_MESSAGE:
        raise PairingError("pairing message too large")
    try:
        body = cj_loads(raw)
    except (EncodingError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PairingError("pairing message is not canonical JSON") from exc
    expected = {"typ", "v", "step", *members}
    if not isinstance(body, dict) or set(body) != expected:
        raise PairingError(f"pairing message {step} has members {sorted(expected)}")
    if body["typ"] != PAIR_TYP or body["v"] != 1 or body["step"] != step:
        raise PairingError(f"expected a hp1.pair v1 {step} message")
    out: dict[str, Any] = {}
    for name, length in members.items():
        value = body[name]
        if name == "invitation":
            if not isinstance(value, int) or isinstance(value, bool):
                raise PairingError("invitation is an integer")
            if not 1 <= value <= MAX_INVITATION:
                raise PairingError("invitation is 1..999")
            out[name] = value
            continue
        if not isinstance(value, str):
            raise PairingError(f"{name} is a b64u string")
        try:
            out[name] = b64u_decode(value, length)
        except EncodingError as exc:
            raise PairingError(f"{name} is not b64u of the right length") from exc
    return out


@dataclass(frozen=True)
class Offer:
    """What one side says about itself, authenticated by its offer MAC."""

    node: str
    kind: str
    url: str
    root: bytes
    profile: bytes | None
    raw: bytes

    @property
    def fingerprint(self) -> str:
        return crypto.kid("ed25519-root", self.root)


def make_offer(*, node: str, kind: str, url: str, root: bytes, profile: bytes | None) -> bytes:
    return cj_dumps(
        {
            "typ": OFFER_TYP,
            "v": 1,
            "node": node,
            "kind": kind,
            "url": url,
            "root": b64u_encode(root),
            "profile": "" if profile is None else profile.decode("utf-8"),
        }
    )


def parse_offer(raw: bytes) -> Offer:
    """Raises PairingError: not an offer, or a root key that is not a valid point."""
    try:
        body = cj_loads(raw)
        if not isinstance(body, dict) or set(body) != {
            "typ", "v", "node", "kind", "url", "root", "profile",
        }:  # fmt: skip
            raise PairingError("offer members are typ, v, node, kind, url, root, profile")
        if body["typ"] != OFFER_TYP or body["v"] != 1 or not is_node_id(body["node"]):
            raise PairingError("not a hp1.pair-offer v1 with a node id")
        for name in ("kind", "url"):
            if not isinstance(body[name], str) or not 0 < len(body[name]) <= 2048:
                raise PairingError(f"offer {name} is a short string")
        if not body["url"].startswith(("http://", "https://")):
            raise PairingError("offer url is http(s)")
        if not KIND_RE.fullmatch(body["kind"]):
            raise PairingError("offer kind is a lower-case word of at most 40 characters")
        root = b64u_decode(body["root"], 32) if isinstance(body["root"], str) else b""
        if not crypto.ed25519_public_key_ok(root):
            raise PairingError("offer root is not an Ed25519 public key")
        profile = body["profile"]
        if not isinstance(profile, str):
            raise PairingError("offer profile is a wire string, empty for none")
    except (EncodingError, ValueError, UnicodeDecodeError, RecursionError, InvalidKeyset) as exc:
        raise PairingError("offer is not canonical JSON") from exc
    return Offer(
        node=body["node"],
        kind=body["kind"],
        url=body["url"].rstrip("/"),
        root=root,
        profile=profile.encode("utf-8") if profile else None,
        raw=raw,
    )


# --- safety numbers ---------------------------------------------------------------------


def safety_number(fingerprint_a: str, fingerprint_b: str) -> str:
    """Twelve groups of five digits from both root fingerprints, in either order.

    H = BLAKE2b-512(PAE("hp1/safety/v1", min(fa, fb), max(fa, fb))); group i is
    the big-endian integer of H[5i:5i+5] mod 100000, zero-padded.
    """
    low, high = sorted((fingerprint_a, fingerprint_b))
    digest = crypto.h64(crypto.pae("hp1/safety/v1", low, high))
    groups = [int.from_bytes(digest[5 * i : 5 * i + 5], "big") % 100_000 for i in range(12)]
    return " ".join(f"{g:05d}" for g in groups)
