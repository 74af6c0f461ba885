"""The package against an independent hp1 implementation (tests/independent_hp1.py).

`independent_hp1` was written from docs/protocol.md alone, on raw libsodium; here
each side makes what the other must accept (keysets, packets, receipts,
checkpoints), both reproduce the known-answer vectors, and every tampered
variant of an independently sealed packet is refused by both with the same
reason. The CLI (`python -m handover.cli`) is driven in a subprocess, as an
operator would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import independent_hp1 as ind
from handover.node import keystore
from handover.protocol import crypto
from handover.protocol.auditchain import LogPosition, make_checkpoint, verify_checkpoint
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps, cj_loads
from handover.protocol.errors import (
    EncodingError,
    InvalidCheckpoint,
    InvalidKeyset,
    InvalidPacket,
    InvalidReceipt,
    Reason,
    RejectCode,
)
from handover.protocol.keyset import KeyEntry, Keyset, accept_keyset, build_keyset
from handover.protocol.opening import Opened, OwnBoxKey, ReceiverKeys, StoredReplay, open_packet
from handover.protocol.packet import Identity, Recipient, _seal_at, seal
from handover.protocol.receipt import make_receipt, verify_receipt
from handover.protocol.timeutil import DAY_MS, now_ms

ROOT = Path(__file__).resolve().parents[2]
VECTORS = Path(__file__).resolve().parents[1] / "vectors"
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 60 * 60 * 1000
SCHEMA_ID = "handover/release-notice/1"
BODY: dict[str, Any] = json.loads((ROOT / "schemas/release-notice.v1.json").read_text("utf-8"))[
    "examples"
][0]
L = 2**252 + 27742317777372353535851937790883648493


def vector(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text("utf-8"))
    return data


class Permissive:
    def validate(self, schema_id: str, body: object) -> None:
        return None


def stream(label: str) -> Callable[[int], bytes]:
    """A deterministic rand(n) for the independent side."""
    state = {"buf": b"", "i": 0}

    def rand(n: int) -> bytes:
        while len(state["buf"]) < n:
            state["buf"] += ind.h64(ind.pae("crosscheck", label, str(state["i"])))
            state["i"] += 1
        out, state["buf"] = state["buf"][:n], state["buf"][n:]
        return out

    return rand


def secrets(node: str, nbf: int = NOW - DAY_MS) -> ind.NodeSecrets:
    seed = lambda what: ind.h32(ind.pae("crosscheck-seed", node, what))  # noqa: E731
    return ind.NodeSecrets(node, seed("root"), seed("sig"), seed("box"), nbf)


@dataclass
class Peer:
    """One node seen by both implementations."""

    s: ind.NodeSecrets
    wire: bytes
    pkg: Keyset
    ind: ind.AcceptedKeyset

    @classmethod
    def make(cls, node: str, now: int = NOW) -> Peer:
        s = secrets(node, now - DAY_MS)
        wire = s.keyset(1, now - HOUR, now - HOUR + 7 * DAY_MS)
        pkg = accept_keyset(wire, node=node, fingerprint=s.fingerprint, now=now)
        mine = ind.verify_keyset(wire, node=node, fingerprint=s.fingerprint, now=now)
        return cls(s, wire, pkg, mine)

    @property
    def node(self) -> str:
        return self.s.node

    def identity(self) -> Identity:
        return Identity(self.node, self.s.sig_kid, crypto.SigningKey.from_seed(self.s.sig_seed))

    def receiver(self) -> ReceiverKeys:
        entry = self.pkg.key(self.s.box_kid)
        assert entry is not None
        box = crypto.BoxKey.from_secret(self.s.box_secret)
        return ReceiverKeys(self.node, {entry.kid: OwnBoxKey(box, entry)})


SENDER = Peer.make("prison.indep.example")
R1 = Peer.make("probation.indep.example")
R2 = Peer.make("exit.indep.example")
RECIPIENTS = [R1, R2]


def pkg_open(wire: bytes, me: Peer, *, now: int = NOW, senders: tuple[Peer, ...] = (SENDER,)):
    return open_packet(
        wire,
        receiver=me.receiver(),
        peer_keyset={p.node: p.pkg for p in senders}.get,
        now=now,
        validator=Permissive(),
    )


def ind_open(wire: bytes, me: Peer, *, now: int = NOW, senders: tuple[Peer, ...] = (SENDER,)):
    return ind.open_packet(
        wire, me=me.s, my_keyset=me.ind, senders={p.node: p.ind for p in senders}, now=now
    )


def draft(label: str = "base", **kw: Any) -> ind.Draft:
    """An independently sealed packet from SENDER to R1 (index 0) and R2 (index 1)."""
    to = [(r.node, r.s.box_kid, r.s.box_pk) for r in RECIPIENTS]
    kw.setdefault("now", NOW)
    kw.setdefault("log", (3, ind.h32(b"some head")))
    return ind.seal_draft(SENDER.s, to, SCHEMA_ID, BODY, rand=stream(label), **kw)


# --- (e) keysets -----------------------------------------------------------------------


def test_keysets_are_byte_identical_on_both_sides() -> None:
    s = SENDER.s
    entries = [
        KeyEntry(s.sig_kid, "ed25519-sig", s.sig_pk, s.nbf, "active"),
        KeyEntry(s.box_kid, "x25519-box", s.box_pk, s.nbf, "active"),
    ]
    pkg_wire = build_keyset(
        node=s.node,
        serial=1,
        iat=NOW - HOUR,
        exp=NOW - HOUR + 7 * DAY_MS,
        root=crypto.SigningKey.from_seed(s.root_seed),
        keys=entries,
    )
    assert pkg_wire == SENDER.wire


def test_package_keyset_accepted_by_independent(tmp_path: Path) -> None:
    keys = keystore.init_keys(tmp_path / "keys", "a.example", NOW)
    ks = ind.verify_keyset(
        keys.keyset.wire, node="a.example", fingerprint=keys.fingerprint, now=NOW
    )
    assert ks.fingerprint == keys.fingerprint
    assert set(ks.keys) == {k.kid for k in keys.keyset.keys}


def test_keyset_vector_on_the_independent_side() -> None:
    v = vector("keyset.json")
    ks = ind.verify_keyset(
        v["keyset_wire"], node=v["node"], fingerprint=v["root"]["fingerprint"], now=v["accept_at"]
    )
    assert ks.kb.decode("utf-8") == v["kb"]
    assert ks.newest_box(v["accept_at"]).kid == v["newest_box_kid"]
    keys = [
        {
            k: e[k2]
            for k, k2 in (("kid", "kid"), ("type", "type"), ("nbf", "nbf"), ("status", "status"))
        }
        | {"pk": ind.b64u(bytes.fromhex(e["pk_hex"]))}
        | ({"until": e["until"]} if "until" in e else {})
        for e in v["keys"]
    ]
    rebuilt = ind.build_keyset(
        v["node"], v["serial"], v["iat"], v["exp"], bytes.fromhex(v["root"]["seed_hex"]), keys
    )
    assert rebuilt.decode("ascii") == v["keyset_wire"]


@pytest.mark.parametrize(
    "case", vector("keyset-small-order-key.json")["cases"], ids=lambda c: c["name"]
)
def test_small_order_keysets_refused_by_independent(case: dict[str, Any]) -> None:
    v = vector("keyset-small-order-key.json")
    with pytest.raises(ind.Refused):
        ind.verify_keyset(
            case["keyset_wire"], node=v["node"], fingerprint=v["fingerprint"], now=v["accept_at"]
        )


def test_keyset_rollback_rules_agree() -> None:
    s = SENDER.s
    newer = s.keyset(2, NOW, NOW + 7 * DAY_MS)
    older_pkg = SENDER.pkg
    assert accept_keyset(newer, node=s.node, fingerprint=s.fingerprint, now=NOW, last=older_pkg)
    assert ind.verify_keyset(
        newer, node=s.node, fingerprint=s.fingerprint, now=NOW, last=SENDER.ind
    )
    # Going back to serial 1 after serial 2: refused by both.
    last_pkg = accept_keyset(newer, node=s.node, fingerprint=s.fingerprint, now=NOW)
    last_ind = ind.verify_keyset(newer, node=s.node, fingerprint=s.fingerprint, now=NOW)
    with pytest.raises(InvalidKeyset):
        accept_keyset(SENDER.wire, node=s.node, fingerprint=s.fingerprint, now=NOW, last=last_pkg)
    with pytest.raises(ind.Refused):
        ind.verify_keyset(
            SENDER.wire, node=s.node, fingerprint=s.fingerprint, now=NOW, last=last_ind
        )
    # A higher serial that drops a key id: refused by both (docs/protocol.md, stricter reading).
    dropped = s.keyset(3, NOW, NOW + 7 * DAY_MS, keys=s.key_entries()[:1])
    with pytest.raises(InvalidKeyset):
        accept_keyset(dropped, node=s.node, fingerprint=s.fingerprint, now=NOW, last=last_pkg)
    with pytest.raises(ind.Refused):
        ind.verify_keyset(dropped, node=s.node, fingerprint=s.fingerprint, now=NOW, last=last_ind)


# --- (a) package seals, independent opens ------------------------------------------------


def test_package_seal_opens_independently() -> None:
    sender = Peer.make("prison.pkg.example")
    sealed = seal(
        sender.identity(),
        [Recipient.from_keyset(r.pkg, NOW) for r in RECIPIENTS],
        SCHEMA_ID,
        BODY,
        log=LogPosition(7, crypto.h32(b"head")),
        now=NOW,
        validator=Permissive(),
    )
    for r in RECIPIENTS:
        opened = ind_open(sealed.wire, r, senders=(sender,))
        assert (opened.schema, opened.body) == (SCHEMA_ID, BODY)
        assert opened.log == (7, crypto.h32(b"head"))
        assert opened.pd == sealed.pd and opened.pid == sealed.pid


def test_same_draws_give_the_same_packet_on_both_sides() -> None:
    d = draft("identical")
    wire = d.wire()
    rand = stream("identical")
    pkg = _seal_at(
        NOW,
        rand,
        SENDER.identity(),
        [Recipient.from_keyset(r.pkg, NOW) for r in RECIPIENTS],
        SCHEMA_ID,
        BODY,
        LogPosition(3, ind.h32(b"some head")),
        14 * DAY_MS,
    )
    assert pkg.wire == wire


def test_packet_vector_on_the_independent_side() -> None:
    v = vector("packet-two-recipients.json")

    def node(d: dict[str, Any]) -> tuple[ind.NodeSecrets, ind.AcceptedKeyset]:
        sig = next(k for k in d["keys"] if k["type"] == "ed25519-sig" and k["status"] == "active")
        box = next(k for k in d["keys"] if k["type"] == "x25519-box" and k["status"] == "active")
        s = ind.NodeSecrets(
            d["node"],
            bytes.fromhex(d["root"]["seed_hex"]),
            bytes.fromhex(sig["seed_hex"]),
            bytes.fromhex(box["secret_key_hex"]),
            sig["nbf"],
        )
        ks = ind.verify_keyset(
            d["keyset_wire"], node=d["node"], fingerprint=d["root"]["fingerprint"], now=v["now"]
        )
        return s, ks

    sender, sender_ks = node(v["sender"])
    recipients = [node(r) for r in v["recipients"]]
    drawn = [bytes.fromhex(v["drawn"][k]) for k in ("K_hex", "e_hex", "n_hex", "pid_bytes_hex")]
    head = ind.unb64u(v["log"]["head"], 32)
    d = ind.seal_draft(
        sender,
        [(s.node, s.box_kid, s.box_pk) for s, _ in recipients],
        v["schema"],
        v["body"],
        now=v["now"],
        ttl=v["ttl_ms"],
        log=(v["log"]["seq"], head),
        rand=lambda n: drawn.pop(0),
    )
    assert d.wire().decode("ascii") == v["expected"]["wire"]
    assert d.extra["ck"].hex() == v["expected"]["CK_hex"]
    assert d.extra["kc"].hex() == v["expected"]["kc_hex"]
    for (s, ks), expected in zip(recipients, v["expected"]["recipients"], strict=True):
        opened = ind.open_packet(
            v["expected"]["wire"].encode("ascii"),
            me=s,
            my_keyset=ks,
            senders={sender.node: sender_ks},
            now=v["now"],
        )
        assert opened.inner.decode("utf-8") == expected["opened_I"]
        assert ind.b64u(opened.pd) == v["expected"]["pd"]


# --- (b) independent seals, package opens --------------------------------------------------


def test_independent_seal_opens_in_the_package() -> None:
    wire = draft().wire()
    for r in RECIPIENTS:
        opened = pkg_open(wire, r)
        assert isinstance(opened, Opened) and opened.rejection is None
        assert (opened.schema, opened.body) == (SCHEMA_ID, BODY)
        assert opened.log == LogPosition(3, ind.h32(b"some head"))
        assert ind_open(wire, r).inner == cj_dumps(
            {"schema": SCHEMA_ID, "body": BODY, "log": opened.log.to_json()}
        )


def test_independent_seal_passes_the_real_schema_registry() -> None:
    from handover.workflow.schemas import default_registry

    opened = open_packet(
        draft().wire(),
        receiver=R1.receiver(),
        peer_keyset={SENDER.node: SENDER.pkg}.get,
        now=NOW,
        validator=default_registry(),
    )
    assert isinstance(opened, Opened) and opened.rejection is None


# --- (c) tampered packets -------------------------------------------------------------------


def _signed_then(mutate: Callable[[ind.Draft], None]) -> Callable[[ind.Draft], bytes]:
    """Sign first, then change the draft: the old signature no longer covers it."""

    def run(d: ind.Draft) -> bytes:
        d.sign()
        mutate(d)
        return d.wire(resign=False)

    return run


def _resigned(mutate: Callable[[ind.Draft], None]) -> Callable[[ind.Draft], bytes]:
    """Change the draft, then have the (real) sender sign it: later checks must catch it."""

    def run(d: ind.Draft) -> bytes:
        mutate(d)
        return d.wire()

    return run


def _set(path: str, value: Any) -> Callable[[ind.Draft], None]:
    def mutate(d: ind.Draft) -> None:
        target = d.header
        *parents, last = path.split(".")
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        target[int(last) if last.isdigit() else last] = value

    return mutate


def _flip_ct(d: ind.Draft) -> None:
    d.ct = bytes([d.ct[0] ^ 1]) + d.ct[1:]


def _flip_ct_fix_digest(d: ind.Draft) -> None:
    _flip_ct(d)
    d.header["ch"] = ind.b64u(ind.h64(d.ct))


def _reorder(d: ind.Draft) -> None:
    d.header["to"].reverse()


def _drop(index: int) -> Callable[[ind.Draft], None]:
    return lambda d: d.header["to"].pop(index)


def _duplicate(d: ind.Draft) -> None:
    d.header["to"].append(dict(d.header["to"][0]))


def _wk_length(n: int) -> Callable[[ind.Draft], None]:
    return _set("to.0.wk", ind.b64u(bytes(n)))


def _commitment_split(d: ind.Draft) -> None:
    """Wrap another content key for R2 only: R1 and R2 would read different content."""
    other_key = ind.h32(b"another content key")
    wk = ind.sodium.crypto_box(other_key, ind.wrap_nonce(1), R2.s.box_pk, d.extra["e"])
    d.header["to"][1]["wk"] = ind.b64u(wk)


def _s_plus_l(d: ind.Draft) -> bytes:
    sig = d.sign()
    s = int.from_bytes(sig[32:], "little") + L
    d.sig = sig[:32] + s.to_bytes(32, "little")
    return d.wire(resign=False)


def _outer(edit: Callable[[dict[str, str]], Any]) -> Callable[[ind.Draft], bytes]:
    def run(d: ind.Draft) -> bytes:
        outer = json.loads(d.wire())
        result = edit(outer)
        return result if isinstance(result, bytes) else json.dumps(outer).encode()

    return run


def _raw_header(hb: bytes) -> Callable[[ind.Draft], bytes]:
    """A header of arbitrary bytes, signed by the sender."""

    def run(d: ind.Draft) -> bytes:
        sig = ind.sign(SENDER.s.sig_sk, ind.pae("hp1/packet/v1", hb))
        return ind.cj({"hp1": ind.b64u(hb), "sig": ind.b64u(sig), "ct": ind.b64u(d.ct)})

    return run


def _header_with_spaces(d: ind.Draft) -> bytes:
    return _raw_header(json.dumps(d.header, sort_keys=True).encode())(d)


_GOOD_INNER = ind.cj(
    {"schema": SCHEMA_ID, "body": BODY, "log": {"seq": 0, "head": ind.b64u(bytes(32))}}
)


@dataclass
class Tamper:
    name: str
    make: Callable[[ind.Draft], bytes]
    reason: Reason
    who: int = 0  # which recipient tries to open it
    now: int = NOW
    draft_kw: dict[str, Any] | None = None


TAMPERED = [
    Tamper("too-large", lambda d: b" " * (22 * 1024 * 1024 + 512 * 1024 + 1), Reason.TOO_LARGE),
    Tamper(
        "header-over-64k",
        _outer(lambda o: o.update(hp1="A" * (ind.b64u_chars(64 * 1024) + 1))),
        Reason.TOO_LARGE,
    ),
    Tamper("wire-extra-member", _outer(lambda o: o.update(x="y")), Reason.MALFORMED_WIRE),
    Tamper(
        "wire-duplicate-member",
        _outer(lambda o: (json.dumps(o)[:-1] + ', "ct": "' + o["ct"] + '"}').encode()),
        Reason.MALFORMED_WIRE,
    ),
    Tamper("wire-not-json", lambda d: d.wire()[:-1], Reason.MALFORMED_WIRE),
    Tamper("sig-padded", _outer(lambda o: o.update(sig=o["sig"] + "==")), Reason.BAD_ENCODING),
    Tamper(
        "sig-63-bytes", _outer(lambda o: o.update(sig=ind.b64u(bytes(63)))), Reason.BAD_ENCODING
    ),
    Tamper("hp1-std-alphabet", _outer(lambda o: o.update(hp1=o["hp1"] + "+")), Reason.BAD_ENCODING),
    Tamper("header-whitespace", _header_with_spaces, Reason.BAD_HEADER),
    Tamper("header-typ", _resigned(_set("typ", "hp1.receipt")), Reason.BAD_HEADER),
    Tamper("header-v2", _resigned(_set("v", 2)), Reason.BAD_HEADER),
    Tamper("header-v-true", _resigned(_set("v", True)), Reason.BAD_HEADER),
    Tamper("header-extra-member", _resigned(_set("alg", "none")), Reason.BAD_HEADER),
    Tamper("header-pid-short", _resigned(_set("pid", ind.b64u(bytes(15)))), Reason.BAD_HEADER),
    Tamper("from-extra-member", _resigned(_set("from.x", 1)), Reason.BAD_HEADER),
    Tamper(
        "from-node-newline",
        _resigned(_set("from.node", "prison.indep.example\n")),
        Reason.BAD_HEADER,
    ),
    Tamper("to-duplicated", _resigned(_duplicate), Reason.BAD_HEADER),
    Tamper("to-empty", _resigned(_set("to", [])), Reason.BAD_HEADER),
    Tamper("to-entry-extra-member", _resigned(_set("to.0.x", 1)), Reason.BAD_HEADER),
    Tamper("wk-47-bytes", _resigned(_wk_length(47)), Reason.BAD_HEADER),
    Tamper("wk-49-bytes", _resigned(_wk_length(49)), Reason.BAD_HEADER),
    Tamper("epk-31-bytes", _resigned(_set("epk", ind.b64u(bytes(31)))), Reason.BAD_HEADER),
    Tamper("clen-negative", _resigned(_set("clen", -1)), Reason.BAD_HEADER),
    Tamper("unknown-sender", _resigned(_set("from.node", "other.example")), Reason.UNKNOWN_SENDER),
    Tamper(
        "unknown-signing-key",
        _resigned(_set("from.kid", SENDER.s.box_kid)),
        Reason.UNKNOWN_SIGNING_KEY,
    ),
    Tamper("iat-flipped-unsigned", _signed_then(_set("iat", NOW + 1)), Reason.BAD_SIGNATURE),
    Tamper("to-reordered-unsigned", _signed_then(_reorder), Reason.BAD_SIGNATURE),
    Tamper("to-removed-unsigned", _signed_then(_drop(1)), Reason.BAD_SIGNATURE),
    Tamper(
        "ch-flipped-unsigned", _signed_then(_set("ch", ind.b64u(bytes(64)))), Reason.BAD_SIGNATURE
    ),
    Tamper("sig-s-plus-l", _s_plus_l, Reason.BAD_SIGNATURE),
    Tamper("header-empty-object", _raw_header(b"{}"), Reason.BAD_HEADER),
    Tamper(
        "iat-in-future",
        lambda d: d.wire(),
        Reason.NOT_YET_VALID,
        draft_kw={"now": NOW + 6 * 60_000},
    ),
    Tamper("expired", lambda d: d.wire(), Reason.EXPIRED, now=NOW + 14 * DAY_MS + 1),
    Tamper(
        "lifetime-31-days", lambda d: d.wire(), Reason.BAD_LIFETIME, draft_kw={"ttl": 31 * DAY_MS}
    ),
    Tamper("lifetime-zero", lambda d: d.wire(), Reason.BAD_LIFETIME, draft_kw={"ttl": 0}),
    Tamper("to-removed-self", _resigned(_drop(0)), Reason.NOT_A_RECIPIENT),
    Tamper(
        "to-kid-unknown", _resigned(_set("to.0.kid", R1.s.sig_kid)), Reason.UNKNOWN_RECIPIENT_KEY
    ),
    Tamper(
        "ct-bit-flipped",
        lambda d: (_flip_ct(d), d.wire(resign=False))[1],
        Reason.CIPHERTEXT_MISMATCH,
    ),
    Tamper(
        "clen-wrong",
        _resigned(lambda d: d.header.update(clen=d.header["clen"] + 1)),
        Reason.CIPHERTEXT_MISMATCH,
    ),
    Tamper("ch-wrong", _resigned(_set("ch", ind.b64u(bytes(64)))), Reason.CIPHERTEXT_MISMATCH),
    Tamper(
        "ct-std-alphabet", _outer(lambda o: o.update(ct="+" + o["ct"][1:])), Reason.BAD_ENCODING
    ),
    Tamper("to-reordered", _resigned(_reorder), Reason.UNWRAP_FAILED),
    Tamper("to-removed-other", _resigned(_drop(0)), Reason.UNWRAP_FAILED, who=1),
    Tamper("epk-all-zero", _resigned(_set("epk", ind.b64u(bytes(32)))), Reason.UNWRAP_FAILED),
    Tamper(
        "wk-swapped",
        _resigned(lambda d: _set("to.0.wk", d.header["to"][1]["wk"])(d)),
        Reason.UNWRAP_FAILED,
    ),
    Tamper(
        "kc-flipped", _resigned(_set("kc", ind.b64u(bytes(32)))), Reason.KEY_COMMITMENT_MISMATCH
    ),
    Tamper(
        "kc-split-recipients", _resigned(_commitment_split), Reason.KEY_COMMITMENT_MISMATCH, who=1
    ),
    Tamper("ct-flipped-digest-fixed", _resigned(_flip_ct_fix_digest), Reason.DECRYPT_FAILED),
    Tamper("nonce-changed", _resigned(_set("n", ind.b64u(bytes(24)))), Reason.DECRYPT_FAILED),
    Tamper(
        "padding-one-block-too-many",
        lambda d: d.wire(),
        Reason.BAD_PADDING,
        draft_kw={"padded": ind.pad(_GOOD_INNER) + bytes(4096)},
    ),
    Tamper(
        "padding-marker-missing",
        lambda d: d.wire(),
        Reason.BAD_PADDING,
        draft_kw={"padded": ind.pad(_GOOD_INNER).replace(b"}\x80", b"}\x00")},
    ),
    Tamper(
        "padding-not-block-multiple",
        lambda d: d.wire(),
        Reason.BAD_PADDING,
        draft_kw={"padded": _GOOD_INNER + b"\x80"},
    ),
    Tamper(
        "payload-extra-member",
        lambda d: d.wire(),
        Reason.BAD_PAYLOAD,
        draft_kw={
            "inner": ind.cj(
                {
                    "schema": SCHEMA_ID,
                    "body": BODY,
                    "log": {"seq": 0, "head": ind.b64u(bytes(32))},
                    "x": 1,
                }
            )
        },
    ),
    Tamper(
        "payload-seq0-nonzero-head",
        lambda d: d.wire(),
        Reason.BAD_PAYLOAD,
        draft_kw={
            "inner": ind.cj(
                {
                    "schema": SCHEMA_ID,
                    "body": BODY,
                    "log": {"seq": 0, "head": ind.b64u(bytes(31) + b"\x01")},
                }
            )
        },
    ),
    Tamper(
        "payload-not-canonical",
        lambda d: d.wire(),
        Reason.BAD_PAYLOAD,
        draft_kw={
            "inner": json.dumps(
                {"schema": SCHEMA_ID, "body": {}, "log": {"seq": 0, "head": ind.b64u(bytes(32))}}
            ).encode()
        },
    ),
    Tamper(
        "payload-body-not-object",
        lambda d: d.wire(),
        Reason.BAD_PAYLOAD,
        draft_kw={
            "inner": ind.cj(
                {"schema": SCHEMA_ID, "body": [], "log": {"seq": 0, "head": ind.b64u(bytes(32))}}
            )
        },
    ),
]


@pytest.mark.parametrize("t", TAMPERED, ids=lambda t: t.name)
def test_tampered_packets_are_refused_by_both(t: Tamper) -> None:
    d = draft(t.name, **(t.draft_kw or {}))
    wire = t.make(d)
    me = RECIPIENTS[t.who]
    with pytest.raises(InvalidPacket) as info:
        pkg_open(wire, me, now=t.now)
    assert info.value.reason == t.reason, info.value.detail
    assert str(info.value) == "invalid_packet"
    with pytest.raises(ind.Refused) as refused:
        ind_open(wire, me, now=t.now)
    assert refused.value.reason == t.reason.value


def test_the_other_recipient_still_opens_a_split_packet() -> None:
    """kc-split-recipients: R1 reads the real content; only R2's wrapped key lies."""
    d = draft("kc-split-recipients")
    _commitment_split(d)
    wire = d.wire()
    assert isinstance(pkg_open(wire, R1), Opened)
    assert ind_open(wire, R1).body == BODY


def test_every_receive_reason_of_steps_1_to_8_is_exercised() -> None:
    covered = {t.reason for t in TAMPERED} | {
        Reason.REPLAY_CONFLICT,  # test_replay_agrees
        Reason.KEY_NOT_VALID,  # test_retired_signing_key_agrees
    }
    assert covered == set(Reason)


def test_replay_agrees() -> None:
    first = draft("replay").wire()
    d = draft("replay")  # the same draws: the same pid
    d.header["iat"] += 1  # but another header, so another pd
    conflicting = d.wire()
    seen: dict[tuple[str, str], bytes] = {}
    opened = ind.open_packet(
        first, me=R1.s, my_keyset=R1.ind, senders={SENDER.node: SENDER.ind}, now=NOW, seen=seen
    )
    assert ind.open_packet(
        first, me=R1.s, my_keyset=R1.ind, senders={SENDER.node: SENDER.ind}, now=NOW, seen=seen
    ).replayed
    with pytest.raises(ind.Refused) as refused:
        ind.open_packet(
            conflicting,
            me=R1.s,
            my_keyset=R1.ind,
            senders={SENDER.node: SENDER.ind},
            now=NOW,
            seen=seen,
        )
    assert refused.value.reason == "replay_conflict"
    stored = StoredReplay(opened.pd, b"the stored receipt")
    result = open_packet(
        first,
        receiver=R1.receiver(),
        peer_keyset={SENDER.node: SENDER.pkg}.get,
        now=NOW,
        replay=lambda node, pid: stored,
        validator=Permissive(),
    )
    assert not isinstance(result, Opened) and result.receipt == b"the stored receipt"
    with pytest.raises(InvalidPacket) as info:
        open_packet(
            conflicting,
            receiver=R1.receiver(),
            peer_keyset={SENDER.node: SENDER.pkg}.get,
            now=NOW,
            replay=lambda node, pid: stored,
            validator=Permissive(),
        )
    assert info.value.reason == Reason.REPLAY_CONFLICT


def test_retired_signing_key_agrees() -> None:
    """A retired key verifies packets dated up to `until`, and nothing later."""
    s = SENDER.s
    until = NOW - HOUR
    keys = s.key_entries()
    keys[0] = keys[0] | {"status": "retired", "until": until}
    wire = s.keyset(2, NOW - HOUR, NOW + 6 * DAY_MS, keys=keys)
    pkg_ks = accept_keyset(wire, node=s.node, fingerprint=s.fingerprint, now=NOW)
    ind_ks = ind.verify_keyset(wire, node=s.node, fingerprint=s.fingerprint, now=NOW)
    for iat, ok in ((until, True), (until + 1, False)):
        packet = draft(f"retired-{iat}", now=iat).wire()
        pkg_call = lambda: open_packet(  # noqa: E731
            packet,
            receiver=R1.receiver(),
            peer_keyset={s.node: pkg_ks}.get,
            now=NOW,
            validator=Permissive(),
        )
        ind_call = lambda: ind.open_packet(  # noqa: E731
            packet, me=R1.s, my_keyset=R1.ind, senders={s.node: ind_ks}, now=NOW
        )
        if ok:
            assert isinstance(pkg_call(), Opened)
            assert ind_call().body == BODY
        else:
            with pytest.raises(InvalidPacket) as info:
                pkg_call()
            assert info.value.reason == Reason.KEY_NOT_VALID
            with pytest.raises(ind.Refused) as refused:
                ind_call()
            assert refused.value.reason == "key_not_valid"


# --- (d) receipts and checkpoints -----------------------------------------------------------


def test_receipts_cross_verify() -> None:
    wire = draft("receipts").wire()
    opened = pkg_open(wire, R1)
    assert isinstance(opened, Opened)
    position = (4, ind.h32(b"receiver head"))
    rid = bytes(range(16))
    for status, reason in (("accepted", None), ("rejected", RejectCode.SCHEMA_INVALID)):
        theirs = ind.make_receipt(
            R1.s,
            rid=rid,
            pid=opened.pid,
            pd=opened.pd,
            to=SENDER.node,
            status=status,
            reason=reason.value if reason else None,
            now=NOW,
            log=position,
        )
        ours = make_receipt(
            R1.identity(),
            pid=opened.pid,
            pd=opened.pd,
            to=SENDER.node,
            status=status,  # type: ignore[arg-type]
            reason=reason,
            log=LogPosition(*position),
            now=NOW,
            rand=lambda n: rid,
        )
        assert ours == theirs
        receipt = verify_receipt(
            theirs,
            sender=SENDER.node,
            pid=opened.pid,
            pd=opened.pd,
            recipient=R1.node,
            keyset_for={R1.node: R1.pkg}.get,
            now=NOW,
        )
        assert receipt.status == status
        body = ind.verify_receipt(
            ours,
            sender=SENDER.node,
            pid=opened.pid,
            pd=opened.pd,
            recipients={R1.node: R1.ind, R2.node: R2.ind},
            now=NOW,
        )
        assert body["status"] == status and body.get("reason") == (reason and reason.value)
    # A receipt for another pd, or signed by a non-recipient, is refused by both.
    other = ind.make_receipt(
        SENDER.s,
        rid=rid,
        pid=opened.pid,
        pd=opened.pd,
        to=SENDER.node,
        status="accepted",
        reason=None,
        now=NOW,
        log=position,
    )
    with pytest.raises(InvalidReceipt):
        verify_receipt(
            other,
            sender=SENDER.node,
            pid=opened.pid,
            pd=opened.pd,
            recipient=R1.node,
            keyset_for={SENDER.node: SENDER.pkg}.get,
            now=NOW,
        )
    with pytest.raises(ind.Refused):
        ind.verify_receipt(
            other,
            sender=SENDER.node,
            pid=opened.pid,
            pd=opened.pd,
            recipients={R1.node: R1.ind},
            now=NOW,
        )


@pytest.mark.parametrize("name", ["receipt-accepted.json", "receipt-rejected.json"])
def test_receipt_vectors_on_the_independent_side(name: str) -> None:
    v = vector(name)
    signer = v["signer"]
    ks = ind.verify_keyset(
        signer["keyset_wire"],
        node=signer["node"],
        fingerprint=signer["root"]["fingerprint"],
        now=v["now"],
    )
    body = ind.verify_receipt(
        v["expected"]["wire"].encode("ascii"),
        sender=v["sender"],
        pid=v["pid"],
        pd=ind.unb64u(v["pd"]),
        recipients={signer["node"]: ks},
        now=v["now"],
    )
    assert body["status"] == v["status"]
    sig = next(k for k in signer["keys"] if k["type"] == "ed25519-sig" and k["status"] == "active")
    s = ind.NodeSecrets(signer["node"], b"", bytes.fromhex(sig["seed_hex"]), bytes(32), 0)
    rebuilt = ind.make_receipt(
        s,
        rid=bytes.fromhex(v["drawn"]["rid_bytes_hex"]),
        pid=v["pid"],
        pd=ind.unb64u(v["pd"]),
        to=v["sender"],
        status=v["status"],
        reason=v["reason"],
        now=v["now"],
        log=ind.parse_position(v["log"]),
    )
    assert rebuilt.decode("ascii") == v["expected"]["wire"]
    assert ind.chain([v["log_entry"].encode("utf-8")]) == [ind.unb64u(v["log"]["head"])]


def test_checkpoints_cross_verify() -> None:
    head = ind.h32(b"checkpoint head")
    theirs = ind.make_checkpoint(SENDER.s, seq=12, head=head, now=NOW)
    identity = SENDER.identity()
    ours = make_checkpoint(
        node=SENDER.node,
        kid=identity.kid,
        key=identity.key,
        position=LogPosition(12, head),
        now=NOW,
    )
    assert ours == theirs
    assert verify_checkpoint(theirs, SENDER.pkg, NOW).position == LogPosition(12, head)
    assert ind.verify_checkpoint(ours, SENDER.ind, NOW) == (12, head)
    # Signed by a key of another node: refused by both.
    forged = ind.make_checkpoint(
        ind.NodeSecrets(SENDER.node, b"", R1.s.sig_seed, bytes(32), 0), seq=12, head=head, now=NOW
    )
    with pytest.raises(InvalidCheckpoint):
        verify_checkpoint(forged, SENDER.pkg, NOW)
    with pytest.raises(ind.Refused):
        ind.verify_checkpoint(forged, SENDER.ind, NOW)


def test_checkpoint_and_chain_vectors_on_the_independent_side() -> None:
    v = vector("checkpoint.json")
    signer = v["signer"]
    ks = ind.verify_keyset(
        signer["keyset_wire"],
        node=signer["node"],
        fingerprint=signer["root"]["fingerprint"],
        now=v["now"],
    )
    assert ind.verify_checkpoint(v["expected"]["wire"].encode("ascii"), ks, v["now"]) == (
        v["seq"],
        ind.unb64u(v["head"]),
    )
    chain = vector("audit-chain.json")
    entries = [e["entry"].encode("utf-8") for e in chain["entries"]]
    assert [ind.b64u(h) for h in ind.chain(entries)] == [e["head"] for e in chain["entries"]]
    assert [ind.b64u(ind.h32(e)) for e in entries] == chain["digests_response"]["digests"]
    for raw in entries:
        assert ind.cj(ind.cj_parse(raw)) == raw


# --- encodings ----------------------------------------------------------------------------


def test_encoding_vectors_on_the_independent_side() -> None:
    for case in vector("b64u.json")["cases"]:
        if case["valid"]:
            assert ind.unb64u(case["input"]).hex() == case["bytes_hex"], case
        else:
            with pytest.raises(ind.Refused):
                ind.unb64u(case["input"])
    for case in vector("cj.json")["cases"]:
        raw = bytes.fromhex(case["input_hex"])
        if case["valid"]:
            assert ind.cj(ind.cj_parse(raw)) == raw, case
            assert ind.cj(cj_loads(raw)) == cj_dumps(ind.cj_parse(raw)) == raw
        else:
            with pytest.raises(ind.Refused):
                ind.cj_parse(raw)


def test_cj_serialisers_agree_on_awkward_strings() -> None:
    value = {
        "s": "".join(chr(c) for c in range(0x00, 0x80))
        + "\u0080\u00ff\u2028\u2029\ufeff\U0001f600",
        "n": [0, -1, 2**53 - 1, -(2**53 - 1)],
        "B": True,
        "a": {"z": False, "Z": []},
    }
    assert ind.cj(value) == cj_dumps(value)
    for bad in ({"a": None}, {"a": 1.5}, {"\u00e9": 1}, {"": 1}, {"a": "\ud800"}, {"a": 2**53}):
        with pytest.raises(ind.Refused):
            ind.cj(bad)
        with pytest.raises(EncodingError):
            cj_dumps(bad)


# --- the CLI, in a subprocess --------------------------------------------------------------


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run(
        [sys.executable, "-m", "handover.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"handover {' '.join(args)} failed: {proc.stderr}")
    return proc


@dataclass
class CliWorld:
    tmp: Path
    now: int
    sender_dir: Path
    sender_fp: str
    receiver_dir: Path
    receiver_fp: str
    ind_sender: Peer
    ind_recipient: Peer
    body_file: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> CliWorld:
    tmp = tmp_path_factory.mktemp("cli")
    now = now_ms()
    out = {}
    for node in ("prison.cli.example", "probation.cli.example"):
        out[node] = json.loads(cli("keys", "init", "--node", node, "--dir", str(tmp / node)).stdout)
    ind_sender = Peer.make("prison.indep.example", now)
    ind_recipient = Peer.make("exit.indep.example", now)
    for peer in (ind_sender, ind_recipient):
        (tmp / f"{peer.node}.json").write_bytes(peer.wire)
    body_file = tmp / "body.json"
    body_file.write_text(json.dumps(BODY, indent=2), "utf-8")
    return CliWorld(
        tmp,
        now,
        tmp / "prison.cli.example",
        out["prison.cli.example"]["fingerprint"],
        tmp / "probation.cli.example",
        out["probation.cli.example"]["fingerprint"],
        ind_sender,
        ind_recipient,
        body_file,
    )


def test_cli_seal_opens_independently(world: CliWorld) -> None:
    w = world
    args = ["packet", "seal", "--keys", str(w.sender_dir), "--schema", SCHEMA_ID]
    args += ["--to", str(w.tmp / f"{w.ind_recipient.node}.json")]
    args += ["--to", str(w.receiver_dir / "keyset.json"), "--body", str(w.body_file)]
    proc = cli(*args)
    wire = proc.stdout.strip().encode("ascii")
    sender_ks = ind.verify_keyset(
        (w.sender_dir / "keyset.json").read_bytes(),
        node="prison.cli.example",
        fingerprint=w.sender_fp,
        now=now_ms(),
    )
    opened = ind.open_packet(
        wire,
        me=w.ind_recipient.s,
        my_keyset=w.ind_recipient.ind,
        senders={"prison.cli.example": sender_ks},
        now=now_ms(),
    )
    assert (opened.schema, opened.body, opened.log) == (SCHEMA_ID, BODY, (0, bytes(32)))
    header = cj_loads(b64u_decode(json.loads(wire)["hp1"]))
    assert [t["node"] for t in header["to"]] == ["exit.indep.example", "probation.cli.example"]


def test_independent_seal_opens_with_the_cli(world: CliWorld) -> None:
    w = world
    receiver_ks = ind.verify_keyset(
        (w.receiver_dir / "keyset.json").read_bytes(),
        node="probation.cli.example",
        fingerprint=w.receiver_fp,
        now=w.now,
    )
    now = now_ms()
    good = ind.seal(w.ind_sender.s, [receiver_ks], SCHEMA_ID, BODY, now=now, rand=os.urandom)
    packet = w.tmp / "packet.json"
    packet.write_bytes(good + b"\n")
    sender_file = str(w.tmp / f"{w.ind_sender.node}.json")
    fingerprint = f"--fingerprint={w.ind_sender.s.fingerprint}"
    open_args = ["packet", "open", "--keys", str(w.receiver_dir), "--sender", sender_file]
    opened = json.loads(cli(*open_args, fingerprint, str(packet)).stdout)
    assert opened == {
        "schema": SCHEMA_ID,
        "body": BODY,
        "log": {"seq": 0, "head": b64u_encode(bytes(32))},
    }
    verified = json.loads(
        cli("packet", "verify", "--sender", sender_file, fingerprint, str(packet)).stdout
    )
    assert verified["signature"] == "valid" and verified["time"] == "valid"
    # In process, with the key directory the CLI made.
    keys = keystore.load_keys(w.receiver_dir)
    result = open_packet(
        good,
        receiver=keys.receiver_keys(),
        peer_keyset={w.ind_sender.node: w.ind_sender.pkg}.get,
        now=now,
        validator=Permissive(),
    )
    assert isinstance(result, Opened) and result.body == BODY
    # A malleated signature (S + L): `packet verify` names the broken signature; `packet
    # open` has recorded the original pid, and another pd for it is a replay conflict.
    outer = json.loads(good)
    sig = ind.unb64u(outer["sig"])
    outer["sig"] = ind.b64u(
        sig[:32] + (int.from_bytes(sig[32:], "little") + L).to_bytes(32, "little")
    )
    bad = w.tmp / "malleated.json"
    bad.write_text(json.dumps(outer), "utf-8")
    proc = cli("packet", "verify", "--sender", sender_file, fingerprint, str(bad), check=False)
    assert proc.returncode != 0 and "bad_signature" in proc.stderr
    proc = cli(*open_args, fingerprint, str(bad), check=False)
    assert proc.returncode != 0 and "replay_conflict" in proc.stderr
