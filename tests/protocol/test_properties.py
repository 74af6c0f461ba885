"""Properties (hypothesis, bounded): seal/open round trip, single-byte tampering, CJ, b64u."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import NOW, PERMISSIVE, make_node, receive, seal_to
from handover.protocol.canonical import MAX_INT, b64u_decode, b64u_encode, cj_dumps, cj_loads
from handover.protocol.errors import EncodingError, InvalidPacket
from handover.protocol.opening import Opened

SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ALICE = make_node("prison.alice.example")
BOB = make_node("probation.bob.example")
CAROL = make_node("exit.carol.example")

# --- strategies -----------------------------------------------------------------------

keys = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), min_size=1, max_size=12)
scalars = (
    st.booleans()
    | st.integers(min_value=-MAX_INT, max_value=MAX_INT)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
)


def cj_values(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    """CJ-representable values nested at most 5 deep below the top object."""
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


bodies = st.dictionaries(keys, cj_values(), max_size=6).filter(lambda b: depth(b) <= 6)


# --- seal / open ------------------------------------------------------------------------


@SETTINGS
@given(body=bodies)
def test_seal_open_round_trip(body: dict[str, Any]) -> None:
    sealed = seal_to(ALICE, BOB, CAROL, schema_id="handover/any/1", body=body, validator=PERMISSIVE)
    for node in (BOB, CAROL):
        opened = receive(node, sealed.wire, ALICE, validator=PERMISSIVE)
        assert isinstance(opened, Opened)
        assert opened.rejection is None
        assert opened.schema == "handover/any/1"
        assert opened.body == body
        assert cj_dumps(opened.body) == cj_dumps(body)  # same types too (True is not 1)
        # The body's CJ bytes cut from the payload (stored without re-encoding)
        # are exactly the body's CJ, even when the body has keys named "log".
        assert opened.body_cj == cj_dumps(body)
        assert opened.pd == sealed.pd


# One packet, sealed once: every single-byte change of its wire bytes must be refused.
WIRE = seal_to(ALICE, BOB, CAROL).wire
_OUTER = json.loads(WIRE)
# Positions outside the long ct value: structure, hp1 and sig.
_CT_START = WIRE.index(b'"ct":"') + len(b'"ct":"')
_CT_END = _CT_START + len(_OUTER["ct"])
NON_CT_POSITIONS = [i for i in range(len(WIRE)) if not _CT_START <= i < _CT_END]


def change_byte(wire: bytes, position: int, delta: int) -> bytes:
    mutated = bytearray(wire)
    mutated[position] = (mutated[position] + delta) % 256
    return bytes(mutated)


def test_the_unchanged_wire_is_accepted() -> None:
    assert isinstance(receive(BOB, WIRE, ALICE), Opened)
    assert cj_dumps(_OUTER) == WIRE  # compact: no whitespace a change could hide in


def _assert_refused(mutated: bytes) -> None:
    assert mutated != WIRE
    with pytest.raises(InvalidPacket) as info:
        receive(BOB, mutated, ALICE)
    assert str(info.value) == "invalid_packet"


@settings(max_examples=100, deadline=None)
@given(position=st.integers(0, len(WIRE) - 1), delta=st.integers(1, 255))
def test_any_single_byte_change_is_refused(position: int, delta: int) -> None:
    _assert_refused(change_byte(WIRE, position, delta))


@settings(max_examples=100, deadline=None)
@given(index=st.integers(0, len(NON_CT_POSITIONS) - 1), delta=st.integers(1, 255))
def test_any_single_byte_change_outside_ct_is_refused(index: int, delta: int) -> None:
    _assert_refused(change_byte(WIRE, NON_CT_POSITIONS[index], delta))


@settings(max_examples=60, deadline=None)
@given(
    position=st.integers(0, len(WIRE) - 1),
    replacement=st.sampled_from(b'AQgw-_09azAZ\\" {}[]:,=+/\n'),
)
def test_single_byte_change_to_a_plausible_character_is_refused(
    position: int, replacement: int
) -> None:
    assume(WIRE[position] != replacement)
    mutated = bytearray(WIRE)
    mutated[position] = replacement
    _assert_refused(bytes(mutated))


def test_every_position_flipped_once_is_refused() -> None:
    """Exhaustive companion of the property above: each byte XOR 0x01, and XOR 0x20."""
    for position in range(len(WIRE)):
        for mask in (0x01, 0x20):
            mutated = bytearray(WIRE)
            mutated[position] ^= mask
            _assert_refused(bytes(mutated))


# --- CJ and b64u ------------------------------------------------------------------------


@SETTINGS
@given(value=cj_values(max_leaves=50))
def test_cj_round_trip(value: Any) -> None:
    data = cj_dumps(value)
    assert cj_loads(data) == value
    assert cj_dumps(cj_loads(data)) == data
    assert (
        data
        == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )


@SETTINGS
@given(value=st.dictionaries(keys, cj_values(), min_size=2, max_size=5))
def test_cj_refuses_whitespace_and_unsorted_forms(value: dict[str, Any]) -> None:
    spaced = json.dumps(value, sort_keys=True, ensure_ascii=False).encode()
    assume(spaced != cj_dumps(value))
    with pytest.raises(EncodingError):
        cj_loads(spaced)
    unsorted = json.dumps(
        dict(reversed(list(value.items()))), separators=(",", ":"), ensure_ascii=False
    ).encode()
    assume(unsorted != cj_dumps(value))
    with pytest.raises(EncodingError):
        cj_loads(unsorted)


@SETTINGS
@given(raw=st.binary(max_size=100))
def test_b64u_round_trip(raw: bytes) -> None:
    text = b64u_encode(raw)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64u_decode(text) == raw
    assert b64u_decode(text, len(raw)) == raw


@SETTINGS
@given(
    text=st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=40
    )
)
def test_b64u_accepts_exactly_the_canonical_encodings(text: str) -> None:
    try:
        raw = b64u_decode(text)
    except EncodingError:
        # Refused: then it is not the unpadded encoding of whatever it decodes to leniently.
        try:
            lenient = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except ValueError:
            return
        assert b64u_encode(lenient) != text
    else:
        assert b64u_encode(raw) == text


@SETTINGS
@given(raw=st.binary(min_size=1, max_size=100).filter(lambda r: len(r) % 3), bit=st.integers(0, 3))
def test_b64u_refuses_non_zero_trailing_bits(raw: bytes, bit: int) -> None:
    text = b64u_encode(raw)
    spare = 4 if len(raw) % 3 == 1 else 2
    assume(bit < spare)
    changed = text[:-1] + ALPHABET[ALPHABET.index(text[-1]) ^ (1 << bit)]
    with pytest.raises(EncodingError, match="not strict unpadded form"):
        b64u_decode(changed)


def test_fixed_clock_is_used() -> None:
    assert (
        json.loads(base64.urlsafe_b64decode(_OUTER["hp1"] + "=" * (-len(_OUTER["hp1"]) % 4)))["iat"]
        == NOW
    )


def test_body_bytes_are_cut_correctly_when_the_body_itself_says_log() -> None:
    body = {
        "log": {"head": "x", "seq": 1},
        "z": [{"log": 1}, ',"log":{"head":"', '"log"'],
        "nested": {"a": {"log": {"log": 2}}},
    }
    sealed = seal_to(ALICE, BOB, schema_id="handover/any/1", body=body, validator=PERMISSIVE)
    opened = receive(BOB, sealed.wire, ALICE, validator=PERMISSIVE)
    assert isinstance(opened, Opened)
    assert opened.body == body and opened.body_cj == cj_dumps(body)


def _reference_b64u_decode(text: str) -> bytes | None:
    """The spec's rule, literally: decode, re-encode and compare (None = refused)."""
    if not text.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == text else None


@given(
    text=st.text(
        alphabet=st.sampled_from(
            list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= .\nÄ")
        ),
        max_size=12,
    )
)
@settings(max_examples=400, deadline=None)
def test_b64u_decode_agrees_with_decode_reencode_compare(text: str) -> None:
    expected = _reference_b64u_decode(text)
    try:
        got: bytes | None = b64u_decode(text)
    except EncodingError:
        got = None
    assert got == expected
