"""Fuzz targets of the protocol layer, shared by the hypothesis tests and the atheris driver.

Each `check_*` function takes one input and returns normally when the code under
test either accepted it (and the acceptance is consistent) or refused it with its
documented error; anything else (RecursionError, UnicodeError, KeyError,
TypeError, an AssertionError of a property here...) propagates and is the
finding. The documented errors:

    canonical.cj_loads / strict_json_loads / parse_wire_object / b64u_decode   EncodingError
    keyset.parse_keyset / accept_keyset                                       InvalidKeyset
    opening.parse_packet                  InvalidPacket, reason of steps 1-2 (size, wire, header)
    opening.open_packet                   InvalidPacket with a Reason (steps 1-8)

Accepted inputs are checked too: CJ input is byte-identical to its re-encoding,
b64u decodes to the one encoding it came from, an opened packet's body CJ bytes
are exactly the CJ of its body, and the package and the independent
implementation (tests/independent_hp1.py) agree on CJ and b64u.

Keys are the deterministic test nodes of tests/conftest.py, so every input is
reproducible.
"""

from __future__ import annotations

import json
from typing import Any

import independent_hp1 as ind
from conftest import NOW, PERMISSIVE, SCHEMA_ID, DictReplay, example_body, make_node, registry, seed
from handover.protocol import crypto
from handover.protocol.auditchain import LogPosition
from handover.protocol.canonical import (
    b64u_decode,
    b64u_encode,
    cj_dumps,
    cj_loads,
    dump_wire_object,
    parse_wire_object,
    strict_json_loads,
)
from handover.protocol.errors import EncodingError, InvalidKeyset, InvalidPacket, Reason
from handover.protocol.keyset import KEYSET_LABEL, Keyset, accept_keyset, parse_keyset
from handover.protocol.opening import Opened, Replayed, StoredReplay, open_packet, parse_packet
from handover.protocol.packet import (
    COMMITMENT_LABEL,
    CONTENT_KEY_LABEL,
    DEFAULT_TTL_MS,
    PACKET_LABEL,
    pad,
)
from handover.protocol.receipt import make_receipt

ALICE = make_node("prison.alice.example")  # sender
BOB = make_node("probation.bob.example")  # receiver under test
CAROL = make_node("exit.carol.example")  # second recipient
MALLORY = make_node("mallory.example")  # pinned, never a recipient
PINNED = {n.name: n.keyset for n in (ALICE, BOB, CAROL, MALLORY)}
PARSE_REASONS = frozenset(
    {Reason.TOO_LARGE, Reason.MALFORMED_WIRE, Reason.BAD_ENCODING, Reason.BAD_HEADER}
)
WIRE_MEMBERS = ("hp1", "sig", "ct")


# --- valid inputs (the seeds that mutations start from) ------------------------------------


def craft(
    inner: bytes | None = None,
    padded: bytes | None = None,
    *,
    header_change: dict[str, Any] | None = None,
    sender: Any = ALICE,
    recipients: tuple[Any, ...] = (BOB, CAROL),
) -> bytes:
    """Seal by hand from the primitives (as tests/test_packet_negative.py does), so the
    payload may be anything: every check up to decryption passes, and what follows
    is the receiver's handling of the plaintext."""
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
    kc = crypto.kh32(content_key, crypto.pae(COMMITMENT_LABEL, node, kid, pid))
    ct = crypto.secretbox_seal(padded, nonce, ck)
    to = [
        {
            "node": r.name,
            "kid": r.recipient().kid,
            "wk": b64u_encode(crypto.box_wrap(content_key, i, r.recipient().public_key, ephemeral)),
        }
        for i, r in enumerate(recipients)
    ]
    header: dict[str, Any] = {
        "typ": "hp1.packet",
        "v": 1,
        "pid": pid,
        "iat": NOW,
        "exp": NOW + DEFAULT_TTL_MS,
        "from": {"node": node, "kid": kid},
        "to": to,
        "epk": b64u_encode(ephemeral.public_key),
        "kc": b64u_encode(kc),
        "n": b64u_encode(nonce),
        "clen": len(ct),
        "ch": b64u_encode(crypto.h64(ct)),
    }
    header.update(header_change or {})
    hb = cj_dumps(header)
    sig = sender.sig.sign(crypto.pae(PACKET_LABEL, hb))
    return dump_wire_object(
        {"hp1": b64u_encode(hb), "sig": b64u_encode(sig), "ct": b64u_encode(ct)}
    )


VALID_PACKET = craft()
VALID_OUTER: dict[str, str] = json.loads(VALID_PACKET)
VALID_HB = b64u_decode(VALID_OUTER["hp1"])
VALID_HEADER: dict[str, Any] = json.loads(VALID_HB)
VALID_CT = b64u_decode(VALID_OUTER["ct"])
VALID_INNER = cj_dumps(
    {"schema": SCHEMA_ID, "body": example_body(), "log": LogPosition.genesis().to_json()}
)
VALID_KEYSET = ALICE.keyset.wire
VALID_KB = ALICE.keyset.kb
VALID_KEYSET_BODY: dict[str, Any] = json.loads(VALID_KB)
VALID_RECEIPT = make_receipt(
    BOB.identity,
    pid=VALID_HEADER["pid"],
    pd=crypto.h64(b"pd"),
    to=ALICE.name,
    status="accepted",
    reason=None,
    log=LogPosition.genesis(),
    now=NOW,
)
# Valid CJ documents of every kind the protocol parses.
CJ_SEEDS: tuple[bytes, ...] = (
    VALID_HB,
    VALID_KB,
    VALID_INNER,
    cj_dumps(example_body()),
    b64u_decode(json.loads(VALID_RECEIPT)["hp1r"]),
)
WIRE_SEEDS: tuple[bytes, ...] = (VALID_PACKET, VALID_KEYSET, VALID_RECEIPT)


# --- byte-level mutation -------------------------------------------------------------------

INTERESTING = (
    b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"0", b"-", b"1e5", b".5", b" ", b"\n",
    b"\x00", b"\x7f", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\\ud800",
    b"\\u0000", b"null", b"true", b"NaN", b"Infinity", b"9" * 30, b"=", b"+", b"/", b"_",
    b"A", b"[" * 40, b"{\"a\":" * 40, b'"hp1"', b'"sig"', b'"ct"',
)  # fmt: skip


def mutate(data: bytes, ops: list[tuple[int, int, int, bytes]]) -> bytes:
    """Apply `ops`, each (kind, position, length, payload), positions taken modulo the size.

    kinds: 0 flip a bit, 1 delete a range, 2 insert payload, 3 overwrite with payload,
    4 duplicate a range, 5 truncate, 6 insert an interesting token.
    """
    out = bytearray(data)
    for kind, pos, length, payload in ops:
        size = len(out)
        at = pos % (size + 1)
        match kind % 7:
            case 0 if size:
                out[at % size] ^= 1 << (length % 8)
            case 1:
                del out[at : at + length]
            case 2:
                out[at:at] = payload
            case 3:
                out[at : at + len(payload)] = payload
            case 4:
                out[at:at] = out[at : at + length]
            case 5:
                del out[at:]
            case 6:
                out[at:at] = INTERESTING[length % len(INTERESTING)]
            case _:
                pass
    return bytes(out)


# --- canonical JSON, wire objects, base64url -----------------------------------------------


def check_cj_loads(data: bytes) -> None:
    """cj_loads: EncodingError or a value whose CJ is the input; the independent
    implementation decides the same way and finds the same value."""
    try:
        value = cj_loads(data)
    except EncodingError:
        try:
            ind.cj_parse(data)
        except ind.Refused:
            return
        raise AssertionError(f"cj_loads refused what the independent parser accepts: {data!r}")
    assert cj_dumps(value) == data
    assert ind.cj_parse(data) == value, data


def check_strict_json(data: bytes | str) -> None:
    """strict_json_loads on bytes or text: a value or EncodingError."""
    try:
        strict_json_loads(data)
    except EncodingError:
        return


def check_wire_object(data: bytes | str) -> None:
    """parse_wire_object: exactly the members, each a string, or EncodingError."""
    try:
        value = parse_wire_object(data, WIRE_MEMBERS)
    except EncodingError:
        return
    assert set(value) == set(WIRE_MEMBERS)
    assert all(type(v) is str for v in value.values())


def check_b64u(text: object, length: int | None) -> None:
    """b64u_decode: the one strict encoding of its bytes, or EncodingError; the
    independent decoder agrees."""
    try:
        raw = b64u_decode(text, length)  # type: ignore[arg-type]
    except EncodingError:
        try:
            ind.unb64u(text, length)
        except (ind.Refused, ValueError):
            return
        raise AssertionError(f"b64u_decode refused what the independent decoder accepts: {text!r}")
    assert isinstance(text, str)
    assert b64u_encode(raw) == text
    assert length is None or len(raw) == length
    assert ind.unb64u(text, length) == raw


def check_b64u_bytes(data: bytes) -> None:
    """b64u over raw bytes: the first byte picks the expected length (or none)."""
    if not data:
        return check_b64u("", None)
    length = None if data[0] >= 128 else data[0] % 70
    return check_b64u(data[1:].decode("latin-1"), length)


# --- keysets --------------------------------------------------------------------------------


def check_parse_keyset(data: bytes | str) -> None:
    """parse_keyset: a Keyset or InvalidKeyset."""
    try:
        ks = parse_keyset(data)
    except InvalidKeyset:
        return
    assert isinstance(ks, Keyset)


def check_accept_keyset(data: bytes | str, last: Keyset | None = None) -> None:
    """accept_keyset against Alice's pin, with or without her last accepted keyset."""
    try:
        ks = accept_keyset(data, node=ALICE.name, fingerprint=ALICE.fingerprint, now=NOW, last=last)
    except InvalidKeyset:
        return
    assert ks.node == ALICE.name and ks.fingerprint == ALICE.fingerprint


def resign_keyset(kb: bytes, root: Any = ALICE.root) -> bytes:
    """A keyset wire object for body bytes `kb`, signed by `root` (default: Alice's)."""
    sig = root.sign(crypto.pae(KEYSET_LABEL, kb))
    return dump_wire_object({"hp1k": b64u_encode(kb), "sig": b64u_encode(sig)})


# --- packets ----------------------------------------------------------------------------


def check_parse_packet(data: bytes) -> None:
    """parse_packet: an unverified packet or InvalidPacket with a reason of steps 1-2."""
    try:
        packet = parse_packet(data)
    except InvalidPacket as exc:
        assert str(exc) == "invalid_packet" and exc.args == ("invalid_packet",)
        assert exc.reason in PARSE_REASONS, exc.reason
        return
    assert isinstance(packet.sender, str) and isinstance(packet.pid, str)


def _replay_store(data: bytes, with_record: bool) -> DictReplay:
    store = DictReplay()
    if with_record:
        # A record for the valid packet's (sender, pid) with another digest, so a
        # mutation that keeps the pid meets step 3's conflict branch.
        store.records[(ALICE.name, VALID_HEADER["pid"])] = StoredReplay(
            crypto.h64(b"other"), VALID_RECEIPT
        )
    return store


def check_open_packet(
    data: bytes, *, replay_record: bool = False, real_registry: bool = False
) -> None:
    """open_packet as Bob with Alice, Carol and Mallory pinned: Opened, Replayed or
    InvalidPacket with a Reason; an opened body's CJ bytes are exactly its CJ."""
    store = _replay_store(data, replay_record)
    try:
        opened = open_packet(
            data,
            receiver=BOB.receiver,
            peer_keyset=PINNED.get,
            now=NOW,
            replay=store.lookup,
            validator=registry() if real_registry else PERMISSIVE,
        )
    except InvalidPacket as exc:
        assert str(exc) == "invalid_packet" and exc.args == ("invalid_packet",)
        assert isinstance(exc.reason, Reason)
        return
    if isinstance(opened, Replayed):
        assert replay_record
        return
    assert isinstance(opened, Opened)
    assert isinstance(opened.body, dict) and isinstance(opened.schema, str)
    assert opened.body_cj == cj_dumps(opened.body)
    assert opened.sender in PINNED and BOB.name in opened.to


def resign_header(hb: bytes, *, ct: bytes = VALID_CT, signer: Any = ALICE) -> bytes:
    """A packet wire object with header bytes `hb` honestly signed by `signer`."""
    sig = signer.sig.sign(crypto.pae(PACKET_LABEL, hb))
    return json.dumps(
        {"hp1": b64u_encode(hb), "sig": b64u_encode(sig), "ct": b64u_encode(ct)}
    ).encode()


def check_resigned_header(hb: bytes) -> None:
    """Arbitrary header bytes with a valid signature of Alice: steps 2 and 4-8."""
    check_open_packet(resign_header(hb))


def check_crafted_payload(inner: bytes, padded: bytes | None = None) -> None:
    """A packet that decrypts, carrying `inner` (or the raw `padded` plaintext)."""
    wire = craft(inner, padded)
    check_open_packet(wire)
    check_open_packet(wire, real_registry=True)


# --- atheris entry points: one bytes input each ---------------------------------------------

BYTE_TARGETS = {
    "cj_loads": check_cj_loads,
    "strict_json": check_strict_json,
    "wire_object": check_wire_object,
    "b64u": check_b64u_bytes,
    "parse_keyset": check_parse_keyset,
    "accept_keyset": lambda data: check_accept_keyset(data, ALICE.keyset),
    "resigned_keyset": lambda data: check_accept_keyset(resign_keyset(data)),
    "parse_packet": check_parse_packet,
    "open_packet": check_open_packet,
    "resigned_header": check_resigned_header,
    "crafted_payload": check_crafted_payload,
}
# Valid inputs each atheris target starts mutating from (libFuzzer's seed corpus).
SEEDS: dict[str, tuple[bytes, ...]] = {
    "cj_loads": CJ_SEEDS,
    "strict_json": CJ_SEEDS + WIRE_SEEDS,
    "wire_object": WIRE_SEEDS,
    "b64u": tuple(b"\x10" + v.encode() for v in VALID_OUTER.values()),
    "parse_keyset": (VALID_KEYSET,),
    "accept_keyset": (VALID_KEYSET,),
    "resigned_keyset": (VALID_KB,),
    "parse_packet": (VALID_PACKET,),
    "open_packet": (VALID_PACKET,),
    "resigned_header": (VALID_HB,),
    "crafted_payload": (VALID_INNER,),
}
