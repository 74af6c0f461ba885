"""Canonical JSON (CJ), strict unpadded base64url, and strict wire objects.

docs/protocol.md section 1. Everything signed or hashed is CJ bytes; every CJ
input is parsed with :func:`cj_loads`, which refuses anything whose CJ
re-serialisation differs from the bytes received.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

import orjson

from handover.protocol.errors import EncodingError

MAX_DEPTH = 32
MAX_INT = 2**53 - 1


def _reject_constant(name: str) -> Any:
    raise EncodingError(f"non-finite number {name} is not allowed")


def _reject_float(_text: str) -> Any:
    raise EncodingError("floats are not allowed")


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise EncodingError(f"duplicate key {duplicate!r}")
    return obj


_STRICT_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs_no_duplicates,
    parse_float=_reject_float,
    parse_constant=_reject_constant,
)


def check_value(value: object, depth: int = 0) -> None:
    """Raise EncodingError unless `value` is representable in CJ.

    Depth counts containers: the outermost object or array is depth 1. Strings
    are not inspected here: an unpaired surrogate fails the UTF-8 encoding in
    :func:`cj_dumps`, which every caller goes through.
    """
    kind = type(value)
    if kind is str or kind is bool:
        return
    if kind is int:
        if not -MAX_INT <= value <= MAX_INT:  # type: ignore[operator]
            raise EncodingError("integer out of range")
        return
    if kind is dict:
        if depth >= MAX_DEPTH:
            raise EncodingError(f"nesting deeper than {MAX_DEPTH}")
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or not key or not key.isascii():
                raise EncodingError("object keys must be non-empty ASCII strings")
            if type(item) is not str:
                check_value(item, depth + 1)
        return
    if kind is list:
        if depth >= MAX_DEPTH:
            raise EncodingError(f"nesting deeper than {MAX_DEPTH}")
        for item in value:  # type: ignore[attr-defined]
            if type(item) is not str:
                check_value(item, depth + 1)
        return
    _check_other(value, depth)


def _check_other(value: object, depth: int) -> None:
    """Subclasses of the plain types (StrEnum, IntEnum, ...) and what CJ forbids."""
    if value is None:
        raise EncodingError("null is not allowed")
    if isinstance(value, float):
        raise EncodingError("floats are not allowed")
    if isinstance(value, bool | str):
        return
    if isinstance(value, int):
        check_value(int(value), depth)
        return
    if isinstance(value, dict):
        check_value(dict(value), depth)
        return
    if isinstance(value, list):
        check_value(list(value), depth)
        return
    raise EncodingError(f"type {type(value).__name__} is not allowed")


def cj_dumps(value: object) -> bytes:
    """Encode `value` as canonical JSON bytes.

    Raises:
        EncodingError: the value holds something CJ cannot represent.
    """
    check_value(value)
    # orjson with sorted keys writes exactly what
    # json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # writes for a checked value (tests/test_properties.py holds it to that), ten
    # times faster; it refuses unpaired surrogates, as UTF-8 encoding would.
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise EncodingError("unpaired surrogate in string") from exc


def strict_json_loads(data: bytes | str) -> Any:
    """Parse JSON refusing duplicate keys, floats and non-finite numbers.

    Raises:
        EncodingError: invalid UTF-8, invalid JSON, duplicates, floats, or too deep.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EncodingError("input is not valid UTF-8") from exc
    else:
        text = data
    try:
        return _STRICT_DECODER.decode(text)
    except EncodingError:
        raise
    except RecursionError as exc:
        raise EncodingError(f"nesting deeper than {MAX_DEPTH}") from exc
    except ValueError as exc:
        raise EncodingError(f"invalid JSON at position {getattr(exc, 'pos', '?')}") from exc


def cj_loads(data: bytes) -> Any:
    """Parse canonical JSON strictly: anything not byte-identical to its CJ form is refused.

    Raises:
        EncodingError: with a message naming the rule broken (never the data).
    """
    # Fast path: any input that is not byte-identical to its CJ re-serialisation
    # is refused, which already covers duplicate keys, escapes, whitespace and key
    # order; floats, null and out-of-range integers fail the value check. The
    # strict parser runs only to name the rule an input broke.
    try:
        value = orjson.loads(data)
        if cj_dumps(value) == data:
            return value
    except (orjson.JSONDecodeError, EncodingError):
        pass
    value = strict_json_loads(data)
    if cj_dumps(value) != data:
        raise EncodingError("input is not canonical JSON")
    return value


def b64u_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64U_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_B64U_BYTES = _B64U_ALPHABET.encode("ascii")
_B64U_VALUE = {c: i for i, c in enumerate(_B64U_ALPHABET)}


def b64u_decode(text: str, length: int | None = None) -> bytes:
    """Strict unpadded base64url: only the url-safe alphabet, no padding, a length
    that is not 1 mod 4, and zero trailing bits, so every byte string has exactly
    one accepted encoding (the same as decoding, re-encoding and comparing).

    Raises:
        EncodingError: padding, other alphabets, non-zero trailing bits, or wrong length.
    """
    if type(text) is not str or not text.isascii():
        raise EncodingError("base64url value must be an ASCII string")
    data = text.encode("ascii")
    if data.translate(None, _B64U_BYTES):  # anything left is outside the alphabet
        raise EncodingError("base64url is not strict unpadded form")  # alphabet or padding
    rest = len(data) % 4
    if rest == 1:
        raise EncodingError("invalid base64url")  # no byte string has this length
    if rest and _B64U_VALUE.get(text[-1], 0) & (0x0F if rest == 2 else 0x03):
        raise EncodingError("base64url is not strict unpadded form")  # trailing bits
    if length is not None and len(data) != (4 * length + 2) // 3:
        raise EncodingError(f"base64url value must decode to {length} bytes")
    try:
        # strict_mode refuses every byte outside the (translated) alphabet.
        return binascii.a2b_base64(
            data.translate(_URL_TO_STD) + b"=" * (-len(data) % 4), strict_mode=True
        )
    except binascii.Error as exc:
        raise EncodingError("base64url is not strict unpadded form") from exc


def parse_wire_object(data: bytes | str, members: Iterable[str]) -> dict[str, str]:
    """Parse an outer wire object: exactly `members`, each a string value.

    Raises:
        EncodingError: not a JSON object, duplicate keys, missing or extra members.
    """
    value = strict_json_loads(data)
    wanted = set(members)
    if not isinstance(value, dict) or set(value) != wanted:
        raise EncodingError(f"wire object must have exactly the members {sorted(wanted)}")
    for key in wanted:
        if not isinstance(value[key], str):
            raise EncodingError(f"wire member {key!r} must be a string")
    return value


def dump_wire_object(obj: dict[str, str]) -> bytes:
    """Serialise an outer wire object (canonical form, for determinism)."""
    return cj_dumps(obj)
