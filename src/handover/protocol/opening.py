"""Opening hp1 packets: every receive check of docs/protocol.md section 3, in order.

    unverified = parse_packet(wire)                # steps 1-2, computes pd
    stored = <look up (unverified.sender, unverified.pid)>
    check_replay(unverified, stored)               # step 3 (returns the stored receipt)
    opened = open_parsed(unverified, ...)          # steps 4-9

Steps 1-8 raise one opaque :class:`InvalidPacket` whose `reason` is for local
logs only; step 9 failures come back as `Opened.rejection`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from handover.protocol import crypto
from handover.protocol.attachments import AttachmentError, AttachmentItem, parse_att
from handover.protocol.auditchain import LogPosition
from handover.protocol.canonical import (
    b64u_decode,
    cj_dumps,
    cj_loads,
    parse_wire_object,
)
from handover.protocol.errors import (
    EncodingError,
    InvalidPacket,
    Reason,
    RejectCode,
    Rejected,
    SchemaInvalid,
    UnknownSchema,
)
from handover.protocol.keyset import KeyEntry, Keyset, is_int, is_node_id
from handover.protocol.packet import (
    COMMITMENT_LABEL,
    CONTENT_KEY_LABEL,
    MAX_CIPHERTEXT_BYTES,
    MAX_HEADER_BYTES,
    MAX_RECIPIENTS,
    MAX_REQUEST_BYTES,
    MAX_TTL_MS,
    PACKET_LABEL,
    BodyValidator,
    _derive,
    b64u_length,
    packet_digest,
    unpad,
)
from handover.protocol.timeutil import SKEW_MS

# Refusals at or after the signature check of step 4: the sender named in the
# header is authenticated (its pinned key signed these bytes).
AUTHENTICATED_REASONS = frozenset(
    {
        Reason.EXPIRED,
        Reason.NOT_YET_VALID,
        Reason.BAD_LIFETIME,
        Reason.NOT_A_RECIPIENT,
        Reason.UNKNOWN_RECIPIENT_KEY,
        Reason.CIPHERTEXT_MISMATCH,
        Reason.UNWRAP_FAILED,
        Reason.KEY_COMMITMENT_MISMATCH,
        Reason.DECRYPT_FAILED,
        Reason.BAD_PADDING,
        Reason.BAD_PAYLOAD,
    }
)


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
    attachments: tuple[AttachmentItem, ...] = ()


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


@dataclass(frozen=True)
class _Inner:
    schema: str
    body: dict[str, Any]
    log: LogPosition
    body_cj: bytes
    attachments: tuple[AttachmentItem, ...]


_INNER_MEMBERS = {"schema", "body", "log"}


def _decrypt(packet: UnverifiedPacket, receiver: ReceiverKeys, now: int) -> _Inner:
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
        if not isinstance(inner, dict) or set(inner) - {"att"} != _INNER_MEMBERS:
            raise EncodingError("payload members")
        if not isinstance(inner["schema"], str) or not isinstance(inner["body"], dict):
            raise EncodingError("payload schema/body types")
        log = LogPosition.from_json(inner["log"])
        attachments = parse_att(inner["att"]) if "att" in inner else ()
    except (EncodingError, AttachmentError) as exc:
        raise InvalidPacket(Reason.BAD_PAYLOAD, str(exc)) from exc
    if attachments:
        body_cj = cj_dumps(inner["body"])
    else:
        # The body's own CJ bytes, for storing without encoding it again: the last
        # top-level `,"log":` ends it (inside strings a quote is always escaped).
        body_cj = inner_bytes[len(b'{"body":') : inner_bytes.rindex(b',"log":')]
    return _Inner(inner["schema"], inner["body"], log, body_cj, attachments)


def open_parsed(
    packet: UnverifiedPacket,
    *,
    receiver: ReceiverKeys,
    sender_keyset: Keyset | None,
    now: int,
    validator: BodyValidator,
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
    inner = _decrypt(packet, receiver, now)
    schema, body = inner.schema, inner.body
    rejection: Rejected | None = None
    try:
        validator.validate(schema, body)
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
        log=inner.log,
        hb=packet.hb,
        wire=packet.wire,
        keyset=keyset,
        rejection=rejection,
        body_cj=inner.body_cj,
        attachments=inner.attachments,
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
    validator: BodyValidator,
    permit: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> Opened | Replayed:
    """Every receive check of docs/protocol.md section 3, in order.

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
