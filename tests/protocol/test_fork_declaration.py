"""Fork declarations (docs/protocol.md 5.1): the exact bytes signed, and every rule
of `verify_fork_declaration`, one defect per test. Also the backup primitives
of crypto.py: Argon2id and secretstream."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import NOW, Node, box_entry, make_node, sig_entry
from handover.protocol import crypto
from handover.protocol.auditchain import (
    FORK_LABEL,
    LogPosition,
    make_checkpoint,
    make_fork_declaration,
    verify_checkpoint,
    verify_fork_declaration,
)
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps, dump_wire_object
from handover.protocol.errors import InvalidCheckpoint
from handover.protocol.timeutil import DAY_MS, SKEW_MS

HEAD = bytes(range(32))
PREVIOUS = LogPosition(41, HEAD)


def declare(node: Node, previous: LogPosition = PREVIOUS, now: int = NOW) -> bytes:
    return make_fork_declaration(
        node=node.name, kid=node.identity.kid, key=node.sig, previous=previous, now=now
    )


def signed(node: Node, body: dict[str, Any], label: str = FORK_LABEL) -> bytes:
    """A wire object over any body, signed with the node's signing key."""
    fb = cj_dumps(body)
    sig = node.sig.sign(crypto.pae(label, fb))
    return dump_wire_object({"hp1f": b64u_encode(fb), "sig": b64u_encode(sig)})


def body_of(signer: Node, **changes: Any) -> dict[str, Any]:
    """The declaration body; a change to None removes the member."""
    body: dict[str, Any] = {
        "typ": "hp1.fork",
        "v": 1,
        "node": signer.name,
        "kid": signer.identity.kid,
        "previous": PREVIOUS.to_json(),
        "iat": NOW,
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    return body


def test_the_declaration_signs_exactly_fb_under_its_own_label(alice: Node) -> None:
    wire = declare(alice)
    outer = json.loads(wire)
    assert set(outer) == {"hp1f", "sig"}
    fb = b64u_decode(outer["hp1f"])
    assert fb == cj_dumps(body_of(alice))
    assert fb.startswith(b'{"iat":1767225600000,"kid":"') and b'"typ":"hp1.fork","v":1}' in fb
    message = crypto.pae("hp1/fork/v1", fb)
    assert crypto.ed25519_verify(alice.sig.public_key, message, b64u_decode(outer["sig"], 64))
    declaration = verify_fork_declaration(wire, alice.keyset, NOW)
    assert (declaration.node, declaration.previous, declaration.iat) == (alice.name, PREVIOUS, NOW)
    assert declaration.to_json()["signed"] == wire.decode()


def test_a_declaration_at_the_start_of_a_log_names_the_zero_head(alice: Node) -> None:
    wire = declare(alice, LogPosition.genesis())
    assert verify_fork_declaration(wire, alice.keyset, NOW).previous == LogPosition.genesis()


def test_a_checkpoint_signature_is_not_a_fork_declaration(alice: Node) -> None:
    """Each statement has its own label: one cannot be replayed as the other."""
    checkpoint = json.loads(
        make_checkpoint(
            node=alice.name, kid=alice.identity.kid, key=alice.sig, position=PREVIOUS, now=NOW
        )
    )
    # A checkpoint's signed bytes presented as a declaration: wrong label and body.
    with pytest.raises(InvalidCheckpoint):
        verify_fork_declaration(
            dump_wire_object({"hp1f": checkpoint["hp1c"], "sig": checkpoint["sig"]}),
            alice.keyset,
            NOW,
        )
    forged = signed(alice, body_of(alice), label="hp1/checkpoint/v1")
    with pytest.raises(InvalidCheckpoint, match="signature"):
        verify_fork_declaration(forged, alice.keyset, NOW)
    declaration = json.loads(declare(alice))
    as_checkpoint = dump_wire_object({"hp1c": declaration["hp1f"], "sig": declaration["sig"]})
    with pytest.raises(InvalidCheckpoint):
        verify_checkpoint(as_checkpoint, alice.keyset, NOW)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"typ": "hp1.checkpoint"}, "typ or v"),
        ({"v": 2}, "typ or v"),
        ({"v": True}, "typ or v"),
        ({"iat": None}, "members"),
        ({"extra": 1}, "members"),
        ({"previous": {"seq": 3}}, "previous"),
        ({"previous": {"seq": 0, "head": b64u_encode(HEAD)}}, "previous"),
        ({"previous": {"seq": -1, "head": b64u_encode(HEAD)}}, "previous"),
        ({"iat": NOW + SKEW_MS + 1}, "future"),
        ({"iat": "now"}, "iat"),
        ({"node": "probation.bob.example"}, "node"),
        ({"kid": 7}, "kid"),
        ({"kid": "AAAAAAAAAAAAAAAAAAAAAA"}, "not valid"),
    ],
)
def test_each_defect_is_refused(alice: Node, changes: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidCheckpoint, match=match):
        verify_fork_declaration(signed(alice, body_of(alice, **changes)), alice.keyset, NOW)


def test_another_nodes_key_or_a_changed_byte_is_refused(alice: Node, mallory: Node) -> None:
    forged = signed(mallory, body_of(alice, kid=mallory.identity.kid))
    with pytest.raises(InvalidCheckpoint, match="not valid"):
        verify_fork_declaration(forged, alice.keyset, NOW)
    outer = json.loads(declare(alice))
    fb = bytearray(b64u_decode(outer["hp1f"]))
    fb[fb.index(b"41")] = ord("4") - 1  # previous seq 41 -> 31
    outer["hp1f"] = b64u_encode(bytes(fb))
    with pytest.raises(InvalidCheckpoint, match="signature"):
        verify_fork_declaration(json.dumps(outer), alice.keyset, NOW)
    with pytest.raises(InvalidCheckpoint, match="well-formed"):
        verify_fork_declaration(b'{"hp1f":"","sig":"","x":""}', alice.keyset, NOW)


def test_a_key_retired_before_the_declaration_cannot_sign_it() -> None:
    base = make_node("prison.retired.example")
    keys = [
        sig_entry(base.sig, NOW - 10 * DAY_MS, "retired", NOW - DAY_MS),
        box_entry(base.box, NOW - 10 * DAY_MS),
    ]
    node = make_node("prison.retired.example", keys=keys)
    with pytest.raises(InvalidCheckpoint, match="not valid"):
        verify_fork_declaration(declare(node), node.keyset, NOW)
    earlier = declare(node, now=NOW - 2 * DAY_MS)
    assert verify_fork_declaration(earlier, node.keyset, NOW).iat == NOW - 2 * DAY_MS


# --- crypto.py: what backups use --------------------------------------------------------

FAST = {"opslimit": 1, "memlimit": 8 * 1024 * 1024}


def test_argon2id_is_deterministic_and_salted() -> None:
    salt = bytes(16)
    one = crypto.argon2id_key(b"a passphrase", salt, **FAST)
    assert len(one) == 32 and one == crypto.argon2id_key(b"a passphrase", salt, **FAST)
    assert one != crypto.argon2id_key(b"a passphrase", bytes([1] * 16), **FAST)
    assert one != crypto.argon2id_key(b"a passphrasE", salt, **FAST)
    with pytest.raises(crypto.CryptoFailure):
        crypto.argon2id_key(b"x", salt, opslimit=0, memlimit=1)


def test_secretstream_detects_changes_drops_reorders_and_a_missing_end() -> None:
    key = bytes(range(32))
    sealer = crypto.StreamSealer(key)
    messages = [sealer.push(b"one", b"header"), sealer.push(b"two"), sealer.push(b"", final=True)]

    opener = crypto.StreamOpener(key, sealer.header)
    assert [opener.pull(messages[0], b"header"), opener.pull(messages[1])] == [
        (b"one", False),
        (b"two", False),
    ]
    assert opener.pull(messages[2]) == (b"", True)

    def fails(*sealed: bytes, ad: bytes = b"header", key: bytes = key) -> None:
        opener = crypto.StreamOpener(key, sealer.header)
        with pytest.raises(crypto.CryptoFailure):
            for i, item in enumerate(sealed):
                opener.pull(item, ad if i == 0 else b"")

    fails(messages[1])  # the first one dropped
    fails(messages[0], messages[2])  # one in the middle dropped
    fails(messages[0], ad=b"another header")
    fails(messages[0], key=bytes(32))
    changed = bytearray(messages[1])
    changed[-1] ^= 1
    fails(messages[0], bytes(changed))
    with pytest.raises(crypto.CryptoFailure):
        crypto.StreamOpener(key, b"short")
