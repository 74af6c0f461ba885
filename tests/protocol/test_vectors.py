"""The library reproduces every known-answer vector in tests/vectors/ exactly.

Each vector file records its inputs (seeds, `now`, the random values drawn)
and the expected bytes; these tests rebuild the outputs from the inputs with
the package and compare byte for byte, and check the accept / reject cases.
`tools/make_vectors.py` writes the files; `test_generator_is_current` fails
when they are stale (run `make vectors`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from handover.protocol import crypto
from handover.protocol.auditchain import (
    LogPosition,
    chain_heads,
    entry_digest,
    extend,
    make_checkpoint,
    verify_checkpoint,
)
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps, cj_loads
from handover.protocol.errors import EncodingError, InvalidKeyset, InvalidPacket, Reason, RejectCode
from handover.protocol.keyset import KeyEntry, Keyset, accept_keyset, build_keyset, parse_keyset
from handover.protocol.opening import Opened, OwnBoxKey, ReceiverKeys, StoredReplay, open_packet
from handover.protocol.packet import (
    COMMITMENT_LABEL,
    CONTENT_KEY_LABEL,
    Identity,
    Recipient,
    _derive,
    _seal_at,
)
from handover.protocol.receipt import make_receipt, verify_receipt

ROOT = Path(__file__).resolve().parents[2]
VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors"
VECTOR_FILES = sorted(p.name for p in VECTOR_DIR.glob("*.json"))


@cache
def load(name: str) -> dict[str, Any]:
    """One vector file, parsed (cached: tests must not mutate it)."""
    data: dict[str, Any] = json.loads((VECTOR_DIR / name).read_text("utf-8"))
    return data


def cases(name: str, key: str = "cases") -> list[Any]:
    """pytest params for the `cases` list of a vector file, each named after its case."""
    return [
        pytest.param(case, id=str(case.get("name") or case.get("why") or i))
        for i, case in enumerate(load(name)[key])
    ]


class Permissive:
    def validate(self, schema_id: str, body: object) -> None:
        return None


def validator() -> Any:
    """The real schema registry once it exists; the envelope checks do not need it."""
    try:
        from handover.workflow.schemas import default_registry
    except ImportError:
        return Permissive()
    return default_registry()


def replay_rand(*values: bytes):
    """rand(n) handing out the recorded draws in order."""
    queue = list(values)

    def rand(n: int) -> bytes:
        value = queue.pop(0)
        assert len(value) == n
        return value

    return rand


def stream_rand(label: str):
    """The generator's BLAKE2b counter-mode stream, rebuilt from its description."""
    state = {"buffer": b"", "i": 0}

    def rand(n: int) -> bytes:
        while len(state["buffer"]) < n:
            block = hashlib.blake2b(
                crypto.pae("hp1-vectors/rand", label, crypto.le64(state["i"])), digest_size=64
            ).digest()
            state["buffer"] += block
            state["i"] += 1
        out, state["buffer"] = state["buffer"][:n], state["buffer"][n:]
        return out

    return rand


class VectorNode:
    """A node rebuilt from a vector's `describe()` block."""

    def __init__(self, d: dict[str, Any], now: int) -> None:
        self.d = d
        self.node: str = d["node"]
        self.root = crypto.SigningKey.from_seed(bytes.fromhex(d["root"]["seed_hex"]))
        self.entries: list[KeyEntry] = []
        self.signing: dict[str, crypto.SigningKey] = {}
        self.boxes: dict[str, crypto.BoxKey] = {}
        for k in d["keys"]:
            if k["type"] == "ed25519-sig":
                key = crypto.SigningKey.from_seed(bytes.fromhex(k["seed_hex"]))
                pk = key.public_key
                self.signing[k["kid"]] = key
            else:
                box = crypto.BoxKey.from_secret(bytes.fromhex(k["secret_key_hex"]))
                pk = box.public_key
                self.boxes[k["kid"]] = box
            assert pk.hex() == k["pk_hex"]
            assert crypto.kid(k["type"], pk) == k["kid"]
            self.entries.append(
                KeyEntry(k["kid"], k["type"], pk, k["nbf"], k["status"], k.get("until"))
            )
        self.wire = build_keyset(
            node=self.node,
            serial=d["serial"],
            iat=d["iat"],
            exp=d["exp"],
            root=self.root,
            keys=self.entries,
        )
        self.keyset: Keyset = accept_keyset(
            self.wire, node=self.node, fingerprint=d["root"]["fingerprint"], now=now
        )

    def identity(self) -> Identity:
        (kid,) = [e.kid for e in self.entries if e.type == "ed25519-sig" and e.status == "active"]
        return Identity(self.node, kid, self.signing[kid])

    def receiver(self) -> ReceiverKeys:
        own = {
            e.kid: OwnBoxKey(self.boxes[e.kid], e) for e in self.entries if e.type == "x25519-box"
        }
        return ReceiverKeys(self.node, own)


# --- every file --------------------------------------------------------------------------


def test_the_vector_set_is_complete() -> None:
    expected = {
        "keyset.json",
        "packet-two-recipients.json",
        "receipt-accepted.json",
        "receipt-rejected.json",
        "checkpoint.json",
        "audit-chain.json",
        "signature-lax-accepts.json",
        "keyset-small-order-key.json",
        "b64u.json",
        "cj.json",
    }
    assert expected <= set(VECTOR_FILES)


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_every_vector_describes_itself(name: str) -> None:
    vector = load(name)
    assert isinstance(vector["description"], str) and len(vector["description"]) > 40
    assert vector["generator"] == "tools/make_vectors.py"


def test_generator_is_current(tmp_path: Path) -> None:
    """A fresh run of tools/make_vectors.py writes exactly the committed files."""
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "tools/make_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path)]) == 0
    for name in sorted(p.name for p in tmp_path.iterdir()):
        assert (tmp_path / name).read_bytes() == (VECTOR_DIR / name).read_bytes(), (
            f"tests/vectors/{name} is stale: run `make vectors`"
        )


# --- keyset --------------------------------------------------------------------------------


def test_keyset_rebuilds_byte_identical_and_is_accepted() -> None:
    v = load("keyset.json")
    node = VectorNode(v, v["accept_at"])
    assert node.wire.decode("ascii") == v["keyset_wire"]
    ks = node.keyset
    assert ks.kb.decode("utf-8") == v["kb"]
    assert crypto.pae("hp1/keyset/v1", ks.kb).hex() == v["signed_message_hex"]
    assert json.loads(v["keyset_wire"])["sig"] == v["sig"]
    assert ks.fingerprint == v["root"]["fingerprint"]
    assert ks.root.hex() == v["root"]["pk_hex"]
    assert (ks.serial, ks.iat, ks.exp) == (v["serial"], v["iat"], v["exp"])
    newest = ks.newest_box_key(v["accept_at"])
    assert newest is not None and newest.kid == v["newest_box_kid"]


def test_keyset_is_refused_under_another_pin() -> None:
    v = load("keyset.json")
    with pytest.raises(InvalidKeyset):
        accept_keyset(v["keyset_wire"], node="other.example", fingerprint=None, now=v["accept_at"])
    with pytest.raises(InvalidKeyset):
        accept_keyset(v["keyset_wire"], node=v["node"], fingerprint="A" * 22, now=v["accept_at"])


# --- packet --------------------------------------------------------------------------------


def _packet_nodes() -> tuple[dict[str, Any], VectorNode, list[VectorNode]]:
    v = load("packet-two-recipients.json")
    sender = VectorNode(v["sender"], v["now"])
    recipients = [VectorNode(r, v["now"]) for r in v["recipients"]]
    return v, sender, recipients


def test_packet_reseals_byte_identical() -> None:
    v, sender, recipients = _packet_nodes()
    drawn = [bytes.fromhex(v["drawn"][k]) for k in ("K_hex", "e_hex", "n_hex", "pid_bytes_hex")]
    log = LogPosition.from_json(v["log"])
    to = [Recipient.from_keyset(r.keyset, v["now"]) for r in recipients]
    sealed = _seal_at(
        v["now"],
        replay_rand(*drawn),
        sender.identity(),
        to,
        v["schema"],
        v["body"],
        log,
        v["ttl_ms"],
    )
    x = v["expected"]
    assert sealed.hb.decode("utf-8") == x["HB"]
    assert b64u_encode(sealed.sig) == x["sig"]
    assert b64u_encode(sealed.pd) == x["pd"]
    assert sealed.wire.decode("ascii") == x["wire"]
    assert sealed.pid == x["pid"]
    # The recorded stream description gives the same draws.
    rand = stream_rand(v["rand"]["label"])
    assert [rand(len(d)) for d in drawn] == drawn


def test_packet_intermediate_values() -> None:
    v, sender, recipients = _packet_nodes()
    x = v["expected"]
    content_key = bytes.fromhex(v["drawn"]["K_hex"])
    ctx = (sender.node, sender.identity().kid, x["pid"])
    assert _derive(content_key, CONTENT_KEY_LABEL, *ctx).hex() == x["CK_hex"]
    assert _derive(content_key, COMMITMENT_LABEL, *ctx).hex() == x["kc_hex"]
    e = crypto.BoxKey.from_secret(bytes.fromhex(v["drawn"]["e_hex"]))
    assert e.public_key.hex() == x["E_hex"]
    inner = cj_dumps({"schema": v["schema"], "body": v["body"], "log": v["log"]})
    assert inner.decode("utf-8") == x["I"] and len(inner) == x["I_length"]
    header = cj_loads(x["HB"].encode("utf-8"))
    assert header["clen"] == x["clen"] == x["padded_length"] + 16
    for r, expected in zip(recipients, x["recipients"], strict=True):
        i = expected["index"]
        wk = crypto.box_wrap(content_key, i, r.keyset.key(expected["kid"]).public_key, e)
        assert b64u_encode(wk) == expected["wk"] == header["to"][i]["wk"]
        assert crypto.wrap_nonce(i).hex() == expected["wrap_nonce_hex"]
        own = r.boxes[expected["kid"]]
        assert crypto.box_unwrap(wk, i, e.public_key, own) == content_key


@pytest.mark.parametrize("index", [0, 1])
def test_each_recipient_opens_the_packet_to_exactly_I(index: int) -> None:
    v, sender, recipients = _packet_nodes()
    me = recipients[index]
    result = open_packet(
        v["expected"]["wire"].encode("ascii"),
        receiver=me.receiver(),
        peer_keyset={sender.node: sender.keyset}.get,
        now=v["now"],
        validator=validator(),
    )
    assert isinstance(result, Opened) and result.rejection is None
    opened_i = cj_dumps({"schema": result.schema, "body": result.body, "log": result.log.to_json()})
    assert opened_i.decode("utf-8") == v["expected"]["recipients"][index]["opened_I"]
    assert result.pid == v["expected"]["pid"]
    assert b64u_encode(result.pd) == v["expected"]["pd"]
    assert result.to == tuple(r.node for r in recipients)


def test_packet_body_is_the_first_release_notice_example() -> None:
    v = load("packet-two-recipients.json")
    schema = json.loads((ROOT / "schemas/release-notice.v1.json").read_text("utf-8"))
    assert v["body"] == schema["examples"][0]
    validator().validate(v["schema"], v["body"])


# --- receipts, audit chain, checkpoint --------------------------------------------------


@pytest.mark.parametrize("name", ["receipt-accepted.json", "receipt-rejected.json"])
def test_receipt_rebuilds_and_verifies(name: str) -> None:
    v = load(name)
    signer = VectorNode(v["signer"], v["now"])
    entry = v["log_entry"].encode("utf-8")
    assert cj_dumps(cj_loads(entry)) == entry
    position = LogPosition(1, chain_heads([entry])[0])
    assert position.to_json() == v["log"]
    wire = make_receipt(
        signer.identity(),
        pid=v["pid"],
        pd=b64u_decode(v["pd"]),
        to=v["sender"],
        status=v["status"],
        reason=RejectCode(v["reason"]) if v["reason"] else None,
        log=position,
        now=v["now"],
        rand=replay_rand(bytes.fromhex(v["drawn"]["rid_bytes_hex"])),
    )
    assert wire.decode("ascii") == v["expected"]["wire"]
    receipt = verify_receipt(
        wire,
        sender=v["sender"],
        pid=v["pid"],
        pd=b64u_decode(v["pd"]),
        recipient=signer.node,
        keyset_for={signer.node: signer.keyset}.get,
        now=v["now"],
    )
    assert receipt.rb.decode("utf-8") == v["expected"]["RB"]
    assert receipt.status == v["status"]
    assert crypto.pae("hp1/receipt/v1", receipt.rb).hex() == v["expected"]["signed_message_hex"]


def test_receipts_name_the_packet_vector() -> None:
    packet = load("packet-two-recipients.json")["expected"]
    for name in ("receipt-accepted.json", "receipt-rejected.json"):
        v = load(name)
        assert (v["pid"], v["pd"]) == (packet["pid"], packet["pd"])


def test_audit_chain_heads_recompute() -> None:
    v = load("audit-chain.json")
    entries = [e["entry"].encode("utf-8") for e in v["entries"]]
    assert len(entries) == 5
    for raw in entries:
        assert cj_dumps(cj_loads(raw)) == raw
    assert [b64u_encode(entry_digest(e)) for e in entries] == [e["digest"] for e in v["entries"]]
    heads = chain_heads(entries, b64u_decode(v["head_0"], 32))
    assert [b64u_encode(h) for h in heads] == [e["head"] for e in v["entries"]]
    digests = [b64u_decode(d, 32) for d in v["digests_response"]["digests"]]
    assert extend(crypto.ZERO_HEAD, digests) == heads[-1]
    # The disclosure entry names the packet, and the packet commits to head_5.
    packet = load("packet-two-recipients.json")
    assert cj_loads(entries[4])["pid"] == packet["expected"]["pid"]
    assert packet["log"] == {"seq": 5, "head": v["entries"][4]["head"]}


def test_checkpoint_rebuilds_and_verifies() -> None:
    v = load("checkpoint.json")
    signer = VectorNode(v["signer"], v["now"])
    position = LogPosition(v["seq"], b64u_decode(v["head"], 32))
    identity = signer.identity()
    wire = make_checkpoint(
        node=signer.node, kid=identity.kid, key=identity.key, position=position, now=v["now"]
    )
    assert wire.decode("ascii") == v["expected"]["wire"]
    checkpoint = verify_checkpoint(wire, signer.keyset, v["now"])
    assert checkpoint.cb.decode("utf-8") == v["expected"]["CB"]
    assert checkpoint.position == position
    assert v["head"] == load("audit-chain.json")["entries"][4]["head"]


# --- signatures libsodium refuses ----------------------------------------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _recover_x(y: int, sign: int) -> int | None:
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    return _P - x if (x & 1) != sign else x


def _add(p: tuple[int, ...], q: tuple[int, ...]) -> tuple[int, ...]:
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s: int, p: tuple[int, ...]) -> tuple[int, ...]:
    q: tuple[int, ...] = (0, 1, 1, 0)
    while s:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _encode(p: tuple[int, ...]) -> bytes:
    zinv = pow(p[2], _P - 2, _P)
    x, y = p[0] * zinv % _P, p[1] * zinv % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _decode(s: bytes) -> tuple[int, ...] | None:
    y = int.from_bytes(s, "little")
    sign, y = y >> 255, (y & ((1 << 255) - 1)) % _P  # lax: reduces a non-canonical y
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


_BY = 4 * pow(5, _P - 2, _P) % _P
_B = (_recover_x(_BY, 0), _BY, 1, _recover_x(_BY, 0) * _BY % _P)  # type: ignore[operator]


def lax_ed25519_verify(pk: bytes, message: bytes, sig: bytes) -> bool:
    """What NOT to do: the cofactorless equation with none of libsodium's input checks."""
    a = _decode(pk)
    if a is None:
        return False
    s = int.from_bytes(sig[32:], "little")  # no S < L check
    k = int.from_bytes(hashlib.sha512(sig[:32] + pk + message).digest(), "little") % _L
    minus_a = (_P - a[0], a[1], a[2], _P - a[3])
    return _encode(_add(_mul(s, _B), _mul(k, minus_a))) == sig[:32]  # type: ignore[arg-type]


@pytest.mark.parametrize("case", cases("signature-lax-accepts.json"))
def test_lax_signatures_are_refused_by_the_library(case: dict[str, Any]) -> None:
    pk = bytes.fromhex(case["public_key_hex"])
    message = bytes.fromhex(case["message_hex"])
    sig = bytes.fromhex(case["signature_hex"])
    assert not crypto.ed25519_verify(pk, message, sig)
    assert lax_ed25519_verify(pk, message, sig), "the vector must fool a lax verifier"
    if "valid_signature_hex" in case:
        valid = bytes.fromhex(case["valid_signature_hex"])
        assert crypto.ed25519_verify(pk, message, valid)
        assert lax_ed25519_verify(pk, message, valid)
        assert not lax_ed25519_verify(pk, message + b"!", valid)
        assert int.from_bytes(sig[32:], "little") >= _L


def test_malleated_packet_is_refused() -> None:
    v, sender, recipients = _packet_nodes()
    (case,) = [c for c in load("signature-lax-accepts.json")["cases"] if "packet_wire" in c]
    wire = case["packet_wire"].encode("ascii")

    def receive(replay: Any = None) -> Any:
        return open_packet(
            wire,
            receiver=recipients[0].receiver(),
            peer_keyset={sender.node: sender.keyset}.get,
            now=v["now"],
            replay=replay,
            validator=Permissive(),
        )

    with pytest.raises(InvalidPacket) as info:
        receive()
    assert info.value.reason == Reason(case["expected_reason"])
    # A receiver that already holds the original sees another pd for the same pid.
    stored = StoredReplay(b64u_decode(v["expected"]["pd"]), b"receipt")
    assert case["packet_pd"] != v["expected"]["pd"]
    with pytest.raises(InvalidPacket) as info:
        receive(lambda node, pid: stored)
    assert info.value.reason == Reason.REPLAY_CONFLICT


# --- keysets holding a bad key -------------------------------------------------------------


@pytest.mark.parametrize("case", cases("keyset-small-order-key.json"))
def test_small_order_keysets_are_rejected_whole(case: dict[str, Any]) -> None:
    v = load("keyset-small-order-key.json")
    wire = case["keyset_wire"].encode("ascii")
    # Correctly signed, with a kid that matches: only the key itself is wrong.
    outer = json.loads(wire)
    kb = b64u_decode(outer["hp1k"])
    body = cj_loads(kb)
    root = b64u_decode(body["root"], 32)
    assert crypto.ed25519_verify(root, crypto.pae("hp1/keyset/v1", kb), b64u_decode(outer["sig"]))
    bad = [k for k in body["keys"] if k["kid"] == case["bad_kid"]]
    assert len(bad) == 1 and b64u_decode(bad[0]["pk"]).hex() == case["bad_pk_hex"]
    assert crypto.kid(case["key_type"], bytes.fromhex(case["bad_pk_hex"])) == case["bad_kid"]
    with pytest.raises(InvalidKeyset):
        parse_keyset(wire)
    with pytest.raises(InvalidKeyset):
        accept_keyset(wire, node=v["node"], fingerprint=v["fingerprint"], now=v["accept_at"])


def test_small_order_keysets_are_fine_without_the_bad_key() -> None:
    """Control: the same keyset minus the bad key is accepted, so the bad key is the cause."""
    v = load("keyset-small-order-key.json")
    body = cj_loads(b64u_decode(json.loads(v["cases"][0]["keyset_wire"])["hp1k"]))
    root = crypto.SigningKey.from_seed(bytes.fromhex(v["root_seed_hex"]))
    good = [
        KeyEntry(k["kid"], k["type"], b64u_decode(k["pk"]), k["nbf"], k["status"])
        for k in body["keys"]
        if k["kid"] != v["cases"][0]["bad_kid"]
    ]
    wire = build_keyset(
        node=v["node"], serial=1, iat=body["iat"], exp=body["exp"], root=root, keys=good
    )
    accept_keyset(wire, node=v["node"], fingerprint=v["fingerprint"], now=v["accept_at"])


# --- encodings -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("b64u.json"))
def test_b64u_cases(case: dict[str, Any]) -> None:
    if case["valid"]:
        raw = b64u_decode(case["input"])
        assert raw.hex() == case["bytes_hex"]
        assert b64u_encode(raw) == case["input"]
    else:
        with pytest.raises(EncodingError):
            b64u_decode(case["input"])


@pytest.mark.parametrize("case", cases("cj.json"))
def test_cj_cases(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["input_hex"])
    if "input" in case:
        assert case["input"].encode("utf-8") == raw
    if case["valid"]:
        assert cj_dumps(cj_loads(raw)) == raw
    else:
        with pytest.raises(EncodingError):
            cj_loads(raw)
