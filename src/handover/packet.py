"""hp1 packets and receipts (PROTOCOL.md sections 3 and 4).

Sending: :func:`seal`. Receiving runs the spec's checks in order, in three
stages so a node can do the replay lookup (step 3) in its database:

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

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from handover import crypto
from handover.auditchain import LogPosition
from handover.canonical import (
    b64u_decode,
    b64u_encode,
    cj_dumps,
    cj_loads,
    dump_wire_object,
    parse_wire_object,
)
from handover.errors import (
    EncodingError,
    InvalidPacket,
    InvalidReceipt,
    Reason,
    RejectCode,
    Rejected,
    SchemaInvalid,
    SealError,
    UnknownSchema,
)
from handover.keyset import KeyEntry, Keyset, is_int, is_node_id
from handover.timeutil import DAY_MS, SKEW_MS, now_ms

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


def _default_validator() -> BodyValidator:
    from handover.schemas import default_registry

    return default_registry()


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
    validator: BodyValidator | None = None,
    pid: str | None = None,
    body_cj: bytes | None = None,
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
    (validator or _default_validator()).validate(schema_id, body)
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
) -> SealedPacket:
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise SealError(f"a packet has 1 to {MAX_RECIPIENTS} recipients")
    nodes = [r.node for r in recipients]
    if len(set(nodes)) != len(nodes):
        raise SealError("recipient node ids must be distinct")
    if not 0 < ttl_ms <= MAX_TTL_MS:
        raise SealError("ttl must be more than 0 and at most 30 days")
    # CJ of {"body", "log", "schema"} (keys in that order), composed so a caller
    # that already holds the body's CJ bytes does not encode it again.
    inner = b"".join(
        (
            b'{"body":',
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


# --- receiving ---------------------------------------------------------------


@dataclass(frozen=True)
class UnverifiedPacket:
    """Steps 1-2 passed: a well-formed header whose signature is NOT yet checked."""

    unverified_header: dict[str, Any]
    hb: bytes
    sig: bytes
    ct_text: str
    pd: bytes
    wire: bytes

    @property
    def sender(self) -> str:
        node: str = self.unverified_header["from"]["node"]
        return node

    @property
    def pid(self) -> str:
        pid: str = self.unverified_header["pid"]
        return pid


@dataclass(frozen=True)
class StoredReplay:
    """What a receiver kept for (sender, pid): the digest and the receipt it gave."""

    pd: bytes
    receipt: bytes


@dataclass(frozen=True)
class OwnBoxKey:
    """One of the receiver's own x25519 keys with its keyset entry."""

    key: crypto.BoxKey
    entry: KeyEntry


@dataclass(frozen=True)
class ReceiverKeys:
    node: str
    box_keys: Mapping[str, OwnBoxKey]


@dataclass(frozen=True)
class Opened:
    """A packet that passed steps 1-8 (and step 9 unless `rejection` is set)."""

    pid: str
    pd: bytes
    sender: str
    sender_kid: str
    iat: int
    exp: int
    to: tuple[str, ...]
    schema: str
    body: dict[str, Any]
    log: LogPosition
    hb: bytes
    wire: bytes
    keyset: Keyset
    rejection: Rejected | None = None
    body_cj: bytes = b""


_HEADER_MEMBERS = {"typ", "v", "pid", "iat", "exp", "from", "to", "epk", "kc", "n", "clen", "ch"}


def _b64_field(value: object, length: int) -> bool:
    if not isinstance(value, str) or len(value) != b64u_length(length):
        return False
    try:
        b64u_decode(value, length)
    except EncodingError:
        return False
    return True


def _check_header(h: object) -> dict[str, Any]:
    def bad(what: str) -> InvalidPacket:
        return InvalidPacket(Reason.BAD_HEADER, what)

    if not isinstance(h, dict) or set(h) != _HEADER_MEMBERS:
        raise bad("header members")
    if h["typ"] != "hp1.packet":
        raise bad("typ")
    if not is_int(h["v"]) or h["v"] != 1:
        raise bad("v")
    if not _b64_field(h["pid"], 16):
        raise bad("pid")
    if not is_int(h["iat"]) or not is_int(h["exp"]):
        raise bad("iat/exp")
    frm = h["from"]
    if not isinstance(frm, dict) or set(frm) != {"node", "kid"}:
        raise bad("from members")
    if not is_node_id(frm["node"]) or not _b64_field(frm["kid"], 16):
        raise bad("from node/kid")
    to = h["to"]
    if not isinstance(to, list) or not 1 <= len(to) <= MAX_RECIPIENTS:
        raise bad("to count")
    for entry in to:
        if not isinstance(entry, dict) or set(entry) != {"node", "kid", "wk"}:
            raise bad("to entry members")
        if not is_node_id(entry["node"]) or not _b64_field(entry["kid"], 16):
            raise bad("to entry node/kid")
        if not _b64_field(entry["wk"], 48):
            raise bad("to entry wk")
    if len({e["node"] for e in to}) != len(to):
        raise bad("to node ids not distinct")
    if not _b64_field(h["epk"], 32) or not _b64_field(h["kc"], 32):
        raise bad("epk/kc")
    if not _b64_field(h["n"], 24):
        raise bad("n")
    if not is_int(h["clen"]) or not 0 <= h["clen"] <= MAX_CIPHERTEXT_BYTES:
        raise bad("clen")
    if not _b64_field(h["ch"], 64):
        raise bad("ch")
    return h


def parse_packet(wire: bytes) -> UnverifiedPacket:
    """Receive steps 1-2: size limits, strict wire object, canonical header.

    Raises:
        InvalidPacket: TOO_LARGE, MALFORMED_WIRE, BAD_ENCODING or BAD_HEADER.
    """
    if len(wire) > MAX_REQUEST_BYTES:
        raise InvalidPacket(Reason.TOO_LARGE, "request body over 22.5 MiB")
    try:
        outer = parse_wire_object(wire, ("hp1", "sig", "ct"))
    except EncodingError as exc:
        raise InvalidPacket(Reason.MALFORMED_WIRE, str(exc)) from exc
    if len(outer["hp1"]) > b64u_length(MAX_HEADER_BYTES):
        raise InvalidPacket(Reason.TOO_LARGE, "header over 64 KiB")
    if len(outer["ct"]) > b64u_length(MAX_CIPHERTEXT_BYTES):
        raise InvalidPacket(Reason.TOO_LARGE, "ciphertext over 16 MiB")
    try:
        hb = b64u_decode(outer["hp1"])
        sig = b64u_decode(outer["sig"], 64)
    except EncodingError as exc:
        raise InvalidPacket(Reason.BAD_ENCODING, str(exc)) from exc
    try:
        unverified_header = cj_loads(hb)
    except EncodingError as exc:
        raise InvalidPacket(Reason.BAD_HEADER, f"header is not canonical JSON: {exc}") from exc
    header = _check_header(unverified_header)
    return UnverifiedPacket(
        unverified_header=header,
        hb=hb,
        sig=sig,
        ct_text=outer["ct"],
        pd=packet_digest(hb, sig),
        wire=wire,
    )


def check_replay(packet: UnverifiedPacket, stored: StoredReplay | None) -> bytes | None:
    """Step 3: the stored receipt if this exact packet was seen, None if new.

    Raises:
        InvalidPacket: REPLAY_CONFLICT (same sender and pid, other content).
    """
    if stored is None:
        return None
    if crypto.constant_time_equal(stored.pd, packet.pd):
        return stored.receipt
    raise InvalidPacket(Reason.REPLAY_CONFLICT, "pid already received with another digest")


def verify_signature(packet: UnverifiedPacket, keyset: Keyset | None) -> Keyset:
    h = packet.unverified_header
    if keyset is None or keyset.node != packet.sender:
        raise InvalidPacket(Reason.UNKNOWN_SENDER, "sender is not a pinned peer")
    entry = keyset.key(h["from"]["kid"])
    if entry is None or entry.type != "ed25519-sig":
        raise InvalidPacket(Reason.UNKNOWN_SIGNING_KEY, "from.kid is not a signing key of sender")
    if not entry.verifies_at(h["iat"]):
        raise InvalidPacket(Reason.KEY_NOT_VALID, f"signing key is {entry.status} at iat")
    if not crypto.ed25519_verify(entry.public_key, crypto.pae(PACKET_LABEL, packet.hb), packet.sig):
        raise InvalidPacket(Reason.BAD_SIGNATURE, "packet signature does not verify")
    return keyset


def check_times(h: dict[str, Any], now: int) -> None:
    if h["iat"] > now + SKEW_MS:
        raise InvalidPacket(Reason.NOT_YET_VALID, "iat is in the future")
    if now > h["exp"]:
        raise InvalidPacket(Reason.EXPIRED, "packet has expired")
    if not 0 < h["exp"] - h["iat"] <= MAX_TTL_MS:
        raise InvalidPacket(Reason.BAD_LIFETIME, "lifetime is not within (0, 30 days]")


def _decrypt(
    packet: UnverifiedPacket, receiver: ReceiverKeys, now: int
) -> tuple[str, dict[str, Any], LogPosition, bytes]:
    h = packet.unverified_header
    # Step 6: exactly one entry (node ids are distinct) names us, with a key we accept.
    index = next((i for i, e in enumerate(h["to"]) if e["node"] == receiver.node), None)
    if index is None:
        raise InvalidPacket(Reason.NOT_A_RECIPIENT, "this node is not in to")
    own = receiver.box_keys.get(h["to"][index]["kid"])
    if own is None or not own.entry.decrypts_at(now):
        raise InvalidPacket(Reason.UNKNOWN_RECIPIENT_KEY, "to.kid is not an accepted key of ours")
    # Step 7.
    try:
        ct = b64u_decode(packet.ct_text)
    except EncodingError as exc:
        raise InvalidPacket(Reason.BAD_ENCODING, f"ct: {exc}") from exc
    if len(ct) != h["clen"] or not crypto.constant_time_equal(crypto.h64(ct), b64u_decode(h["ch"])):
        raise InvalidPacket(Reason.CIPHERTEXT_MISMATCH, "clen or ch does not match ct")
    # Step 8.
    try:
        content_key = crypto.box_unwrap(
            b64u_decode(h["to"][index]["wk"]), index, b64u_decode(h["epk"]), own.key
        )
    except crypto.CryptoFailure as exc:
        raise InvalidPacket(Reason.UNWRAP_FAILED, "wrapped key does not open") from exc
    node, kid, pid = h["from"]["node"], h["from"]["kid"], h["pid"]
    kc = _derive(content_key, COMMITMENT_LABEL, node, kid, pid)
    if not crypto.constant_time_equal(kc, b64u_decode(h["kc"])):
        raise InvalidPacket(Reason.KEY_COMMITMENT_MISMATCH, "kc does not match the content key")
    ck = _derive(content_key, CONTENT_KEY_LABEL, node, kid, pid)
    try:
        padded = crypto.secretbox_open(ct, b64u_decode(h["n"]), ck)
    except crypto.CryptoFailure as exc:
        raise InvalidPacket(Reason.DECRYPT_FAILED, "content does not decrypt") from exc
    inner_bytes = unpad(padded)
    try:
        inner = cj_loads(inner_bytes)
        if not isinstance(inner, dict) or set(inner) != {"schema", "body", "log"}:
            raise EncodingError("payload members")
        if not isinstance(inner["schema"], str) or not isinstance(inner["body"], dict):
            raise EncodingError("payload schema/body types")
        log = LogPosition.from_json(inner["log"])
    except EncodingError as exc:
        raise InvalidPacket(Reason.BAD_PAYLOAD, str(exc)) from exc
    # The body's own CJ bytes, for storing without encoding it again: the last
    # top-level `,"log":` ends it (inside strings a quote is always escaped).
    body_cj = inner_bytes[len(b'{"body":') : inner_bytes.rindex(b',"log":')]
    return inner["schema"], inner["body"], log, body_cj


def open_parsed(
    packet: UnverifiedPacket,
    *,
    receiver: ReceiverKeys,
    sender_keyset: Keyset | None,
    now: int,
    validator: BodyValidator | None = None,
    permit: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> Opened:
    """Receive steps 4-9 on a packet that passed steps 1-3.

    `permit(sender, schema_id, body)` raises :class:`Rejected` when the
    receiver's policy refuses the packet.

    Raises:
        InvalidPacket: steps 4-8, with the precise `reason` for local logs.
    """
    keyset = verify_signature(packet, sender_keyset)
    h = packet.unverified_header  # signature verified from here on
    check_times(h, now)
    schema, body, log, body_cj = _decrypt(packet, receiver, now)
    rejection: Rejected | None = None
    try:
        (validator or _default_validator()).validate(schema, body)
        if permit is not None:
            permit(h["from"]["node"], schema, body)
    except UnknownSchema as exc:
        rejection = Rejected(RejectCode.UNKNOWN_SCHEMA, str(exc))
    except SchemaInvalid as exc:
        rejection = Rejected(RejectCode.SCHEMA_INVALID, str(exc))
    except Rejected as exc:
        rejection = exc
    return Opened(
        pid=h["pid"],
        pd=packet.pd,
        sender=h["from"]["node"],
        sender_kid=h["from"]["kid"],
        iat=h["iat"],
        exp=h["exp"],
        to=tuple(e["node"] for e in h["to"]),
        schema=schema,
        body=body,
        log=log,
        hb=packet.hb,
        wire=packet.wire,
        keyset=keyset,
        rejection=rejection,
        body_cj=body_cj,
    )


@dataclass(frozen=True)
class Replayed:
    """Step 3 found this exact packet: answer with the stored receipt."""

    pid: str
    sender: str
    pd: bytes
    receipt: bytes


def open_packet(
    wire: bytes,
    *,
    receiver: ReceiverKeys,
    peer_keyset: Callable[[str], Keyset | None],
    now: int,
    replay: Callable[[str, str], StoredReplay | None] | None = None,
    validator: BodyValidator | None = None,
    permit: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> Opened | Replayed:
    """Every receive check of PROTOCOL.md section 3, in order.

    Raises:
        InvalidPacket: steps 1-8 (opaque to the peer; `reason` is local).
    """
    packet = parse_packet(wire)
    stored = replay(packet.sender, packet.pid) if replay is not None else None
    receipt = check_replay(packet, stored)
    if receipt is not None:
        return Replayed(packet.pid, packet.sender, packet.pd, receipt)
    return open_parsed(
        packet,
        receiver=receiver,
        sender_keyset=peer_keyset(packet.sender),
        now=now,
        validator=validator,
        permit=permit,
    )


# --- receipts ----------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    rid: str
    pid: str
    pd: bytes
    signer: str
    kid: str
    to: str
    status: Status
    reason: RejectCode | None
    iat: int
    log: LogPosition
    rb: bytes
    wire: bytes


def make_receipt(
    identity: Identity,
    *,
    pid: str,
    pd: bytes,
    to: str,
    status: Status,
    reason: RejectCode | None,
    log: LogPosition,
    now: int,
    rand: Rand | None = None,
) -> bytes:
    """Sign a receipt; `log` is our audit position after the entry recording the packet."""
    if (status == "rejected") != (reason is not None):
        raise ValueError("reason is given exactly when the status is rejected")
    body: dict[str, Any] = {
        "typ": "hp1.receipt",
        "v": 1,
        "rid": b64u_encode((rand or crypto.random_bytes)(16)),
        "pid": pid,
        "pd": b64u_encode(pd),
        "from": {"node": identity.node, "kid": identity.kid},
        "to": to,
        "status": status,
        "iat": now,
        "log": log.to_json(),
    }
    if reason is not None:
        body["reason"] = reason.value
    rb = cj_dumps(body)
    sig = identity.key.sign(crypto.pae(RECEIPT_LABEL, rb))
    return dump_wire_object({"hp1r": b64u_encode(rb), "sig": b64u_encode(sig)})


_RECEIPT_MEMBERS = {"typ", "v", "rid", "pid", "pd", "from", "to", "status", "iat", "log"}


def parse_receipt(wire: bytes | str) -> tuple[Receipt, bytes]:
    """Parse a receipt's structure (signature NOT checked). Returns it and the signature.

    Raises:
        InvalidReceipt: naming the rule broken.
    """
    try:
        outer = parse_wire_object(wire, ("hp1r", "sig"))
        rb = b64u_decode(outer["hp1r"])
        sig = b64u_decode(outer["sig"], 64)
        r = cj_loads(rb)
    except EncodingError as exc:
        raise InvalidReceipt(f"receipt is not well-formed: {exc}") from exc
    if not isinstance(r, dict):
        raise InvalidReceipt("receipt is not an object")
    status = r.get("status")
    expected = _RECEIPT_MEMBERS | ({"reason"} if status == "rejected" else set())
    if set(r) != expected:
        raise InvalidReceipt("receipt has missing or extra members")
    if r["typ"] != "hp1.receipt" or not is_int(r["v"]) or r["v"] != 1:
        raise InvalidReceipt("not an hp1 receipt (typ or v)")
    if status not in ("accepted", "rejected"):
        raise InvalidReceipt("receipt status is unknown")
    reason = None
    if status == "rejected":
        try:
            reason = RejectCode(r["reason"])
        except ValueError as exc:
            raise InvalidReceipt("receipt reason code is unknown") from exc
    frm = r["from"]
    if not isinstance(frm, dict) or set(frm) != {"node", "kid"}:
        raise InvalidReceipt("receipt from has missing or extra members")
    if not is_node_id(frm["node"]) or not _b64_field(frm["kid"], 16) or not is_node_id(r["to"]):
        raise InvalidReceipt("receipt node ids or kid malformed")
    if not _b64_field(r["rid"], 16) or not _b64_field(r["pid"], 16) or not _b64_field(r["pd"], 64):
        raise InvalidReceipt("receipt rid, pid or pd malformed")
    if not is_int(r["iat"]):
        raise InvalidReceipt("receipt iat is not an integer")
    try:
        log = LogPosition.from_json(r["log"])
    except EncodingError as exc:
        raise InvalidReceipt(f"receipt log is malformed: {exc}") from exc
    if log.seq < 1:
        raise InvalidReceipt("receipt log seq must be at least 1")
    receipt = Receipt(
        rid=r["rid"],
        pid=r["pid"],
        pd=b64u_decode(r["pd"]),
        signer=frm["node"],
        kid=frm["kid"],
        to=r["to"],
        status=status,
        reason=reason,
        iat=r["iat"],
        log=log,
        rb=rb,
        wire=wire.encode("utf-8") if isinstance(wire, str) else wire,
    )
    return receipt, sig


def verify_receipt(
    wire: bytes | str,
    *,
    sender: str,
    pid: str,
    pd: bytes,
    recipients: Collection[str],
    keyset_for: Callable[[str], Keyset | None],
    now: int,
) -> Receipt:
    """The sender's receipt check (section 4): signer was a recipient, to is us,
    pid and pd match our outbox record, signature valid under the signer's keyset.

    Raises:
        InvalidReceipt: naming the rule broken.
    """
    receipt, sig = parse_receipt(wire)
    if receipt.signer not in recipients:
        raise InvalidReceipt(f"receipt signer {receipt.signer} was not a recipient")
    if receipt.to != sender:
        raise InvalidReceipt("receipt is addressed to another node")
    if receipt.pid != pid or not crypto.constant_time_equal(receipt.pd, pd):
        raise InvalidReceipt("receipt pid or pd does not match the packet")
    if receipt.iat > now + SKEW_MS:
        raise InvalidReceipt("receipt is dated in the future")
    keyset = keyset_for(receipt.signer)
    if keyset is None:
        raise InvalidReceipt(f"no accepted keyset for {receipt.signer}")
    entry = keyset.signing_key_for(receipt.kid, receipt.iat)
    if entry is None:
        raise InvalidReceipt("receipt signing key is unknown or not valid at its iat")
    if not crypto.ed25519_verify(entry.public_key, crypto.pae(RECEIPT_LABEL, receipt.rb), sig):
        raise InvalidReceipt("receipt signature does not verify")
    return receipt
