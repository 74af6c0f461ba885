"""Pairing codes and safety numbers (protocol/pairing.py): pure functions."""

from __future__ import annotations

import hashlib
import struct

import pytest

from handover.protocol import pairing as proto
from handover.protocol.pairing import PairingError, safety_number


def test_codes_are_a_number_and_two_listed_words() -> None:
    assert len(proto.wordlist()) == 1295  # EFF short list without "yo-yo"
    code = proto.new_code(7)
    number, normal = proto.parse_code("  " + code.upper() + " ")
    assert (number, normal) == (7, code)
    for bad in ("7-guitar", "0-acid-acorn", "7-acid-notaword", "1000-acid-acorn", "acid-acorn-7"):
        with pytest.raises(PairingError):
            proto.parse_code(bad)


def test_safety_numbers_do_not_depend_on_the_order() -> None:
    a, b = "A" * 22, "B" * 22
    number = safety_number(a, b)
    assert number == safety_number(b, a)
    assert len(number.split()) == 12 and all(len(g) == 5 for g in number.split())
    assert number != safety_number(a, "C" * 22)


# --- docs/protocol.md section 9, recomputed from the text with hashlib alone -------------


def _pae(*pieces: bytes | str) -> bytes:
    raw = [p.encode() if isinstance(p, str) else p for p in pieces]
    out = struct.pack("<Q", len(raw))
    for piece in raw:
        out += struct.pack("<Q", len(piece)) + piece
    return out


def _kh32(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32, key=key).digest()


def test_the_key_derivation_is_the_one_the_protocol_document_states() -> None:
    inviter, accepter = (
        proto.Spake("inviter", "7-acid-acorn"),
        proto.Spake("accepter", "7-acid-acorn"),
    )
    key = inviter.finish(accepter.message)
    assert key == accepter.finish(inviter.message) and len(inviter.message) == 33
    keys = proto.derive(key, 7, inviter.message, accepter.message)
    transcript = _pae("hp1/pair/v1", "7", inviter.message, accepter.message)
    k = {label: _kh32(key, _pae("hp1/pair/v1/key", label)) for label in (
        "confirm-inviter", "confirm-accepter", "mac-inviter", "mac-accepter")}  # fmt: skip
    assert keys.confirmation("inviter") == _kh32(
        k["confirm-inviter"], _pae("hp1/pair/v1/confirm", "inviter", transcript)
    )
    assert keys.confirmation("accepter") == _kh32(
        k["confirm-accepter"], _pae("hp1/pair/v1/confirm", "accepter", transcript)
    )
    assert keys.offer_mac("accepter", b"OFFER") == _kh32(
        k["mac-accepter"], _pae("hp1/pair/v1/offer", "accepter", transcript, b"OFFER")
    )
    assert keys.finish_mac("inviter", b"OFFER") == _kh32(
        k["mac-inviter"], _pae("hp1/pair/v1/finish", "inviter", transcript, b"OFFER")
    )
    again, wrong = proto.Spake("inviter", "7-acid-acorn"), proto.Spake("accepter", "7-acid-acid")
    assert again.finish(wrong.message) != wrong.finish(again.message)


def test_the_safety_number_is_the_one_the_protocol_document_states() -> None:
    fa, fb = "zzzz", "aaaa"
    digest = hashlib.blake2b(_pae("hp1/safety/v1", fb, fa), digest_size=64).digest()
    groups = [int.from_bytes(digest[5 * i : 5 * i + 5], "big") % 100_000 for i in range(12)]
    assert safety_number(fa, fb) == " ".join(f"{g:05d}" for g in groups)
