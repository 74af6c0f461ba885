"""hp1 receipts (docs/protocol.md section 4): the receiver's signed answer to a packet,
committing to its audit-log position after recording it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handover.protocol import crypto
from handover.protocol.auditchain import LogPosition
from handover.protocol.canonical import (
    b64u_decode,
    b64u_encode,
    cj_dumps,
    cj_loads,
    dump_wire_object,
    parse_wire_object,
)
from handover.protocol.errors import EncodingError, InvalidReceipt, RejectCode
from handover.protocol.keyset import Keyset, is_int, is_node_id
from handover.protocol.opening import _b64_field
from handover.protocol.packet import RECEIPT_LABEL, Identity, Rand, Status
from handover.protocol.timeutil import SKEW_MS


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
    recipient: str,
    keyset_for: Callable[[str], Keyset | None],
    now: int,
) -> Receipt:
    """The sender's receipt check (section 4) for the delivery to `recipient`:
    the signer is that recipient, to is us, pid and pd match our outbox record,
    and the signature is valid under the signer's keyset. A receipt signed by
    another recipient of the same packet is refused for this delivery.

    Raises:
        InvalidReceipt: naming the rule broken.
    """
    receipt, sig = parse_receipt(wire)
    if receipt.signer != recipient:
        raise InvalidReceipt(
            f"receipt signer {receipt.signer} is not {recipient}, whose delivery it answers"
        )
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
