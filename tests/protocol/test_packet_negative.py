"""Every receive check of docs/protocol.md section 3, one defect per test.

Each test makes a packet with exactly one defect (or, in the step-order tests,
two), asserts it is refused with the opaque `invalid_packet`, and asserts the
precise local reason. Defects behind the signature are re-signed with the
sender's real key, so only the defect under test remains.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from conftest import (
    NOW,
    PERMISSIVE,
    SCHEMA_ID,
    DictReplay,
    Node,
    box_entry,
    example_body,
    make_node,
    receive,
    seal_to,
    seed,
    sig_entry,
)
from handover.protocol import crypto
from handover.protocol.auditchain import LogPosition
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps
from handover.protocol.errors import InvalidPacket, Reason, RejectCode, SealError
from handover.protocol.opening import Opened, Replayed
from handover.protocol.packet import (
    COMMITMENT_LABEL,
    CONTENT_KEY_LABEL,
    DEFAULT_TTL_MS,
    MAX_CIPHERTEXT_BYTES,
    MAX_HEADER_BYTES,
    MAX_REQUEST_BYTES,
    MAX_TTL_MS,
    PACKET_LABEL,
    SealedPacket,
    b64u_length,
    pad,
)
from handover.protocol.receipt import make_receipt
from handover.protocol.timeutil import DAY_MS, SKEW_MS

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
L = 2**252 + 27742317777372353535851937790883648493  # order of the Ed25519 base point

# --- helpers -------------------------------------------------------------------------


def rejected(node: Node, wire: bytes, *senders: Node, **kw: Any) -> InvalidPacket:
    """Receive as `node` and return the InvalidPacket, checking it is opaque."""
    with pytest.raises(InvalidPacket) as info:
        receive(node, wire, *senders, **kw)
    assert str(info.value) == "invalid_packet"
    assert info.value.args == ("invalid_packet",)
    return info.value


def accepted(node: Node, wire: bytes, *senders: Node, **kw: Any) -> Opened:
    opened = receive(node, wire, *senders, **kw)
    assert isinstance(opened, Opened)
    assert opened.rejection is None
    return opened


def outer(wire: bytes) -> dict[str, str]:
    value: dict[str, str] = json.loads(wire)
    return value


def dump(obj: dict[str, str]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def header(wire: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(b64u_decode(outer(wire)["hp1"]))
    return value


def with_hb(
    wire: bytes, hb: bytes, signer: crypto.SigningKey | None = None, ct: bytes | None = None
) -> bytes:
    """Replace the header bytes; re-sign with `signer` or keep the old signature."""
    o = outer(wire)
    o["hp1"] = b64u_encode(hb)
    if signer is not None:
        o["sig"] = b64u_encode(signer.sign(crypto.pae(PACKET_LABEL, hb)))
    if ct is not None:
        o["ct"] = b64u_encode(ct)
    return dump(o)


def with_header(
    wire: bytes,
    change: Callable[[dict[str, Any]], object],
    signer: crypto.SigningKey | None = None,
) -> bytes:
    """Change the parsed header, re-encode it canonically, re-sign if `signer` is given."""
    h = header(wire)
    change(h)
    return with_hb(wire, cj_dumps(h), signer)


def with_member(wire: bytes, name: str, value: str) -> bytes:
    o = outer(wire)
    o[name] = value
    return dump(o)


def raw_header(wire: bytes, old: bytes, new: bytes, signer: crypto.SigningKey) -> bytes:
    """Replace bytes inside HB (for non-canonical headers) and re-sign honestly."""
    hb = b64u_decode(outer(wire)["hp1"])
    assert old in hb
    return with_hb(wire, hb.replace(old, new, 1), signer)


def trailing_bit(text: str) -> str:
    """Set an unused trailing bit: the same bytes to a lenient decoder."""
    assert (len(text) * 6) % 8, "this length has no trailing bits"
    changed = text[:-1] + ALPHABET[ALPHABET.index(text[-1]) ^ 1]

    def lenient(t: str) -> bytes:
        return base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))

    assert lenient(changed) == lenient(text)
    return changed


def set_path(h: dict[str, Any], path: str, value: object) -> None:
    *parents, last = path.split(".")
    target: Any = h
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value


def get_path(h: dict[str, Any], path: str) -> Any:
    target: Any = h
    for part in path.split("."):
        target = target[int(part)] if part.isdigit() else target[part]
    return target


def other_b64(value: str) -> str:
    """Another strict b64u value of the same length (first byte changed)."""
    raw = bytearray(b64u_decode(value))
    raw[0] ^= 0x01
    return b64u_encode(bytes(raw))


def craft(
    sender: Node,
    recipients: list[Node],
    *,
    inner: bytes | None = None,
    padded: bytes | None = None,
    wrap_keys: dict[int, bytes] | None = None,
    kc_key: bytes | None = None,
    epk: bytes | None = None,
    iat: int = NOW,
    exp: int = NOW + DEFAULT_TTL_MS,
) -> bytes:
    """Seal by hand from the primitives, so the payload and wraps can be wrong.

    With no options this makes a packet every recipient accepts (checked by
    `test_craft_without_defects_is_accepted`).
    """
    content_key = seed("content-key", sender.name)
    ephemeral = crypto.BoxKey.from_secret(seed("ephemeral", sender.name))
    nonce = seed("nonce", sender.name)[:24]
    pid = b64u_encode(seed("pid", sender.name)[:16])
    node, kid = sender.name, sender.identity.kid
    if inner is None:
        inner = cj_dumps(
            {"schema": SCHEMA_ID, "body": example_body(), "log": LogPosition.genesis().to_json()}
        )
    if padded is None:
        padded = pad(inner)
    ck = crypto.kh32(content_key, crypto.pae(CONTENT_KEY_LABEL, node, kid, pid))
    kc = crypto.kh32(kc_key or content_key, crypto.pae(COMMITMENT_LABEL, node, kid, pid))
    ct = crypto.secretbox_seal(padded, nonce, ck)
    wraps = wrap_keys or {}
    to = [
        {
            "node": r.name,
            "kid": r.recipient().kid,
            "wk": b64u_encode(
                crypto.box_wrap(wraps.get(i, content_key), i, r.recipient().public_key, ephemeral)
            ),
        }
        for i, r in enumerate(recipients)
    ]
    hb = cj_dumps(
        {
            "typ": "hp1.packet",
            "v": 1,
            "pid": pid,
            "iat": iat,
            "exp": exp,
            "from": {"node": node, "kid": kid},
            "to": to,
            "epk": b64u_encode(epk if epk is not None else ephemeral.public_key),
            "kc": b64u_encode(kc),
            "n": b64u_encode(nonce),
            "clen": len(ct),
            "ch": b64u_encode(crypto.h64(ct)),
        }
    )
    sig = sender.sig.sign(crypto.pae(PACKET_LABEL, hb))
    return dump({"hp1": b64u_encode(hb), "sig": b64u_encode(sig), "ct": b64u_encode(ct)})


def inner_bytes(
    body: object = None, log: object = None, schema: object = SCHEMA_ID, **extra: object
) -> bytes:
    payload: dict[str, object] = {
        "schema": schema,
        "body": example_body() if body is None else body,
        "log": LogPosition.genesis().to_json() if log is None else log,
        **extra,
    }
    return cj_dumps(payload)


@pytest.fixture
def packet(alice: Node, bob: Node, carol: Node) -> SealedPacket:
    """Alice's release notice to Bob and Carol, sealed at NOW with the default TTL."""
    return seal_to(alice, bob, carol)


# --- baseline ---------------------------------------------------------------------


def test_both_recipients_open_the_packet(
    packet: SealedPacket, alice: Node, bob: Node, carol: Node
) -> None:
    for node in (bob, carol):
        opened = accepted(node, packet.wire, alice)
        assert opened.body == example_body()
        assert opened.pid == packet.pid
        assert opened.pd == packet.pd
        assert opened.to == (bob.name, carol.name)


def test_craft_without_defects_is_accepted(alice: Node, bob: Node, carol: Node) -> None:
    wire = craft(alice, [bob, carol])
    assert accepted(bob, wire, alice).body == example_body()
    assert accepted(carol, wire, alice).body == example_body()


def test_wire_whitespace_member_order_and_escapes_are_allowed(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    o = outer(packet.wire)
    spaced = json.dumps({"sig": o["sig"], "ct": o["ct"], "hp1": o["hp1"]}, indent=1)
    escaped = packet.wire.replace(b'"hp1":"', b'"\\u0068p1":"', 1)
    for wire in (spaced.encode(), b" \r\n" + packet.wire + b"\n ", escaped):
        assert accepted(bob, wire, alice).pd == packet.pd


def test_schema_failure_is_a_signed_rejection_not_invalid_packet(alice: Node, bob: Node) -> None:
    body = example_body()
    body["unexpected_member"] = "x"
    sealed = seal_to(alice, bob, body=body, validator=PERMISSIVE)
    opened = receive(bob, sealed.wire, alice)
    assert isinstance(opened, Opened)
    assert opened.rejection is not None
    assert opened.rejection.code is RejectCode.SCHEMA_INVALID


# --- addressing -----------------------------------------------------------------


def test_forwarded_to_a_non_recipient(packet: SealedPacket, alice: Node, mallory: Node) -> None:
    assert rejected(mallory, packet.wire, alice).reason is Reason.NOT_A_RECIPIENT


def test_recipient_list_reordered_keeping_the_signature(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    wire = with_header(packet.wire, lambda h: h["to"].reverse())
    assert rejected(bob, wire, alice).reason is Reason.BAD_SIGNATURE


def test_recipient_removed_keeping_the_signature(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    wire = with_header(packet.wire, lambda h: h["to"].pop())
    assert rejected(bob, wire, alice).reason is Reason.BAD_SIGNATURE


def test_recipient_duplicated(packet: SealedPacket, alice: Node, bob: Node) -> None:
    def dup(h: dict[str, Any]) -> None:
        h["to"].append(dict(h["to"][0]))

    assert rejected(bob, with_header(packet.wire, dup), alice).reason is Reason.BAD_HEADER
    resigned = with_header(packet.wire, dup, alice.sig)
    assert rejected(bob, resigned, alice).reason is Reason.BAD_HEADER


def test_same_node_twice_with_different_keys_is_bad_header(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    def twice(h: dict[str, Any]) -> None:
        h["to"][1]["node"] = h["to"][0]["node"]

    assert rejected(bob, with_header(packet.wire, twice, alice.sig), alice).reason is (
        Reason.BAD_HEADER
    )


@pytest.mark.parametrize("count", [0, 65])
def test_recipient_count_outside_1_to_64(
    packet: SealedPacket, alice: Node, bob: Node, count: int
) -> None:
    def resize(h: dict[str, Any]) -> None:
        bob_entry = h["to"][0]
        others = [dict(bob_entry, node=f"n{i}.example") for i in range(count - 1)]
        h["to"] = [bob_entry, *others][:count]

    wire = with_header(packet.wire, resize, alice.sig)
    assert rejected(bob, wire, alice).reason is Reason.BAD_HEADER


def test_64_recipients_are_allowed(alice: Node, bob: Node) -> None:
    others = [make_node(f"n{i}.example") for i in range(63)]
    sealed = seal_to(alice, bob, *others)
    assert accepted(bob, sealed.wire, alice).to[0] == bob.name
    assert accepted(others[-1], sealed.wire, alice).to[-1] == others[-1].name


def test_recipient_key_we_do_not_hold(alice: Node, bob: Node) -> None:
    # Bob rotated: his receiver only has the new key; a packet to the old kid fails.
    old = crypto.BoxKey.from_secret(seed("box", bob.name))
    new = crypto.BoxKey.from_secret(seed("box2", bob.name))
    rotated = make_node(
        bob.name,
        keys=[sig_entry(bob.sig, NOW - DAY_MS), box_entry(new, NOW - DAY_MS)],
        extra_boxes={crypto.kid("x25519-box", new.public_key): new},
    )
    assert rotated.receiver.box_keys.keys() == {crypto.kid("x25519-box", new.public_key)}
    sealed = seal_to(alice, bob)  # to the old key
    assert header(sealed.wire)["to"][0]["kid"] == crypto.kid("x25519-box", old.public_key)
    assert rejected(rotated, sealed.wire, alice).reason is Reason.UNKNOWN_RECIPIENT_KEY


def test_retired_box_key_decrypts_until_grace_ends(alice: Node, bob: Node) -> None:
    sealed = seal_to(alice, bob)
    retired = make_node(
        bob.name,
        keys=[sig_entry(bob.sig, NOW - DAY_MS), box_entry(bob.box, NOW - DAY_MS, "retired", NOW)],
    )
    assert accepted(retired, sealed.wire, alice).pid == sealed.pid
    later = NOW + 30 * DAY_MS + SKEW_MS + 1
    long_lived = seal_to(alice, bob, now=later - DAY_MS)
    assert rejected(retired, long_lived.wire, alice, now=later).reason is (
        Reason.UNKNOWN_RECIPIENT_KEY
    )


def test_box_key_before_its_nbf_is_not_used(alice: Node, bob: Node) -> None:
    sealed = seal_to(alice, bob)
    future = make_node(
        bob.name, keys=[sig_entry(bob.sig, NOW - DAY_MS), box_entry(bob.box, NOW + SKEW_MS + 1)]
    )
    assert rejected(future, sealed.wire, alice).reason is Reason.UNKNOWN_RECIPIENT_KEY


# --- every header member, changed without re-signing -----------------------------------

UNSIGNED_CHANGES: list[tuple[str, Callable[[Any], Any], Reason]] = [
    ("typ", lambda v: "hp1.receipt", Reason.BAD_HEADER),
    ("v", lambda v: 2, Reason.BAD_HEADER),
    ("pid", other_b64, Reason.BAD_SIGNATURE),
    ("iat", lambda v: v - 1, Reason.BAD_SIGNATURE),
    ("exp", lambda v: v - 1, Reason.BAD_SIGNATURE),
    ("from.node", lambda v: "unknown.example", Reason.UNKNOWN_SENDER),
    ("from.node", lambda v: "mallory.example", Reason.UNKNOWN_SIGNING_KEY),
    ("from.kid", other_b64, Reason.UNKNOWN_SIGNING_KEY),
    ("to.0.node", lambda v: "other.example", Reason.BAD_SIGNATURE),
    ("to.0.kid", other_b64, Reason.BAD_SIGNATURE),
    ("to.0.wk", other_b64, Reason.BAD_SIGNATURE),
    ("to.1.node", lambda v: "other.example", Reason.BAD_SIGNATURE),
    ("to.1.kid", other_b64, Reason.BAD_SIGNATURE),
    ("to.1.wk", other_b64, Reason.BAD_SIGNATURE),
    ("epk", other_b64, Reason.BAD_SIGNATURE),
    ("kc", other_b64, Reason.BAD_SIGNATURE),
    ("n", other_b64, Reason.BAD_SIGNATURE),
    ("clen", lambda v: v + 1, Reason.BAD_SIGNATURE),
    ("ch", other_b64, Reason.BAD_SIGNATURE),
]


@pytest.mark.parametrize(
    ("path", "change", "reason"),
    UNSIGNED_CHANGES,
    ids=[f"{p}-{r.value}" for p, _, r in UNSIGNED_CHANGES],
)
def test_header_member_changed(
    packet: SealedPacket,
    alice: Node,
    bob: Node,
    mallory: Node,
    path: str,
    change: Callable[[Any], Any],
    reason: Reason,
) -> None:
    h = header(packet.wire)
    set_path(h, path, change(get_path(h, path)))
    wire = with_hb(packet.wire, cj_dumps(h))
    assert rejected(bob, wire, alice, mallory).reason is reason


def test_header_member_list_is_complete(packet: SealedPacket) -> None:
    h = header(packet.wire)
    members = {p.split(".")[0] for p, _, _ in UNSIGNED_CHANGES}
    assert members == set(h)
    assert {p.split(".")[1] for p, _, _ in UNSIGNED_CHANGES if p.startswith("from.")} == set(
        h["from"]
    )
    assert {p.split(".")[2] for p, _, _ in UNSIGNED_CHANGES if p.startswith("to.")} == set(
        h["to"][0]
    )


# --- header members changed and honestly re-signed: the later steps catch them --------

RESIGNED_CHANGES: list[tuple[str, Callable[[Any], Any], Reason]] = [
    ("pid", other_b64, Reason.KEY_COMMITMENT_MISMATCH),  # kc binds pid
    ("to.0.node", lambda v: "other.example", Reason.NOT_A_RECIPIENT),
    ("to.0.kid", other_b64, Reason.UNKNOWN_RECIPIENT_KEY),
    ("to.0.wk", other_b64, Reason.UNWRAP_FAILED),
    ("epk", lambda v: b64u_encode(seed("epk", "x")), Reason.UNWRAP_FAILED),
    ("kc", other_b64, Reason.KEY_COMMITMENT_MISMATCH),
    ("n", other_b64, Reason.DECRYPT_FAILED),
    ("clen", lambda v: v + 1, Reason.CIPHERTEXT_MISMATCH),
    ("ch", other_b64, Reason.CIPHERTEXT_MISMATCH),
]


@pytest.mark.parametrize(
    ("path", "change", "reason"), RESIGNED_CHANGES, ids=[p for p, _, _ in RESIGNED_CHANGES]
)
def test_header_member_changed_and_resigned(
    packet: SealedPacket,
    alice: Node,
    bob: Node,
    path: str,
    change: Callable[[Any], Any],
    reason: Reason,
) -> None:
    wire = with_header(
        packet.wire, lambda h: set_path(h, path, change(get_path(h, path))), alice.sig
    )
    assert rejected(bob, wire, alice).reason is reason


def test_recipients_swapped_and_resigned_fail_to_unwrap(
    packet: SealedPacket, alice: Node, bob: Node, carol: Node
) -> None:
    # The wrap nonce carries the index: a wrap moved to another position does not open.
    wire = with_header(packet.wire, lambda h: h["to"].reverse(), alice.sig)
    assert rejected(bob, wire, alice).reason is Reason.UNWRAP_FAILED
    assert rejected(carol, wire, alice).reason is Reason.UNWRAP_FAILED


# --- senders and signing keys ----------------------------------------------------------


def test_another_sender_resigning_keeps_from(
    packet: SealedPacket, alice: Node, bob: Node, mallory: Node
) -> None:
    hb = b64u_decode(outer(packet.wire)["hp1"])
    wire = with_hb(packet.wire, hb, mallory.sig)
    assert rejected(bob, wire, alice, mallory).reason is Reason.BAD_SIGNATURE


def test_another_sender_resigning_as_itself_breaks_key_commitment(
    packet: SealedPacket, alice: Node, bob: Node, carol: Node, mallory: Node
) -> None:
    def claim(h: dict[str, Any]) -> None:
        h["from"] = {"node": mallory.name, "kid": mallory.identity.kid}

    wire = with_header(packet.wire, claim, mallory.sig)
    for node in (bob, carol):
        assert rejected(node, wire, alice, mallory).reason is Reason.KEY_COMMITMENT_MISMATCH


def test_unknown_sender(packet: SealedPacket, bob: Node, carol: Node) -> None:
    assert rejected(bob, packet.wire, carol).reason is Reason.UNKNOWN_SENDER
    assert rejected(bob, packet.wire).reason is Reason.UNKNOWN_SENDER


def test_unknown_signing_key(alice: Node, bob: Node) -> None:
    stranger = crypto.SigningKey.from_seed(seed("stranger", alice.name))

    def use_stranger(h: dict[str, Any]) -> None:
        h["from"]["kid"] = crypto.kid("ed25519-sig", stranger.public_key)

    wire = with_header(seal_to(alice, bob).wire, use_stranger, stranger)
    assert rejected(bob, wire, alice).reason is Reason.UNKNOWN_SIGNING_KEY


def test_x25519_kid_as_signing_key(packet: SealedPacket, alice: Node, bob: Node) -> None:
    def box_kid(h: dict[str, Any]) -> None:
        h["from"]["kid"] = alice.box_kid

    wire = with_header(packet.wire, box_kid, alice.sig)
    assert rejected(bob, wire, alice).reason is Reason.UNKNOWN_SIGNING_KEY


def test_root_key_cannot_sign_packets(packet: SealedPacket, alice: Node, bob: Node) -> None:
    def root_kid(h: dict[str, Any]) -> None:
        h["from"]["kid"] = alice.fingerprint

    wire = with_header(packet.wire, root_kid, alice.root)
    assert rejected(bob, wire, alice).reason is Reason.UNKNOWN_SIGNING_KEY


def test_revoked_signing_key(packet: SealedPacket, alice: Node, bob: Node) -> None:
    revoked = make_node(
        alice.name,
        keys=[sig_entry(alice.sig, NOW - DAY_MS, "revoked", NOW), box_entry(alice.box, NOW)],
    )
    assert rejected(bob, packet.wire, revoked).reason is Reason.KEY_NOT_VALID


def test_retired_signing_key_verifies_only_up_to_until(alice: Node, bob: Node) -> None:
    until = NOW
    retired = make_node(
        alice.name,
        keys=[sig_entry(alice.sig, NOW - DAY_MS, "retired", until), box_entry(alice.box, NOW)],
    )
    on_time = seal_to(alice, bob, now=until)
    late = seal_to(alice, bob, now=until + 1)
    assert accepted(bob, on_time.wire, retired, now=until + 1).pid == on_time.pid
    assert rejected(bob, late.wire, retired, now=until + 1).reason is Reason.KEY_NOT_VALID


def test_signing_key_refused_before_nbf_minus_skew(alice: Node, bob: Node) -> None:
    nbf = NOW
    fresh = make_node(alice.name, keys=[sig_entry(alice.sig, nbf), box_entry(alice.box, nbf)])
    ok = seal_to(alice, bob, now=nbf - SKEW_MS)
    early = seal_to(alice, bob, now=nbf - SKEW_MS - 1)
    assert accepted(bob, ok.wire, fresh).pid == ok.pid
    assert rejected(bob, early.wire, fresh).reason is Reason.KEY_NOT_VALID


def test_malleated_signature_s_plus_l(packet: SealedPacket, alice: Node, bob: Node) -> None:
    sig = packet.sig
    s = int.from_bytes(sig[32:], "little") + L
    assert s < 2**256
    wire = with_member(packet.wire, "sig", b64u_encode(sig[:32] + s.to_bytes(32, "little")))
    assert rejected(bob, wire, alice).reason is Reason.BAD_SIGNATURE


def test_signature_bit_flip(packet: SealedPacket, alice: Node, bob: Node) -> None:
    sig = bytearray(packet.sig)
    sig[10] ^= 0x04
    wire = with_member(packet.wire, "sig", b64u_encode(bytes(sig)))
    assert rejected(bob, wire, alice).reason is Reason.BAD_SIGNATURE


def test_signature_over_another_label(packet: SealedPacket, alice: Node, bob: Node) -> None:
    sig = alice.sig.sign(crypto.pae("hp1/receipt/v1", packet.hb))
    wire = with_member(packet.wire, "sig", b64u_encode(sig))
    assert rejected(bob, wire, alice).reason is Reason.BAD_SIGNATURE


# --- times ---------------------------------------------------------------------------


def test_expired(packet: SealedPacket, alice: Node, bob: Node) -> None:
    assert accepted(bob, packet.wire, alice, now=packet.exp).pid == packet.pid
    assert rejected(bob, packet.wire, alice, now=packet.exp + 1).reason is Reason.EXPIRED


def test_future_dated(alice: Node, bob: Node) -> None:
    edge = seal_to(alice, bob, now=NOW + SKEW_MS)
    future = seal_to(alice, bob, now=NOW + SKEW_MS + 1)
    assert accepted(bob, edge.wire, alice).pid == edge.pid
    assert rejected(bob, future.wire, alice).reason is Reason.NOT_YET_VALID


@pytest.mark.parametrize("ttl", [MAX_TTL_MS + 1, 0, -1])
def test_seal_refuses_a_ttl_outside_0_to_30_days(alice: Node, bob: Node, ttl: int) -> None:
    with pytest.raises(SealError, match="ttl must be more than 0 and at most 30 days"):
        seal_to(alice, bob, ttl_ms=ttl)


def test_thirty_day_lifetime_is_allowed(alice: Node, bob: Node) -> None:
    sealed = seal_to(alice, bob, ttl_ms=MAX_TTL_MS)
    assert accepted(bob, sealed.wire, alice).exp - sealed.iat == MAX_TTL_MS


@pytest.mark.parametrize("lifetime", [MAX_TTL_MS + 1, 0])
def test_lifetime_outside_0_to_30_days(
    packet: SealedPacket, alice: Node, bob: Node, lifetime: int
) -> None:
    def stretch(h: dict[str, Any]) -> None:
        h["exp"] = h["iat"] + lifetime

    wire = with_header(packet.wire, stretch, alice.sig)
    assert rejected(bob, wire, alice).reason is Reason.BAD_LIFETIME


def test_exp_before_iat_is_bad_lifetime_when_not_yet_expired(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    def backwards(h: dict[str, Any]) -> None:
        h["iat"], h["exp"] = NOW + SKEW_MS, NOW

    wire = with_header(packet.wire, backwards, alice.sig)
    assert rejected(bob, wire, alice).reason is Reason.BAD_LIFETIME


# --- replay ----------------------------------------------------------------------------


def pid_fixed_rand(pid: bytes) -> Callable[[int], bytes]:
    """Fresh randomness except the 16-byte pid request."""
    return lambda n: pid if n == 16 else crypto.random_bytes(n)


def test_identical_replay_returns_the_stored_receipt_unchanged(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    replay = DictReplay()
    opened = accepted(bob, packet.wire, alice, replay=replay)
    receipt = make_receipt(
        bob.identity,
        pid=opened.pid,
        pd=opened.pd,
        to=alice.name,
        status="accepted",
        reason=None,
        log=LogPosition(1, bytes(range(32))),
        now=NOW,
    )
    replay.record(opened, receipt)
    again = receive(bob, packet.wire, alice, replay=replay)
    assert isinstance(again, Replayed)
    assert again.receipt == receipt
    assert (again.pid, again.sender, again.pd) == (packet.pid, alice.name, packet.pd)


def test_replayed_pid_with_other_content(alice: Node, bob: Node) -> None:
    pid = seed("replayed-pid", alice.name)[:16]
    first = seal_to(alice, bob, rand=pid_fixed_rand(pid))
    body = example_body()
    body["case_ref"] = "HC-01JC3862PZ6820J8YY0J464BBH"
    second = seal_to(alice, bob, body=body, rand=pid_fixed_rand(pid))
    assert first.pid == second.pid and first.pd != second.pd
    replay = DictReplay()
    replay.record(accepted(bob, first.wire, alice), b"receipt")
    assert rejected(bob, second.wire, alice, replay=replay).reason is Reason.REPLAY_CONFLICT


def test_replayed_header_with_another_signature_encoding_conflicts(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    # Same HB, but a different (malleated) SIG gives another pd: a conflict, not a replay.
    replay = DictReplay()
    replay.record(accepted(bob, packet.wire, alice), b"receipt")
    s = int.from_bytes(packet.sig[32:], "little") + L
    wire = with_member(packet.wire, "sig", b64u_encode(packet.sig[:32] + s.to_bytes(32, "little")))
    assert rejected(bob, wire, alice, replay=replay).reason is Reason.REPLAY_CONFLICT


# --- version and type --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("typ", "hp1.receipt"),
        ("typ", "hp1.keyset"),
        ("typ", "hp2.packet"),
        ("typ", ""),
        ("typ", 1),
        ("v", 0),
        ("v", 2),
        ("v", True),
        ("v", "1"),
    ],
)
def test_version_or_typ_changed(
    packet: SealedPacket, alice: Node, bob: Node, member: str, value: object
) -> None:
    wire = with_header(packet.wire, lambda h: h.__setitem__(member, value), alice.sig)
    assert rejected(bob, wire, alice).reason is Reason.BAD_HEADER


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h.pop("kc"),
        lambda h: h.__setitem__("extra", 1),
        lambda h: h["from"].__setitem__("extra", 1),
        lambda h: h["from"].pop("kid"),
        lambda h: h["to"][0].pop("wk"),
        lambda h: h["to"][1].__setitem__("extra", "x"),
        lambda h: h.__setitem__("from", [h["from"]]),
        lambda h: h.__setitem__("to", h["to"][0]),
        lambda h: h.__setitem__("iat", str(h["iat"])),
        lambda h: h.__setitem__("clen", -1),
        lambda h: h.__setitem__("clen", MAX_CIPHERTEXT_BYTES + 1),
        lambda h: h["from"].__setitem__("node", "Prison.Example"),
        lambda h: h["from"].__setitem__("node", h["from"]["node"] + "\n"),
        lambda h: h["to"][0].__setitem__("node", "a" * 254),
        lambda h: h["to"][0].__setitem__("node", "bad..example"),
    ],
    ids=[
        "missing-kc",
        "extra-member",
        "from-extra",
        "from-missing-kid",
        "to-missing-wk",
        "to-extra",
        "from-not-object",
        "to-not-list",
        "iat-string",
        "clen-negative",
        "clen-over-16MiB",
        "node-uppercase",
        "node-newline",
        "node-too-long",
        "node-empty-label",
    ],
)
def test_header_structure(
    packet: SealedPacket, alice: Node, bob: Node, change: Callable[[dict[str, Any]], Any]
) -> None:
    wire = with_header(packet.wire, change, alice.sig)
    assert rejected(bob, wire, alice).reason is Reason.BAD_HEADER


def test_receipt_presented_as_packet(packet: SealedPacket, alice: Node, bob: Node) -> None:
    receipt = make_receipt(
        bob.identity,
        pid=packet.pid,
        pd=packet.pd,
        to=alice.name,
        status="accepted",
        reason=None,
        log=LogPosition(1, bytes(range(32))),
        now=NOW,
    )
    assert rejected(bob, receipt, alice).reason is Reason.MALFORMED_WIRE


def test_keyset_presented_as_packet(alice: Node, bob: Node) -> None:
    assert rejected(bob, alice.keyset.wire, alice).reason is Reason.MALFORMED_WIRE


# --- JSON and canonical form ---------------------------------------------------------------


@pytest.mark.parametrize(
    "mangle",
    [
        lambda w: w[:-1] + b',"sig":"' + outer(w)["sig"].encode() + b'"}',  # duplicate key
        lambda w: w.replace(b'"ct":"', b'"ct":1.5,"x":"', 1),
        lambda w: w.replace(b'"ct":', b'"ct":1.5,"ct":', 1),
        lambda w: w[:-1] + b',"extra":"x"}',
        lambda w: w.replace(b'"ct":"', b'"ct":["', 1).replace(b'","hp1"', b'"],"hp1"', 1),
        lambda w: w[:-1],
        lambda w: b"[" + w + b"]",
        lambda w: w + b"{}",
        lambda w: b"\xef\xbb\xbf" + w,
        lambda w: w.replace(b'"sig":"', b'"sig":"\xff', 1),
        lambda w: b"",
    ],
    ids=[
        "duplicate-key",
        "float-member",
        "duplicate-ct-with-float",
        "extra-member",
        "ct-not-string",
        "truncated",
        "array",
        "trailing-data",
        "bom",
        "non-utf8",
        "empty",
    ],
)
def test_malformed_wire(
    packet: SealedPacket, alice: Node, bob: Node, mangle: Callable[[bytes], bytes]
) -> None:
    assert rejected(bob, mangle(packet.wire), alice).reason is Reason.MALFORMED_WIRE


def test_wire_missing_member(packet: SealedPacket, alice: Node, bob: Node) -> None:
    o = outer(packet.wire)
    del o["ct"]
    assert rejected(bob, dump(o), alice).reason is Reason.MALFORMED_WIRE


@pytest.mark.parametrize(
    ("old", "new", "detail"),
    [
        (b'"iat":', b'"iat": ', "not canonical"),  # whitespace
        (b'{"ch":', b'{ "ch":', "not canonical"),
        (b'"v":1}', b'"v":1}\n', "not canonical"),
        (b'"v":1', b'"v":01', "invalid JSON"),
        (b'"typ":"hp1.packet","v":1', b'"v":1,"typ":"hp1.packet"', "not canonical"),  # unsorted
        (b'"typ":"hp1.packet"', b'"typ":"hp1.\\u0070acket"', "not canonical"),  # escape
        (b'"v":1', b'"v":1,"v":1', "duplicate key 'v'"),
        (b'"v":1', b'"v":1.0', "floats are not allowed"),
        (b'"v":1', b'"v":1e0', "floats are not allowed"),
        (b'"v":1', b'"v":null', "null is not allowed"),
        (b'"typ":"hp1.packet"', b'"typ":"hp1.packet\\ud800"', "unpaired surrogate"),
        (b'"typ":"hp1.packet"', b'"typ":"\\udc00hp1.packet"', "unpaired surrogate"),
        (b'"v":1', b'"v":' + b"[" * 32 + b"1" + b"]" * 32, "nesting deeper than 32"),
    ],
    ids=[
        "space",
        "space-after-brace",
        "trailing-newline",
        "leading-zero",
        "unsorted",
        "escaped-ascii",
        "duplicate-key",
        "float",
        "float-exponent",
        "null",
        "escaped-high-surrogate",
        "escaped-low-surrogate",
        "depth-33",
    ],
)
def test_non_canonical_header_resigned(
    packet: SealedPacket, alice: Node, bob: Node, old: bytes, new: bytes, detail: str
) -> None:
    wire = raw_header(packet.wire, old, new, alice.sig)
    exc = rejected(bob, wire, alice)
    assert exc.reason is Reason.BAD_HEADER
    assert "header is not canonical JSON" in exc.detail
    assert detail in exc.detail


def test_header_nesting_at_32_is_parsed_then_refused_by_structure(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    wire = raw_header(packet.wire, b'"v":1', b'"v":' + b"[" * 31 + b"1" + b"]" * 31, alice.sig)
    exc = rejected(bob, wire, alice)
    assert (exc.reason, exc.detail) == (Reason.BAD_HEADER, "v")


def test_header_with_invalid_utf8(packet: SealedPacket, alice: Node, bob: Node) -> None:
    wire = raw_header(packet.wire, b'"typ":"hp1.packet"', b'"typ":"hp1.packet\xff"', alice.sig)
    exc = rejected(bob, wire, alice)
    assert exc.reason is Reason.BAD_HEADER
    assert "not valid UTF-8" in exc.detail


# --- base64url --------------------------------------------------------------------------


def test_hp1_with_trailing_bits(bob: Node) -> None:
    # The header length depends on the sender's name: pick one that leaves spare bits.
    senders = [make_node("prison" + "x" * i + ".example") for i in range(3)]
    sender, sealed = next((s, p) for s in senders if len((p := seal_to(s, bob)).hb) % 3)
    assert accepted(bob, sealed.wire, sender).pid == sealed.pid
    wire = with_member(sealed.wire, "hp1", trailing_bit(outer(sealed.wire)["hp1"]))
    assert rejected(bob, wire, sender).reason is Reason.BAD_ENCODING


@pytest.mark.parametrize("member", ["hp1", "sig", "ct"])
@pytest.mark.parametrize(
    "spoil",
    [
        lambda t: t + "=" * (-len(t) % 4 or 4),
        lambda t: t + "==",
        lambda t: t[:40] + "+" + t[41:],
        lambda t: t[:40] + "/" + t[41:],
        lambda t: t[:40] + "\n" + t[40:],
        lambda t: t[:40] + " " + t[40:],
        lambda t: t[:40] + "." + t[41:],
        lambda t: t[:40] + "é" + t[41:],
    ],
    ids=["padding", "double-padding", "plus", "slash", "newline", "space", "dot", "non-ascii"],
)
def test_bad_base64_in_wire_members(
    packet: SealedPacket,
    alice: Node,
    bob: Node,
    member: str,
    spoil: Callable[[str], str],
) -> None:
    wire = with_member(packet.wire, member, spoil(outer(packet.wire)[member]))
    assert rejected(bob, wire, alice).reason is Reason.BAD_ENCODING


def test_sig_and_ct_trailing_bits(packet: SealedPacket, alice: Node, bob: Node) -> None:
    assert len(packet.sig) % 3 and (len(outer(packet.wire)["ct"]) * 6) % 8
    for member in ("sig", "ct"):
        wire = with_member(packet.wire, member, trailing_bit(outer(packet.wire)[member]))
        assert rejected(bob, wire, alice).reason is Reason.BAD_ENCODING


def test_sig_of_wrong_length(packet: SealedPacket, alice: Node, bob: Node) -> None:
    for sig in (packet.sig[:63], packet.sig + b"\x00"):
        wire = with_member(packet.wire, "sig", b64u_encode(sig))
        assert rejected(bob, wire, alice).reason is Reason.BAD_ENCODING


@pytest.mark.parametrize("path", ["pid", "from.kid", "to.0.kid", "epk", "kc", "ch", "to.1.kid"])
def test_trailing_bits_inside_header_fields(
    packet: SealedPacket, alice: Node, bob: Node, path: str
) -> None:
    wire = with_header(
        packet.wire, lambda h: set_path(h, path, trailing_bit(get_path(h, path))), alice.sig
    )
    assert rejected(bob, wire, alice).reason is Reason.BAD_HEADER


@pytest.mark.parametrize("path", ["pid", "from.kid", "to.0.kid", "to.0.wk", "epk", "kc", "n", "ch"])
@pytest.mark.parametrize(
    "spoil",
    [
        lambda t: t + "=" * (-len(t) % 4 or 4),
        lambda t: "+" + t[1:],
        lambda t: "/" + t[1:],
        lambda t: t + "A",
        lambda t: t[:-1],
        lambda t: t + "AAAA",
    ],
    ids=["padding", "plus", "slash", "longer", "shorter", "three-bytes-more"],
)
def test_bad_base64_inside_header_fields(
    packet: SealedPacket, alice: Node, bob: Node, path: str, spoil: Callable[[str], str]
) -> None:
    wire = with_header(
        packet.wire, lambda h: set_path(h, path, spoil(get_path(h, path))), alice.sig
    )
    assert rejected(bob, wire, alice).reason is Reason.BAD_HEADER


@pytest.mark.parametrize("length", [47, 49, 0, 32])
def test_wrong_length_wk(packet: SealedPacket, alice: Node, bob: Node, length: int) -> None:
    def resize(h: dict[str, Any]) -> None:
        h["to"][0]["wk"] = b64u_encode(bytes(length))

    wire = with_header(packet.wire, resize, alice.sig)
    assert rejected(bob, wire, alice).reason is Reason.BAD_HEADER


# --- sizes -------------------------------------------------------------------------------


def test_request_over_22_5_mib(packet: SealedPacket, alice: Node, bob: Node) -> None:
    at_limit = packet.wire + b" " * (MAX_REQUEST_BYTES - len(packet.wire))
    assert len(at_limit) == MAX_REQUEST_BYTES == 22.5 * 1024 * 1024
    assert accepted(bob, at_limit, alice).pd == packet.pd
    over = at_limit + b" "
    assert rejected(bob, over, alice).reason is Reason.TOO_LARGE


def test_hp1_string_over_64_kib_encoded(packet: SealedPacket, alice: Node, bob: Node) -> None:
    limit = b64u_length(MAX_HEADER_BYTES)
    at_limit = "A" * limit
    assert len(b64u_decode(at_limit)) == MAX_HEADER_BYTES
    # At the limit the header is decoded (and found not to be JSON) ...
    assert rejected(bob, with_member(packet.wire, "hp1", at_limit), alice).reason is (
        Reason.BAD_HEADER
    )
    # ... one character more is refused before decoding (even though it is not b64u).
    over = with_member(packet.wire, "hp1", "=" * (limit + 1))
    assert rejected(bob, over, alice).reason is Reason.TOO_LARGE


def test_ct_string_over_16_mib_encoded(packet: SealedPacket, alice: Node, bob: Node) -> None:
    limit = b64u_length(MAX_CIPHERTEXT_BYTES)
    at_limit = with_member(packet.wire, "ct", "A" * limit)
    assert len(at_limit) <= MAX_REQUEST_BYTES
    # At the limit ct is decoded in step 7 (16 MiB of zeros: clen and ch do not match) ...
    assert rejected(bob, at_limit, alice).reason is Reason.CIPHERTEXT_MISMATCH
    # ... one character more is refused in step 1, before the signature is even checked.
    over = with_member(packet.wire, "ct", "=" * (limit + 1))
    assert len(over) <= MAX_REQUEST_BYTES
    assert rejected(bob, over, alice).reason is Reason.TOO_LARGE


def test_seal_refuses_a_body_over_16_mib(alice: Node, bob: Node) -> None:
    with pytest.raises(SealError, match="ciphertext would exceed 16 MiB"):
        seal_to(alice, bob, body={"x": "a" * MAX_CIPHERTEXT_BYTES}, validator=PERMISSIVE)


# --- ciphertext ------------------------------------------------------------------------


def _ct(wire: bytes) -> bytes:
    return b64u_decode(outer(wire)["ct"])


def test_ciphertext_bit_flip(packet: SealedPacket, alice: Node, bob: Node) -> None:
    ct = bytearray(_ct(packet.wire))
    ct[100] ^= 0x01
    wire = with_member(packet.wire, "ct", b64u_encode(bytes(ct)))
    assert rejected(bob, wire, alice).reason is Reason.CIPHERTEXT_MISMATCH


def test_ciphertext_bit_flip_with_matching_ch_resigned(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    ct = bytearray(_ct(packet.wire))
    ct[100] ^= 0x01
    h = header(packet.wire)
    h["ch"] = b64u_encode(crypto.h64(bytes(ct)))
    wire = with_hb(packet.wire, cj_dumps(h), alice.sig, ct=bytes(ct))
    assert rejected(bob, wire, alice).reason is Reason.DECRYPT_FAILED


def test_ciphertext_truncated(packet: SealedPacket, alice: Node, bob: Node) -> None:
    wire = with_member(packet.wire, "ct", b64u_encode(_ct(packet.wire)[:-1]))
    assert rejected(bob, wire, alice).reason is Reason.CIPHERTEXT_MISMATCH


@pytest.mark.parametrize("delta", [1, -1, 4096])
def test_wrong_clen(packet: SealedPacket, alice: Node, bob: Node, delta: int) -> None:
    wire = with_header(packet.wire, lambda h: h.__setitem__("clen", h["clen"] + delta), alice.sig)
    assert rejected(bob, wire, alice).reason is Reason.CIPHERTEXT_MISMATCH


def test_wrong_ch(packet: SealedPacket, alice: Node, bob: Node) -> None:
    def wrong(h: dict[str, Any]) -> None:
        h["ch"] = b64u_encode(crypto.h64(b"other"))

    assert rejected(bob, with_header(packet.wire, wrong, alice.sig), alice).reason is (
        Reason.CIPHERTEXT_MISMATCH
    )


def test_ch_is_blake2b_512_not_a_truncation(packet: SealedPacket) -> None:
    ct = _ct(packet.wire)
    assert b64u_decode(header(packet.wire)["ch"]) == crypto.h64(ct)
    assert crypto.h64(ct)[:32] != crypto.h32(ct)


# --- padding (sealed by hand) --------------------------------------------------------------


def _inner() -> bytes:
    return inner_bytes()


@pytest.mark.parametrize(
    "padded",
    [
        pytest.param(lambda i: pad(i) + bytes(4096), id="non-minimal-extra-block"),
        pytest.param(lambda i: i + bytes(-len(i) % 4096 or 4096), id="missing-0x80"),
        pytest.param(lambda i: i + b"\x81" + bytes(-(len(i) + 1) % 4096), id="wrong-marker"),
        pytest.param(lambda i: i + b"\x80\x01" + bytes(-(len(i) + 2) % 4096), id="nonzero-after"),
        pytest.param(lambda i: i + b"\x80", id="not-a-multiple-of-4096"),
        pytest.param(lambda i: pad(i)[:-1], id="one-byte-short"),
        pytest.param(lambda i: b"", id="empty"),
        pytest.param(lambda i: bytes(4096), id="all-zero-block"),
    ],
)
def test_bad_padding(alice: Node, bob: Node, padded: Callable[[bytes], bytes]) -> None:
    wire = craft(alice, [bob], padded=padded(_inner()))
    assert rejected(bob, wire, alice).reason is Reason.BAD_PADDING


def test_padding_of_exactly_4095_zero_bytes_is_minimal(alice: Node, bob: Node) -> None:
    # An inner payload of exactly 4096*k bytes needs the marker plus 4095 zeros.
    body = example_body()
    body["x"] = ""
    body["x"] = "a" * (-len(inner_bytes(body=body)) % 4096)
    inner = inner_bytes(body=body)
    assert len(inner) % 4096 == 0
    padded = pad(inner)
    assert padded[len(inner)] == 0x80 and len(padded) - len(inner) == 4096
    wire = craft(alice, [bob], padded=padded)
    opened = receive(bob, wire, alice, validator=PERMISSIVE)
    assert opened.body == body


# --- inner payload (sealed by hand) ----------------------------------------------------------

ZERO = b64u_encode(bytes(32))
HEAD = b64u_encode(bytes(range(32)))


def _raw_inner(old: bytes, new: bytes) -> bytes:
    inner = _inner()
    assert old in inner
    return inner.replace(old, new, 1)


@pytest.mark.parametrize(
    "inner",
    [
        pytest.param(_raw_inner(b'"schema":', b'"schema": '), id="whitespace"),
        pytest.param(
            _raw_inner(b'"body":{', b'"schema":"x","body":{'), id="duplicate-schema-and-unsorted"
        ),
        pytest.param(_raw_inner(b'"log":{', b'"log":{"seq":0,'), id="duplicate-key"),
        pytest.param(_raw_inner(b'"mappa_level":2', b'"mappa_level":2.0'), id="float-in-body"),
        pytest.param(_raw_inner(b'"mappa_level":2', b'"mappa_level":null'), id="null-in-body"),
        pytest.param(_raw_inner(b'"town":"', b'"town":"\\ud800'), id="escaped-surrogate-in-body"),
        pytest.param(
            _raw_inner(b'"town":"', b'"town":"\\ud83d\\ude00'), id="escaped-surrogate-pair"
        ),
        pytest.param(
            _raw_inner(b'"mappa_level":2', b'"mappa_level":' + b"[" * 31 + b"2" + b"]" * 31),
            id="depth-33-in-body",
        ),
        pytest.param(b"\x00\x01\x02", id="binary"),
        pytest.param(b'{"x":"\xff"}', id="invalid-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param(inner_bytes(extra="x"), id="extra-member"),
        pytest.param(cj_dumps({"schema": SCHEMA_ID, "body": {}}), id="missing-log"),
        pytest.param(cj_dumps([SCHEMA_ID, {}, {}]), id="not-an-object"),
        pytest.param(inner_bytes(schema=1), id="schema-not-string"),
        pytest.param(inner_bytes(body=[1]), id="body-not-object"),
        pytest.param(inner_bytes(body="x"), id="body-string"),
        pytest.param(inner_bytes(log={"seq": -1, "head": ZERO}), id="seq-negative"),
        pytest.param(inner_bytes(log={"seq": True, "head": HEAD}), id="seq-bool"),
        pytest.param(inner_bytes(log={"seq": "1", "head": HEAD}), id="seq-string"),
        pytest.param(inner_bytes(log={"seq": 0, "head": HEAD}), id="seq-0-nonzero-head"),
        pytest.param(inner_bytes(log={"seq": 1, "head": ZERO}), id="seq-1-zero-head"),
        pytest.param(
            inner_bytes(log={"seq": 1, "head": b64u_encode(bytes(31))}), id="head-31-bytes"
        ),
        pytest.param(inner_bytes(log={"seq": 1, "head": HEAD + "="}), id="head-padded"),
        pytest.param(inner_bytes(log={"seq": 1, "head": 1}), id="head-not-string"),
        pytest.param(inner_bytes(log={"seq": 1, "head": HEAD, "x": 1}), id="log-extra"),
        pytest.param(inner_bytes(log={"seq": 1}), id="log-missing-head"),
        pytest.param(inner_bytes(log=[1, HEAD]), id="log-not-object"),
    ],
)
def test_bad_inner_payload(alice: Node, bob: Node, inner: bytes) -> None:
    wire = craft(alice, [bob], inner=inner)
    assert rejected(bob, wire, alice, validator=PERMISSIVE).reason is Reason.BAD_PAYLOAD


def test_inner_payload_at_depth_32_and_sender_commitment_are_accepted(
    alice: Node, bob: Node
) -> None:
    body = example_body()
    deep: object = 1
    for _ in range(30):  # inner object 1, body 2, then 30 more levels = 32
        deep = [deep]
    body["x"] = deep
    log = {"seq": 7, "head": HEAD}
    wire = craft(alice, [bob], inner=inner_bytes(body, log))
    opened = accepted(bob, wire, alice, validator=PERMISSIVE)
    assert opened.body == body
    assert opened.log == LogPosition(7, bytes(range(32)))


# --- key wrap and commitment (sealed by hand) ------------------------------------------------


def test_other_content_key_wrapped_for_one_recipient(alice: Node, bob: Node, carol: Node) -> None:
    other = seed("other-content-key", alice.name)
    wire = craft(alice, [bob, carol], wrap_keys={1: other})
    assert accepted(bob, wire, alice).body == example_body()
    assert rejected(carol, wire, alice).reason is Reason.KEY_COMMITMENT_MISMATCH


def test_commitment_to_the_other_key_fails_for_everyone_else(
    alice: Node, bob: Node, carol: Node
) -> None:
    # kc commits to Carol's key, the content is under Bob's: Bob fails the
    # commitment, Carol passes it and then cannot decrypt.
    other = seed("other-content-key", alice.name)
    wire = craft(alice, [bob, carol], wrap_keys={1: other}, kc_key=other)
    assert rejected(bob, wire, alice).reason is Reason.KEY_COMMITMENT_MISMATCH
    assert rejected(carol, wire, alice).reason is Reason.DECRYPT_FAILED


@pytest.mark.parametrize(
    "epk",
    [
        bytes(32),
        bytes([1]) + bytes(31),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ],
    ids=["all-zero", "u=1", "order-8"],
)
def test_small_order_epk(alice: Node, bob: Node, epk: bytes) -> None:
    wire = craft(alice, [bob], epk=epk)
    assert rejected(bob, wire, alice).reason is Reason.UNWRAP_FAILED


def test_wrap_for_another_recipient_key(alice: Node, bob: Node, carol: Node) -> None:
    # Carol's wrap placed in Bob's entry (index 0) does not open with Bob's key.
    wire = craft(alice, [bob, carol])

    def steal(h: dict[str, Any]) -> None:
        h["to"][0]["wk"] = h["to"][1]["wk"]

    assert rejected(bob, with_header(wire, steal, alice.sig), alice).reason is (
        Reason.UNWRAP_FAILED
    )


# --- step order --------------------------------------------------------------------------


def test_order_expired_before_not_a_recipient(
    packet: SealedPacket, alice: Node, mallory: Node
) -> None:
    assert rejected(mallory, packet.wire, alice, now=packet.exp + 1).reason is Reason.EXPIRED


def test_order_future_dated_before_not_a_recipient(alice: Node, bob: Node, mallory: Node) -> None:
    future = seal_to(alice, bob, now=NOW + SKEW_MS + 1)
    assert rejected(mallory, future.wire, alice).reason is Reason.NOT_YET_VALID


def test_order_bad_signature_before_expired(packet: SealedPacket, alice: Node, bob: Node) -> None:
    wire = with_header(packet.wire, lambda h: h.__setitem__("clen", h["clen"] + 1))
    assert rejected(bob, wire, alice, now=packet.exp + 1).reason is Reason.BAD_SIGNATURE


def test_order_bad_header_before_unknown_sender(packet: SealedPacket, bob: Node) -> None:
    wire = with_header(packet.wire, lambda h: h.__setitem__("v", 2))
    assert rejected(bob, wire).reason is Reason.BAD_HEADER


def test_order_too_large_before_encoding(packet: SealedPacket, alice: Node, bob: Node) -> None:
    o = outer(packet.wire)
    o["sig"] = "not base64!"
    o["hp1"] = "A" * (b64u_length(MAX_HEADER_BYTES) + 1)
    assert rejected(bob, dump(o), alice).reason is Reason.TOO_LARGE


def test_order_encoding_before_header(packet: SealedPacket, alice: Node, bob: Node) -> None:
    wire = raw_header(packet.wire, b'"v":1', b'"v":2', alice.sig)
    wire = with_member(wire, "sig", outer(wire)["sig"] + "=")
    assert rejected(bob, wire, alice).reason is Reason.BAD_ENCODING


def test_order_replay_conflict_before_signature(
    packet: SealedPacket, alice: Node, bob: Node, mallory: Node
) -> None:
    replay = DictReplay()
    replay.record(accepted(bob, packet.wire, alice), b"receipt")
    forged = with_header(packet.wire, lambda h: h.__setitem__("exp", h["exp"] - 1), mallory.sig)
    assert rejected(bob, forged, alice, replay=replay).reason is Reason.REPLAY_CONFLICT
    # ... even when the sender is not pinned any more.
    assert rejected(bob, forged, replay=replay).reason is Reason.REPLAY_CONFLICT


def test_order_identical_replay_before_time_checks(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    replay = DictReplay()
    replay.record(accepted(bob, packet.wire, alice), b"stored receipt")
    again = receive(bob, packet.wire, alice, now=packet.exp + 1, replay=replay)
    assert isinstance(again, Replayed) and again.receipt == b"stored receipt"


def test_order_not_a_recipient_before_ciphertext(
    packet: SealedPacket, alice: Node, mallory: Node
) -> None:
    wire = with_member(packet.wire, "ct", outer(packet.wire)["ct"] + "==")
    assert rejected(mallory, wire, alice).reason is Reason.NOT_A_RECIPIENT


def test_order_unknown_recipient_key_before_ciphertext(
    packet: SealedPacket, alice: Node, bob: Node
) -> None:
    def kid(h: dict[str, Any]) -> None:
        h["to"][0]["kid"] = other_b64(h["to"][0]["kid"])

    wire = with_member(with_header(packet.wire, kid, alice.sig), "ct", "AAAA")
    assert rejected(bob, wire, alice).reason is Reason.UNKNOWN_RECIPIENT_KEY


def test_order_ciphertext_before_unwrap(alice: Node, bob: Node) -> None:
    wire = craft(alice, [bob], epk=bytes(32))
    wire = with_member(wire, "ct", b64u_encode(_ct(wire)[:-1]))
    assert rejected(bob, wire, alice).reason is Reason.CIPHERTEXT_MISMATCH


def test_order_key_commitment_before_padding(alice: Node, bob: Node) -> None:
    wire = craft(alice, [bob], padded=b"", kc_key=seed("x", "y"))
    assert rejected(bob, wire, alice).reason is Reason.KEY_COMMITMENT_MISMATCH


def test_order_payload_before_schema(alice: Node, bob: Node) -> None:
    wire = craft(alice, [bob], inner=inner_bytes(schema="handover/unknown/1", extra=1))
    assert rejected(bob, wire, alice).reason is Reason.BAD_PAYLOAD
