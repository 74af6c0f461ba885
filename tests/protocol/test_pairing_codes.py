"""Pairing codes and safety numbers (protocol/pairing.py): pure functions."""

from __future__ import annotations

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
