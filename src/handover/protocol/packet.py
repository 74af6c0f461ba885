"""hp1 packets (docs/protocol.md section 3; receipts, section 4, are in `receipt.py`).

Sending: :func:`seal` (this module). Receiving (`opening.py`) runs the spec's
checks in order, in three stages so a node can do the replay lookup (step 3)
in its database:

    unverified = parse_packet(wire)                # steps 1-2, computes pd
    stored = <look up (unverified.sender, unverified.pid)>
    check_replay(unverified, stored)               # step 3 (returns the stored receipt)
    opened = open_parsed(unverified, ...)          # steps 4-9

:func:`open_packet` composes the three for callers with a synchronous replay
store. Steps 1-8 raise one opaque :class:`InvalidPacket` whose `reason` is for
local logs only; step 9 failures come back as `Opened.rejection`, for which a
signed `rejected` receipt is due.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from handover.protocol import crypto
from handover.protocol.attachments import MAX_ATTACHMENTS, AttachmentItem
from handover.protocol.auditchain import LogPosition
from handover.protocol.canonical import (
    b64u_encode,
    cj_dumps,
    dump_wire_object,
)
from handover.protocol.errors import (
    InvalidPacket,
    Reason,
    SealError,
)
from handover.protocol.keyset import Keyset
from handover.protocol.timeutil import DAY_MS, now_ms

PACKET_LABEL = "hp1/packet/v1"
DIGEST_LABEL = "hp1/packet-digest/v1"
RECEIPT_LABEL = "hp1/receipt/v1"
CONTENT_KEY_LABEL = "hp1/content-key/v1"
COMMITMENT_LABEL = "hp1/key-commitment/v1"
MEDIA_TYPE = "application/vnd.handover.packet+json"

MAX_REQUEST_BYTES = 22 * 1024 * 1024 + 512 * 1024  # 22.5 MiB
MAX_HEADER_BYTES = 64 * 1024
MAX_CIPHERTEXT_BYTES = 16 * 1024 * 1024
MAX_TTL_MS = 30 * DAY_MS
DEFAULT_TTL_MS = 14 * DAY_MS
MAX_RECIPIENTS = 64
PAD_BLOCK = 4096

Rand = Callable[[int], bytes]
Status = Literal["accepted", "rejected"]


def b64u_length(n: int) -> int:
    """Characters of unpadded base64url for n bytes."""
    return (4 * n + 2) // 3


class BodyValidator(Protocol):
    def validate(self, schema_id: str, body: object) -> None: ...


@dataclass(frozen=True)
class Identity:
    """What a node signs with: its node id and current signing key."""

    node: str
    kid: str
    key: crypto.SigningKey

    @classmethod
    def create(cls, node: str, key: crypto.SigningKey) -> Identity:
        return cls(node, crypto.kid("ed25519-sig", key.public_key), key)


@dataclass(frozen=True)
class Recipient:
    """A recipient node and the x25519 key a packet is sealed to."""

    node: str
    kid: str
    public_key: bytes

    @classmethod
    def from_keyset(cls, keyset: Keyset, now: int) -> Recipient:
        """The keyset's newest active x25519 key.

        Raises:
            SealError: the keyset has no usable encryption key now.
        """
        entry = keyset.newest_box_key(now)
        if entry is None:
            raise SealError(f"node {keyset.node} has no active encryption key")
        return cls(keyset.node, entry.kid, entry.public_key)


@dataclass(frozen=True)
class SealedPacket:
    pid: str
    wire: bytes
    hb: bytes
    sig: bytes
    pd: bytes
    iat: int
    exp: int
    to: tuple[str, ...]


def new_pid() -> str:
    """A fresh packet id: b64u of 16 random bytes."""
    return b64u_encode(crypto.random_bytes(16))


def packet_digest(hb: bytes, sig: bytes) -> bytes:
    """pd = H64(PAE("hp1/packet-digest/v1", HB, SIG))."""
    return crypto.h64(crypto.pae(DIGEST_LABEL, hb, sig))


def _derive(content_key: bytes, label: str, node: str, kid: str, pid: str) -> bytes:
    return crypto.kh32(content_key, crypto.pae(label, node, kid, pid))


def pad(inner: bytes) -> bytes:
    """I || 0x80 || 0x00*k, smallest k making the length a multiple of 4096."""
    k = -(len(inner) + 1) % PAD_BLOCK
    return inner + b"\x80" + bytes(k)


def unpad(padded: bytes) -> bytes:
    """Reverse :func:`pad`, refusing anything but minimal padding.

    Raises:
        InvalidPacket: BAD_PADDING.
    """
    if not padded or len(padded) % PAD_BLOCK:
        raise InvalidPacket(Reason.BAD_PADDING, "padded length is not a multiple of 4096")
    stripped = padded.rstrip(b"\x00")
    if len(padded) - len(stripped) >= PAD_BLOCK or not stripped or stripped[-1] != 0x80:
        raise InvalidPacket(Reason.BAD_PADDING, "padding marker missing or padding too long")
    return stripped[:-1]


def seal(
    identity: Identity,
    recipients: Sequence[Recipient],
    schema_id: str,
    body: dict[str, Any],
    *,
    log: LogPosition | None = None,
    ttl_ms: int = DEFAULT_TTL_MS,
    now: int | None = None,
    rand: Rand | None = None,
    validator: BodyValidator,
    pid: str | None = None,
    body_cj: bytes | None = None,
    attachments: Sequence[AttachmentItem] = (),
) -> SealedPacket:
    """Validate `body` against `schema_id` and seal it to 1..64 recipients.

    `log` is the sender's audit position after the disclosure entry (the
    genesis position for sealers without a log). `pid` may be chosen by the
    caller (see :func:`new_pid`) so the disclosure entry can name it first. `now` and `rand` are
    injectable so known-answer vectors are reproducible.

    Raises:
        UnknownSchema, SchemaInvalid: the body does not fit.
        SealError: bad recipients or TTL.
        EncodingError: the body is not representable in canonical JSON.
    """
    validator.validate(schema_id, body)
    return _seal_at(
        now if now is not None else now_ms(),
        rand or crypto.random_bytes,
        identity,
        recipients,
        schema_id,
        body,
        log or LogPosition.genesis(),
        ttl_ms,
        pid=pid,
        body_cj=body_cj,
        attachments=attachments,
    )


def _seal_at(
    now: int,
    rand: Rand,
    identity: Identity,
    recipients: Sequence[Recipient],
    schema_id: str,
    body: dict[str, Any],
    log: LogPosition,
    ttl_ms: int,
    *,
    pid: str | None = None,
    body_cj: bytes | None = None,
    attachments: Sequence[AttachmentItem] = (),
) -> SealedPacket:
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise SealError(f"a packet has 1 to {MAX_RECIPIENTS} recipients")
    nodes = [r.node for r in recipients]
    if len(set(nodes)) != len(nodes):
        raise SealError("recipient node ids must be distinct")
    if not 0 < ttl_ms <= MAX_TTL_MS:
        raise SealError("ttl must be more than 0 and at most 30 days")
    if len(attachments) > MAX_ATTACHMENTS:
        raise SealError(f"a packet carries at most {MAX_ATTACHMENTS} attachments")
    if len({a.aid for a in attachments}) != len(attachments):
        raise SealError("attachment ids must be distinct")
    # CJ of {"att"?, "body", "log", "schema"} (keys in that order), composed so a
    # caller that already holds the body's CJ bytes does not encode it again.
    # `att` is absent without attachments (never an empty array).
    att = b'"att":' + cj_dumps([a.to_json() for a in attachments]) + b"," if attachments else b""
    inner = b"".join(
        (
            b"{",
            att,
            b'"body":',
            cj_dumps(body) if body_cj is None else body_cj,
            b',"log":',
            cj_dumps(log.to_json()),
            b',"schema":',
            cj_dumps(schema_id),
            b"}",
        )
    )
    padded = pad(inner)
    if len(padded) + 16 > MAX_CIPHERTEXT_BYTES:
        raise SealError("body too large: the ciphertext would exceed 16 MiB")

    content_key = rand(32)
    ephemeral = crypto.BoxKey.from_secret(rand(32))
    nonce = rand(24)
    if pid is None:
        pid = b64u_encode(rand(16))

    ck = _derive(content_key, CONTENT_KEY_LABEL, identity.node, identity.kid, pid)
    kc = _derive(content_key, COMMITMENT_LABEL, identity.node, identity.kid, pid)
    ct = crypto.secretbox_seal(padded, nonce, ck)
    to = [
        {
            "node": r.node,
            "kid": r.kid,
            "wk": b64u_encode(crypto.box_wrap(content_key, i, r.public_key, ephemeral)),
        }
        for i, r in enumerate(recipients)
    ]
    hb = cj_dumps(
        {
            "typ": "hp1.packet",
            "v": 1,
            "pid": pid,
            "iat": now,
            "exp": now + ttl_ms,
            "from": {"node": identity.node, "kid": identity.kid},
            "to": to,
            "epk": b64u_encode(ephemeral.public_key),
            "kc": b64u_encode(kc),
            "n": b64u_encode(nonce),
            "clen": len(ct),
            "ch": b64u_encode(crypto.h64(ct)),
        }
    )
    sig = identity.key.sign(crypto.pae(PACKET_LABEL, hb))
    wire = dump_wire_object(
        {"hp1": b64u_encode(hb), "sig": b64u_encode(sig), "ct": b64u_encode(ct)}
    )
    return SealedPacket(
        pid=pid,
        wire=wire,
        hb=hb,
        sig=sig,
        pd=packet_digest(hb, sig),
        iat=now,
        exp=now + ttl_ms,
        to=tuple(nodes),
    )
