"""Canonical JSON, strict base64url and strict wire objects (docs/protocol.md section 1)."""

from __future__ import annotations

import base64

import pytest

from handover.protocol.canonical import (
    MAX_DEPTH,
    MAX_INT,
    b64u_decode,
    b64u_encode,
    cj_dumps,
    cj_loads,
    parse_wire_object,
    strict_json_loads,
)
from handover.protocol.errors import EncodingError

NOT_CANONICAL = "input is not canonical JSON"


def nested(depth: int, open_: str = "[", close: str = "]") -> bytes:
    """`depth` nested containers around 1 (the outermost is depth 1)."""
    return (open_ * depth + "1" + close * depth).encode()


def nested_objects(depth: int) -> bytes:
    return ('{"a":' * depth + "1" + "}" * depth).encode()


# --- CJ encoding ---------------------------------------------------------------


def test_cj_dumps_sorts_keys_compactly_and_keeps_utf8() -> None:
    value = {"b": [1, True, False], "a": {"z": "é😀", "B": -5}, "A": "\n\u001f\u2028"}
    assert cj_dumps(value) == (
        '{"A":"\\n\\u001f\u2028","a":{"B":-5,"z":"é😀"},"b":[1,true,false]}'.encode()
    )


def test_cj_sorts_keys_by_code_point() -> None:
    assert cj_dumps({"b": 1, "a": 1, "B": 1, "_": 1, "0": 1}) == b'{"0":1,"B":1,"_":1,"a":1,"b":1}'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.0, "floats are not allowed"),
        ({"a": 0.5}, "floats are not allowed"),
        (None, "null is not allowed"),
        ([None], "null is not allowed"),
        (MAX_INT + 1, "integer out of range"),
        (-MAX_INT - 1, "integer out of range"),
        ("\ud800", "unpaired surrogate in string"),
        ({"a": "x\udfffy"}, "unpaired surrogate in string"),
        ({"": 1}, "object keys must be non-empty ASCII strings"),
        ({"é": 1}, "object keys must be non-empty ASCII strings"),
        ({1: 1}, "object keys must be non-empty ASCII strings"),
        ((1, 2), "type tuple is not allowed"),
        (b"x", "type bytes is not allowed"),
    ],
)
def test_cj_dumps_refuses_values_outside_cj(value: object, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        cj_dumps(value)


def test_cj_dumps_refuses_nesting_over_32() -> None:
    deep: list[object] = [1]
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    assert cj_dumps(deep) == nested(MAX_DEPTH)
    with pytest.raises(EncodingError, match="nesting deeper than 32"):
        cj_dumps([deep])


# --- CJ parsing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1}',
        b"[]",
        b"{}",
        b'"x"',
        b"0",
        b"-1",
        b"true",
        str(MAX_INT).encode(),
        str(-MAX_INT).encode(),
        '{"a":"é😀\u2028"}'.encode(),
        b'"\\"\\\\\\b\\f\\n\\r\\t\\u0000\\u001f"',
        nested(MAX_DEPTH),
        nested_objects(MAX_DEPTH),
    ],
)
def test_cj_loads_accepts_canonical_input(data: bytes) -> None:
    assert cj_dumps(cj_loads(data)) == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # duplicate keys, also nested
        (b'{"a":1,"a":1}', "duplicate key 'a'"),
        (b'{"b":{"a":1,"a":2}}', "duplicate key 'a'"),
        # floats in every spelling, and non-finite numbers
        (b"1.0", "floats are not allowed"),
        (b"1e2", "floats are not allowed"),
        (b"1E2", "floats are not allowed"),
        (b"-0.0", "floats are not allowed"),
        (b'{"a":[0.5]}', "floats are not allowed"),
        (b"NaN", "non-finite number NaN is not allowed"),
        (b"Infinity", "non-finite number Infinity is not allowed"),
        (b"-Infinity", "non-finite number -Infinity is not allowed"),
        # null
        (b"null", "null is not allowed"),
        (b'{"a":null}', "null is not allowed"),
        # integers out of range
        (str(MAX_INT + 1).encode(), "integer out of range"),
        (str(-MAX_INT - 1).encode(), "integer out of range"),
        (b"1" * 5000, "invalid JSON"),
        # escaped surrogates: lone high, lone low, and a pair (canonical form is raw UTF-8)
        (b'"\\ud800"', "unpaired surrogate in string"),
        (b'"\\udfff"', "unpaired surrogate in string"),
        (b'{"a":"\\udc00x"}', "unpaired surrogate in string"),
        (b'"\\ud83d\\ude00"', NOT_CANONICAL),
        # nesting over 32, also far over (no RecursionError escapes)
        (nested(MAX_DEPTH + 1), "nesting deeper than 32"),
        (nested_objects(MAX_DEPTH + 1), "nesting deeper than 32"),
        (nested(100_000), "nesting deeper than 32"),
        # keys
        (b'{"":1}', "object keys must be non-empty ASCII strings"),
        ('{"é":1}'.encode(), "object keys must be non-empty ASCII strings"),
        # not the canonical bytes
        (b'{"b":1,"a":2}', NOT_CANONICAL),
        (b'{"a": 1}', NOT_CANONICAL),
        (b'{"a":1} ', NOT_CANONICAL),
        (b' {"a":1}', NOT_CANONICAL),
        (b'{"a":1}\n', NOT_CANONICAL),
        (b"[1, 2]", NOT_CANONICAL),
        (b"-0", NOT_CANONICAL),
        (b'"\\u0041"', NOT_CANONICAL),
        (b'"\\u00e9"', NOT_CANONICAL),
        (b'"\\/"', NOT_CANONICAL),
        (b'"\\u000a"', NOT_CANONICAL),
        (b'"\\u007f"', NOT_CANONICAL),
        # not JSON, or not UTF-8
        (b"", "invalid JSON"),
        (b"01", "invalid JSON"),
        (b"[1,]", "invalid JSON"),
        (b"{'a':1}", "invalid JSON"),
        (b'{"a":1}{}', "invalid JSON"),
        (b'"\x01"', "invalid JSON"),
        (b"\xef\xbb\xbf{}", "invalid JSON"),
        (b'"\xff"', "input is not valid UTF-8"),
        (b'"\xc0\xaf"', "input is not valid UTF-8"),
        (b'"\xed\xa0\x80"', "input is not valid UTF-8"),
    ],
)
def test_cj_loads_rejects(data: bytes, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        cj_loads(data)


# --- base64url -------------------------------------------------------------------


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def with_trailing_bit(text: str) -> str:
    """The same bytes to a lenient decoder, with the lowest unused bit set."""
    assert (len(text) * 6) % 8, "this length has no trailing bits"
    last = ALPHABET[ALPHABET.index(text[-1]) ^ 1]
    changed = text[:-1] + last
    lenient = base64.urlsafe_b64decode(changed + "=" * (-len(changed) % 4))
    assert lenient == base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return changed


@pytest.mark.parametrize("n", [0, 1, 2, 3, 16, 32, 48, 64])
def test_b64u_round_trip_is_unpadded(n: int) -> None:
    raw = bytes(range(256))[:n] if n < 256 else b""
    text = b64u_encode(raw)
    assert "=" not in text
    assert b64u_decode(text, n) == raw


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("AA==", "base64url is not strict unpadded form"),
        ("AAA=", "base64url is not strict unpadded form"),
        ("AA=", "base64url is not strict unpadded form"),
        ("AB", "base64url is not strict unpadded form"),  # trailing bits
        ("AAB", "base64url is not strict unpadded form"),  # trailing bits
        (with_trailing_bit(b64u_encode(bytes(16))), "base64url is not strict unpadded form"),
        ("+/+/", "base64url is not strict unpadded form"),  # standard alphabet
        ("AA AA", "base64url is not strict unpadded form"),
        ("AAAA\n", "base64url is not strict unpadded form"),
        ("AA.A", "base64url is not strict unpadded form"),
        ("A", "invalid base64url"),
        ("AAAAA", "invalid base64url"),
        ("ÄAAA", "base64url value must be an ASCII string"),
    ],
)
def test_b64u_decode_is_strict(text: str, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        b64u_decode(text)


def test_b64u_decode_checks_length_and_type() -> None:
    with pytest.raises(EncodingError, match="must decode to 32 bytes"):
        b64u_decode(b64u_encode(bytes(31)), 32)
    with pytest.raises(EncodingError, match="must be an ASCII string"):
        b64u_decode(b"AAAA")  # type: ignore[arg-type]


# --- wire objects -------------------------------------------------------------------


def test_wire_object_allows_whitespace_and_any_member_order() -> None:
    data = b' {\n  "sig" : "s",\t"hp1": "h" }\r\n'
    assert parse_wire_object(data, ("hp1", "sig")) == {"hp1": "h", "sig": "s"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"hp1":"h","sig":"s","sig":"s"}', "duplicate key 'sig'"),
        (b'{"hp1":"h"}', "exactly the members"),
        (b'{"hp1":"h","sig":"s","x":"y"}', "exactly the members"),
        (b'["h","s"]', "exactly the members"),
        (b'{"hp1":"h","sig":1}', "wire member 'sig' must be a string"),
        (b'{"hp1":"h","sig":1.5}', "floats are not allowed"),
        (b'{"hp1":"h","sig":"s"', "invalid JSON"),
        (b'{"hp1":"h","sig":"\xff"}', "not valid UTF-8"),
    ],
)
def test_wire_object_is_strict(data: bytes, message: str) -> None:
    with pytest.raises(EncodingError, match=message):
        parse_wire_object(data, ("hp1", "sig"))


def test_strict_json_loads_refuses_duplicates_and_floats_but_not_whitespace() -> None:
    assert strict_json_loads(b' { "b" : 1 , "a" : [ true ] } ') == {"b": 1, "a": [True]}
    with pytest.raises(EncodingError, match="duplicate key"):
        strict_json_loads(b'{"a":1,"a":1}')
    with pytest.raises(EncodingError, match="floats"):
        strict_json_loads(b"[1.5]")
