"""Receipts (docs/protocol.md section 4): the sender's checks, one defect per test."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import NOW, Node, box_entry, make_node, receive, seal_to, sig_entry
from handover.protocol import crypto
from handover.protocol.auditchain import LogPosition
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps, dump_wire_object
from handover.protocol.errors import InvalidPacket, InvalidReceipt, Reason, RejectCode
from handover.protocol.packet import RECEIPT_LABEL, SealedPacket
from handover.protocol.receipt import Receipt, make_receipt, parse_receipt, verify_receipt
from handover.protocol.timeutil import DAY_MS, SKEW_MS

L = 2**252 + 27742317777372353535851937790883648493
HEAD = bytes(range(32))
RID = b64u_encode(bytes(16))


@pytest.fixture
def packet(alice: Node, bob: Node, carol: Node) -> SealedPacket:
    return seal_to(alice, bob, carol)


def receipt_of(
    signer: Node,
    packet: SealedPacket,
    to: str,
    *,
    status: Any = "accepted",
    reason: RejectCode | None = None,
    now: int = NOW,
) -> bytes:
    return make_receipt(
        signer.identity,
        pid=packet.pid,
        pd=packet.pd,
        to=to,
        status=status,
        reason=reason,
        log=LogPosition(3, HEAD),
        now=now,
    )


def rb_body(signer: Node, packet: SealedPacket, sender: str, **changes: Any) -> dict[str, Any]:
    """A receipt body as a dict; a change to None removes the member."""
    body: dict[str, Any] = {
        "typ": "hp1.receipt",
        "v": 1,
        "rid": RID,
        "pid": packet.pid,
        "pd": b64u_encode(packet.pd),
        "from": {"node": signer.name, "kid": signer.identity.kid},
        "to": sender,
        "status": "accepted",
        "iat": NOW,
        "log": {"seq": 3, "head": b64u_encode(HEAD)},
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def sign_rb(rb: dict[str, Any] | bytes, key: crypto.SigningKey) -> bytes:
    """Sign receipt bytes honestly, so only the defect under test remains."""
    raw = rb if isinstance(rb, bytes) else cj_dumps(rb)
    sig = key.sign(crypto.pae(RECEIPT_LABEL, raw))
    return dump_wire_object({"hp1r": b64u_encode(raw), "sig": b64u_encode(sig)})


def verify(
    wire: bytes,
    packet: SealedPacket,
    alice: Node,
    *keysets: Node,
    now: int = NOW,
    recipient: str | None = None,
) -> Receipt:
    """Verify as the sender would for the delivery to `recipient` (default: the
    first node given that the packet was addressed to)."""
    table = {n.name: n.keyset for n in keysets}
    if recipient is None:
        recipient = next((n.name for n in keysets if n.name in packet.to), packet.to[0])
    return verify_receipt(
        wire,
        sender=alice.name,
        pid=packet.pid,
        pd=packet.pd,
        recipient=recipient,
        keyset_for=table.get,
        now=now,
    )


# --- good receipts -------------------------------------------------------------------


def test_accepted_receipt_round_trip(
    packet: SealedPacket, alice: Node, bob: Node, carol: Node
) -> None:
    for node in (bob, carol):
        r = verify(
            receipt_of(node, packet, alice.name), packet, alice, bob, carol, recipient=node.name
        )
        assert (r.signer, r.to, r.pid, r.pd, r.status, r.reason) == (
            node.name,
            alice.name,
            packet.pid,
            packet.pd,
            "accepted",
            None,
        )
        assert r.log == LogPosition(3, HEAD)


@pytest.mark.parametrize("code", list(RejectCode))
def test_rejected_receipt_round_trip(
    packet: SealedPacket, alice: Node, bob: Node, code: RejectCode
) -> None:
    wire = receipt_of(bob, packet, alice.name, status="rejected", reason=code)
    r = verify(wire, packet, alice, bob)
    assert (r.status, r.reason) == ("rejected", code)


def test_receipt_after_receiving_the_packet(packet: SealedPacket, alice: Node, bob: Node) -> None:
    opened = receive(bob, packet.wire, alice)
    wire = make_receipt(
        bob.identity,
        pid=opened.pid,
        pd=opened.pd,
        to=opened.sender,
        status="accepted",
        reason=None,
        log=LogPosition(1, HEAD),
        now=NOW,
    )
    assert verify(wire, packet, alice, bob).pd == packet.pd


def test_make_receipt_requires_reason_exactly_when_rejected(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    with pytest.raises(ValueError, match="reason is given exactly when the status is rejected"):
        receipt_of(bob, packet, alice.name, status="rejected")
    with pytest.raises(ValueError, match="reason is given exactly when the status is rejected"):
        receipt_of(bob, packet, alice.name, reason=RejectCode.NOT_PERMITTED)


# --- the sender's checks -----------------------------------------------------------------


def test_signer_not_a_recipient(packet: SealedPacket, alice: Node, mallory: Node) -> None:
    wire = receipt_of(mallory, packet, alice.name)
    with pytest.raises(
        InvalidReceipt, match=r"receipt signer mallory\.example is not probation\.bob\.example"
    ):
        verify(wire, packet, alice, mallory)


def test_receipt_to_another_node(packet: SealedPacket, alice: Node, bob: Node) -> None:
    wire = receipt_of(bob, packet, "other.example")
    with pytest.raises(InvalidReceipt, match="receipt is addressed to another node"):
        verify(wire, packet, alice, bob)


def test_receipt_pid_mismatch(packet: SealedPacket, alice: Node, bob: Node) -> None:
    wire = sign_rb(rb_body(bob, packet, alice.name, pid=RID), bob.sig)
    with pytest.raises(InvalidReceipt, match="receipt pid or pd does not match the packet"):
        verify(wire, packet, alice, bob)


def test_receipt_pd_mismatch(packet: SealedPacket, alice: Node, bob: Node) -> None:
    wire = sign_rb(rb_body(bob, packet, alice.name, pd=b64u_encode(bytes(64))), bob.sig)
    with pytest.raises(InvalidReceipt, match="receipt pid or pd does not match the packet"):
        verify(wire, packet, alice, bob)


def test_receipt_for_another_packet(packet: SealedPacket, alice: Node, bob: Node) -> None:
    other = seal_to(alice, bob)
    wire = receipt_of(bob, other, alice.name)
    with pytest.raises(InvalidReceipt, match="receipt pid or pd does not match the packet"):
        verify(wire, packet, alice, bob)


def test_reason_missing_on_rejected(packet: SealedPacket, alice: Node, bob: Node) -> None:
    wire = sign_rb(rb_body(bob, packet, alice.name, status="rejected"), bob.sig)
    with pytest.raises(InvalidReceipt, match="receipt has missing or extra members"):
        verify(wire, packet, alice, bob)


def test_reason_present_on_accepted(packet: SealedPacket, alice: Node, bob: Node) -> None:
    wire = sign_rb(rb_body(bob, packet, alice.name, reason="not_permitted"), bob.sig)
    with pytest.raises(InvalidReceipt, match="receipt has missing or extra members"):
        verify(wire, packet, alice, bob)


@pytest.mark.parametrize("reason", ["invalid_packet", "bad_signature", "", "UNKNOWN_SCHEMA"])
def test_unknown_reason_code(packet: SealedPacket, alice: Node, bob: Node, reason: str) -> None:
    rb = rb_body(bob, packet, alice.name, status="rejected", reason=reason)
    with pytest.raises(InvalidReceipt, match="receipt reason code is unknown"):
        verify(sign_rb(rb, bob.sig), packet, alice, bob)


def test_unknown_status(packet: SealedPacket, alice: Node, bob: Node) -> None:
    rb = rb_body(bob, packet, alice.name, status="received")
    with pytest.raises(InvalidReceipt, match="receipt status is unknown"):
        verify(sign_rb(rb, bob.sig), packet, alice, bob)


def test_log_seq_0(packet: SealedPacket, alice: Node, bob: Node) -> None:
    rb = rb_body(bob, packet, alice.name, log={"seq": 0, "head": b64u_encode(bytes(32))})
    with pytest.raises(InvalidReceipt, match="receipt log seq must be at least 1"):
        verify(sign_rb(rb, bob.sig), packet, alice, bob)


@pytest.mark.parametrize(
    "log",
    [
        {"seq": 0, "head": b64u_encode(HEAD)},
        {"seq": 1, "head": b64u_encode(bytes(32))},
        {"seq": -1, "head": b64u_encode(HEAD)},
        {"seq": 1, "head": b64u_encode(HEAD[:31])},
        {"seq": 1, "head": b64u_encode(HEAD) + "="},
        {"seq": 1},
        {"seq": 1, "head": b64u_encode(HEAD), "n": 1},
    ],
)
def test_malformed_log_position(
    packet: SealedPacket, alice: Node, bob: Node, log: dict[str, Any]
) -> None:
    rb = rb_body(bob, packet, alice.name, log=log)
    with pytest.raises(InvalidReceipt, match="receipt log is malformed"):
        verify(sign_rb(rb, bob.sig), packet, alice, bob)


def test_tampered_signature(packet: SealedPacket, alice: Node, bob: Node) -> None:
    wire = json.loads(receipt_of(bob, packet, alice.name))
    sig = bytearray(b64u_decode(wire["sig"]))
    sig[5] ^= 0x10
    wire["sig"] = b64u_encode(bytes(sig))
    with pytest.raises(InvalidReceipt, match="receipt signature does not verify"):
        verify(json.dumps(wire).encode(), packet, alice, bob)


def test_malleated_signature(packet: SealedPacket, alice: Node, bob: Node) -> None:
    wire = json.loads(receipt_of(bob, packet, alice.name))
    sig = b64u_decode(wire["sig"])
    s = int.from_bytes(sig[32:], "little") + L
    wire["sig"] = b64u_encode(sig[:32] + s.to_bytes(32, "little"))
    with pytest.raises(InvalidReceipt, match="receipt signature does not verify"):
        verify(json.dumps(wire).encode(), packet, alice, bob)


def test_tampered_body(packet: SealedPacket, alice: Node, bob: Node) -> None:
    good = json.loads(receipt_of(bob, packet, alice.name))
    rb = cj_dumps(rb_body(bob, packet, alice.name, iat=NOW + 1))
    wire = dump_wire_object({"hp1r": b64u_encode(rb), "sig": good["sig"]})
    with pytest.raises(InvalidReceipt, match="receipt signature does not verify"):
        verify(wire, packet, alice, bob)


def test_receipt_from_another_recipient_is_refused_for_bobs_delivery(
    packet: SealedPacket, alice: Node, bob: Node, carol: Node
) -> None:
    """docs/protocol.md section 4: a receipt counts only for the delivery to its signer."""
    carols = receipt_of(carol, packet, alice.name)
    assert verify(carols, packet, alice, bob, carol, recipient=carol.name).signer == carol.name
    with pytest.raises(InvalidReceipt, match=r"is not probation\.bob\.example"):
        verify(carols, packet, alice, bob, carol, recipient=bob.name)


def test_receipt_signed_by_another_recipient_in_bobs_name(
    packet: SealedPacket, alice: Node, bob: Node, carol: Node
) -> None:
    wire = sign_rb(rb_body(bob, packet, alice.name), carol.sig)
    with pytest.raises(InvalidReceipt, match="receipt signature does not verify"):
        verify(wire, packet, alice, bob, carol)


def test_receipt_signed_with_the_packet_label(packet: SealedPacket, alice: Node, bob: Node) -> None:
    rb = cj_dumps(rb_body(bob, packet, alice.name))
    sig = bob.sig.sign(crypto.pae("hp1/packet/v1", rb))
    wire = dump_wire_object({"hp1r": b64u_encode(rb), "sig": b64u_encode(sig)})
    with pytest.raises(InvalidReceipt, match="receipt signature does not verify"):
        verify(wire, packet, alice, bob)


def test_receipt_from_unknown_or_box_kid(packet: SealedPacket, alice: Node, bob: Node) -> None:
    for kid in (bob.box_kid, bob.fingerprint, RID[:-1] + "A"):
        rb = rb_body(bob, packet, alice.name, **{"from": {"node": bob.name, "kid": kid}})
        with pytest.raises(
            InvalidReceipt, match="receipt signing key is unknown or not valid at its iat"
        ):
            verify(sign_rb(rb, bob.sig), packet, alice, bob)


def test_receipt_from_a_retired_key_after_until(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    retired = make_node(
        bob.name,
        keys=[sig_entry(bob.sig, NOW - DAY_MS, "retired", NOW), box_entry(bob.box, NOW)],
    )
    on_time = receipt_of(bob, packet, alice.name, now=NOW)
    late = receipt_of(bob, packet, alice.name, now=NOW + 1)
    assert verify(on_time, packet, alice, retired, now=NOW + 1).iat == NOW
    with pytest.raises(InvalidReceipt, match="not valid at its iat"):
        verify(late, packet, alice, retired, now=NOW + 1)


def test_receipt_from_a_revoked_key(packet: SealedPacket, alice: Node, bob: Node) -> None:
    revoked = make_node(
        bob.name,
        keys=[sig_entry(bob.sig, NOW - DAY_MS, "revoked", NOW), box_entry(bob.box, NOW)],
    )
    with pytest.raises(InvalidReceipt, match="not valid at its iat"):
        verify(receipt_of(bob, packet, alice.name, now=NOW - 1), packet, alice, revoked)


def test_future_dated_receipt(packet: SealedPacket, alice: Node, bob: Node) -> None:
    assert verify(receipt_of(bob, packet, alice.name, now=NOW + SKEW_MS), packet, alice, bob)
    with pytest.raises(InvalidReceipt, match="receipt is dated in the future"):
        verify(receipt_of(bob, packet, alice.name, now=NOW + SKEW_MS + 1), packet, alice, bob)


def test_no_keyset_for_the_signer(packet: SealedPacket, alice: Node, bob: Node) -> None:
    with pytest.raises(InvalidReceipt, match=r"no accepted keyset for probation\.bob\.example"):
        verify(receipt_of(bob, packet, alice.name), packet, alice)


# --- confusion between wire objects ---------------------------------------------------------


def test_packet_presented_as_receipt(packet: SealedPacket, alice: Node, bob: Node) -> None:
    with pytest.raises(InvalidReceipt, match="receipt is not well-formed: wire object"):
        parse_receipt(packet.wire)
    with pytest.raises(InvalidReceipt, match="receipt is not well-formed: wire object"):
        verify(packet.wire, packet, alice, bob)


def test_packet_header_signed_as_a_receipt(packet: SealedPacket, alice: Node, bob: Node) -> None:
    # Even with the receipt label and member names, a packet header is not a receipt.
    with pytest.raises(InvalidReceipt, match="receipt has missing or extra members"):
        verify(sign_rb(packet.hb, bob.sig), packet, alice, bob)


def test_receipt_presented_as_packet(packet: SealedPacket, alice: Node, bob: Node) -> None:
    with pytest.raises(InvalidPacket) as info:
        receive(bob, receipt_of(bob, packet, alice.name), alice, bob)
    assert str(info.value) == "invalid_packet"
    assert info.value.reason is Reason.MALFORMED_WIRE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"typ": "hp1.packet"}, r"not an hp1 receipt \(typ or v\)"),
        ({"typ": "hp1.checkpoint"}, r"not an hp1 receipt \(typ or v\)"),
        ({"v": 2}, r"not an hp1 receipt \(typ or v\)"),
        ({"v": True}, r"not an hp1 receipt \(typ or v\)"),
        ({"extra": 1}, "receipt has missing or extra members"),
        ({"rid": None}, "receipt has missing or extra members"),
        ({"rid": RID + "="}, "receipt rid, pid or pd malformed"),
        ({"pd": b64u_encode(bytes(32))}, "receipt rid, pid or pd malformed"),
        ({"to": "Alice"}, "receipt node ids or kid malformed"),
        ({"from": {"node": "bob.example"}}, "receipt from has missing or extra members"),
        ({"iat": "now"}, "receipt iat is not an integer"),
    ],
)
def test_malformed_receipt_body(
    packet: SealedPacket, alice: Node, bob: Node, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidReceipt, match=message):
        parse_receipt(sign_rb(rb_body(bob, packet, alice.name, **change), bob.sig))


def _raw_rb(packet: SealedPacket, bob: Node, to: str, old: bytes, new: bytes) -> bytes:
    rb = cj_dumps(rb_body(bob, packet, to))
    assert old in rb
    return rb.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (b'"status":"', b'"status":"\\ud800', "unpaired surrogate in string"),
        (b'"status":"', b'"status":"\\udfff', "unpaired surrogate in string"),
        (b'"v":1', b'"v":' + b"[" * 32 + b"1" + b"]" * 32, "nesting deeper than 32"),
        (b'"v":1', b'"v":1,"v":1', "duplicate key 'v'"),
        (b'"v":1', b'"v":1.0', "floats are not allowed"),
        (b'"iat":', b'"iat": ', "input is not canonical JSON"),
        (b'"status":"accepted"', b'"status":"\\u0061ccepted"', "input is not canonical JSON"),
    ],
)
def test_non_cj_receipt_bytes(
    packet: SealedPacket, alice: Node, bob: Node, old: bytes, new: bytes, message: str
) -> None:
    wire = sign_rb(_raw_rb(packet, bob, alice.name, old, new), bob.sig)
    with pytest.raises(InvalidReceipt, match=f"receipt is not well-formed: {message}"):
        verify(wire, packet, alice, bob)


def test_receipt_wire_padding_and_duplicates(packet: SealedPacket, alice: Node, bob: Node) -> None:
    good = json.loads(receipt_of(bob, packet, alice.name))
    for bad in (
        json.dumps(dict(good, sig=good["sig"] + "==")).encode(),
        json.dumps(dict(good, hp1r=good["hp1r"] + "=")).encode(),
        receipt_of(bob, packet, alice.name)[:-1] + b',"sig":"' + good["sig"].encode() + b'"}',
    ):
        with pytest.raises(InvalidReceipt, match="receipt is not well-formed"):
            verify(bad, packet, alice, bob)


def test_receipt_wire_may_have_whitespace(packet: SealedPacket, alice: Node, bob: Node) -> None:
    good = json.loads(receipt_of(bob, packet, alice.name))
    assert verify(json.dumps(good, indent=2).encode(), packet, alice, bob).signer == bob.name
