"""Attachments (section 8): the known-answer vectors, checked by the package and by an
independent implementation (tests/independent_att.py, pure-Python secretstream)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import independent_att as ia
import independent_hp1 as ind
from handover.protocol import crypto
from handover.protocol.attachments import (
    AttachmentError,
    AttachmentItem,
    decrypt_bytes,
    encrypt_bytes,
    parse_ticket,
    stream_length,
    verify_ticket,
)
from handover.protocol.canonical import b64u_decode, cj_loads
from handover.protocol.keyset import accept_keyset
from handover.protocol.opening import Opened, OwnBoxKey, ReceiverKeys, open_packet

VECTOR = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "packet-attachments.json").read_text()
)
NOW = VECTOR["now"]


def rand_bytes(label: str, n: int) -> bytes:
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.blake2b(
            ind.pae("hp1-vectors/rand", label, i.to_bytes(8, "little")), digest_size=64
        ).digest()
        i += 1
    return out[:n]


def plaintext(case: dict[str, Any]) -> bytes:
    if "plaintext_b64u" in case:
        return ind.unb64u(case["plaintext_b64u"])
    return rand_bytes(case["plaintext"]["rand_label"], case["plaintext"]["bytes"])


def ind_keyset(d: dict[str, Any]) -> Any:
    return ind.verify_keyset(
        d["keyset_wire"], node=d["node"], fingerprint=d["root"]["fingerprint"], now=NOW
    )


@pytest.mark.parametrize("index", [0, 1, 2])
def test_independent_secretstream_reproduces_each_stream(index: int) -> None:
    case = VECTOR["attachments"][index]
    item = case["item"]
    data = plaintext(case)
    assert hashlib.blake2b(data, digest_size=64).hexdigest() == case.get(
        "plaintext_h64_hex", hashlib.blake2b(data, digest_size=64).hexdigest()
    )
    c = ia.encrypt(
        item["aid"], bytes.fromhex(case["key_hex"]), bytes.fromhex(case["header_hex"]), data
    )
    assert len(c) == item["alen"] == ia.stream_length(len(data))
    assert ind.b64u(hashlib.blake2b(c, digest_size=64).digest()) == item["ah"]
    if "stream_b64u" in case:
        assert ind.b64u(c) == case["stream_b64u"]
    else:
        assert ind.b64u(c[24 + 65_553 :]) == case["stream_chunk_2_b64u"]
    assert ia.decrypt(ia.check_item(item), c) == data


@pytest.mark.parametrize("index", [0, 1, 2])
def test_package_reproduces_and_opens_each_stream(index: int) -> None:
    case = VECTOR["attachments"][index]
    data = plaintext(case)
    item, c = encrypt_bytes(
        case["item"]["aid"], bytes.fromhex(case["key_hex"]), data, case["item"]["name"],
        case["item"]["type"], header=bytes.fromhex(case["header_hex"]),
    )  # fmt: skip
    assert item.to_json() == case["item"]
    assert decrypt_bytes(AttachmentItem.from_json(case["item"]), c) == data
    # The package decrypts what the independent side encrypts (fresh header).
    header = bytes(range(24))
    other = ia.encrypt(item.aid, item.key, header, data)
    other_item = AttachmentItem(
        item.aid, item.name, item.type, item.size, item.key, len(other), crypto.h64(other)
    )
    assert decrypt_bytes(other_item, other) == data


def test_tampered_chunk_is_refused_by_both() -> None:
    t = VECTOR["tampered_stream"]
    case = VECTOR["attachments"][t["attachment"]]
    bad = ind.unb64u(t["stream_b64u"])
    good = ind.unb64u(case["stream_b64u"])
    assert len(bad) == len(good) and bad != good
    # With the hash check set aside (ah recomputed), the chunk itself must fail.
    item = dict(case["item"], ah=ind.b64u(hashlib.blake2b(bad, digest_size=64).digest()))
    with pytest.raises(ind.Refused, match="stream_damaged"):
        ia.decrypt(item, bad)
    with pytest.raises(AttachmentError, match="stream_damaged"):
        decrypt_bytes(AttachmentItem.from_json(item), bad)
    # And with the real ah, the hash alone refuses it.
    with pytest.raises(AttachmentError, match="stream_damaged"):
        decrypt_bytes(AttachmentItem.from_json(case["item"]), bad)


def test_truncated_and_extended_streams_are_refused() -> None:
    case = VECTOR["attachments"][2]
    data = plaintext(case)
    item, c = encrypt_bytes(
        case["item"]["aid"], bytes.fromhex(case["key_hex"]), data, "a", "text/plain",
        header=bytes.fromhex(case["header_hex"]),
    )  # fmt: skip
    first_chunk_only = c[: 24 + 65_553]
    for variant in (first_chunk_only, c + b"\x00"):
        forged = AttachmentItem(
            item.aid, item.name, item.type, item.size, item.key, len(variant), crypto.h64(variant)
        )
        with pytest.raises(AttachmentError, match="stream_damaged"):
            decrypt_bytes(forged, variant)
    # The same stream under another aid (other associated data) does not authenticate.
    moved = AttachmentItem("A" * 22, item.name, item.type, item.size, item.key, item.alen, item.ah)
    with pytest.raises(AttachmentError, match="stream_damaged"):
        decrypt_bytes(moved, c)


def test_upload_tickets_verify_on_both_sides() -> None:
    sender, recipient = VECTOR["sender"], VECTOR["recipient"]
    keyset = accept_keyset(
        sender["keyset_wire"].encode(), node=sender["node"],
        fingerprint=sender["root"]["fingerprint"], now=NOW,
    )  # fmt: skip
    for case in VECTOR["attachments"]:
        aid = case["item"]["aid"]
        ticket = verify_ticket(
            parse_ticket(case["upload_ticket"]),
            keyset=keyset,
            node=recipient["node"],
            aid=aid,
            now=NOW,
        )
        assert ticket.alen == case["item"]["alen"] and ticket.ah == b64u_decode(case["item"]["ah"])
        t = ia.verify_ticket(
            case["upload_ticket"],
            sender_keyset=ind_keyset(sender),
            me=recipient["node"],
            aid=aid,
            now=NOW,
        )
        assert t["ah"] == case["item"]["ah"]
        # Another aid, another node, or a flipped signature bit: refused by both.
        with pytest.raises(AttachmentError, match="bad_ticket"):
            verify_ticket(
                parse_ticket(case["upload_ticket"]),
                keyset=keyset,
                node="other.example",
                aid=aid,
                now=NOW,
            )
        with pytest.raises(ind.Refused):
            ia.verify_ticket(
                case["upload_ticket"],
                sender_keyset=ind_keyset(sender),
                me=recipient["node"],
                aid="B" * 22,
                now=NOW,
            )
        ut, sig = case["upload_ticket"].split(".")
        flipped = ut + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
        with pytest.raises(AttachmentError, match="bad_ticket"):
            verify_ticket(
                parse_ticket(flipped), keyset=keyset, node=recipient["node"], aid=aid, now=NOW
            )
        with pytest.raises(ind.Refused):
            ia.verify_ticket(
                flipped, sender_keyset=ind_keyset(sender), me=recipient["node"], aid=aid, now=NOW
            )


def test_packet_with_attachments_opens_on_both_sides() -> None:
    sender, recipient = VECTOR["sender"], VECTOR["recipient"]
    wire = VECTOR["packet"]["wire"].encode()
    # Independent side.
    box = next(
        k for k in recipient["keys"] if k["type"] == "x25519-box" and k["status"] == "active"
    )
    sig = next(
        k for k in recipient["keys"] if k["type"] == "ed25519-sig" and k["status"] == "active"
    )
    me = ind.NodeSecrets(
        recipient["node"], bytes.fromhex(recipient["root"]["seed_hex"]),
        bytes.fromhex(sig["seed_hex"]), bytes.fromhex(box["secret_key_hex"]), sig["nbf"],
    )  # fmt: skip
    opened = ind.open_packet(
        wire,
        me=me,
        my_keyset=ind_keyset(recipient),
        senders={sender["node"]: ind_keyset(sender)},
        now=NOW,
    )
    inner = ind.cj_parse(opened.inner)
    assert [ia.check_item(i) for i in inner["att"]] == [c["item"] for c in VECTOR["attachments"]]
    assert ind.b64u(opened.pd) == VECTOR["packet"]["pd_b64u"]
    # Package side.
    keysets = {
        d["node"]: accept_keyset(
            d["keyset_wire"].encode(), node=d["node"], fingerprint=d["root"]["fingerprint"], now=NOW
        )
        for d in (sender, recipient)
    }
    own = keysets[recipient["node"]].key(box["kid"])
    assert own is not None
    result = open_packet(
        wire,
        receiver=ReceiverKeys(
            recipient["node"],
            {
                box["kid"]: OwnBoxKey(
                    crypto.BoxKey.from_secret(bytes.fromhex(box["secret_key_hex"])), own
                )
            },
        ),
        peer_keyset=keysets.get,
        now=NOW,
        validator=_Permissive(),
    )
    assert isinstance(result, Opened)
    assert [a.to_json() for a in result.attachments] == [c["item"] for c in VECTOR["attachments"]]
    assert cj_loads(result.body_cj) == result.body


def test_item_rules() -> None:
    good = VECTOR["attachments"][1]["item"]
    assert AttachmentItem.from_json(good).size == len("Licence conditions: report weekly.\n")
    for bad in (
        dict(good, name="a/b"),
        dict(good, name="a\\b"),
        dict(good, name="a\nb"),
        dict(good, name=""),
        dict(good, type="text/plain; charset=utf-8"),
        dict(good, type="textplain"),
        dict(good, alen=good["alen"] + 1),
        dict(good, size=-1),
        dict(good, extra=1),
    ):
        with pytest.raises(AttachmentError):
            AttachmentItem.from_json(bad)
        with pytest.raises(ind.Refused):
            ia.check_item(bad)
    assert stream_length(0) == 41 and stream_length(65_536) == 24 + 65_536 + 17
    assert stream_length(65_537) == 24 + 65_537 + 34


class _Permissive:
    def validate(self, schema_id: str, body: object) -> None:
        return None
