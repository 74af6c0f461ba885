"""The stored-body vault: bodies sealed with the node's storage key open again,
and anything that does not open as a JSON object is `BodyUnavailable` naming
the packet (never an empty body)."""

from __future__ import annotations

import pytest

from handover.protocol import crypto
from handover.protocol.canonical import cj_dumps
from handover.workflow.errors import BodyUnavailable, ErrorCode
from handover.workflow.vault import Vault

PID = "q3mS0cxYQWmXUvaI0-OyZw"
BODY = {"case_ref": "HC-1", "nested": {"list": [1, 2, 3], "text": "é ✓"}, "flag": True}


def vault() -> Vault:
    return Vault(crypto.random_bytes(32))


def test_a_sealed_body_opens_to_the_same_body() -> None:
    v = vault()
    assert v.open(PID, v.seal_body(BODY)) == BODY
    assert v.open(PID, memoryview(v.seal(cj_dumps(BODY)))) == BODY


def test_each_seal_is_fresh() -> None:
    v = vault()
    first, second = v.seal_body(BODY), v.seal_body(BODY)
    assert first != second
    assert cj_dumps(BODY) not in first


def unavailable(v: Vault, box: bytes) -> BodyUnavailable:
    with pytest.raises(BodyUnavailable) as info:
        v.open(PID, box)
    return info.value


def test_another_nodes_key_does_not_open_it() -> None:
    error = unavailable(vault(), vault().seal_body(BODY))
    assert error.pid == PID
    assert PID in error.message and "storage" in error.message
    assert error.code is ErrorCode.BODY_UNAVAILABLE


@pytest.mark.parametrize(
    "damage",
    [
        lambda box: box[:-1] + bytes([box[-1] ^ 1]),
        lambda box: box[:30],
        lambda box: b"",
        lambda box: bytes(len(box)),
    ],
    ids=["flipped bit", "truncated", "empty", "zeros"],
)
def test_a_damaged_box_is_unavailable(damage: object) -> None:
    v = vault()
    box = damage(v.seal_body(BODY))  # type: ignore[operator]
    assert unavailable(v, box).pid == PID


@pytest.mark.parametrize("content", [b"[1,2]", b'"text"', b"null", b"{not json"])
def test_a_box_without_a_json_object_is_unavailable(content: bytes) -> None:
    v = vault()
    assert unavailable(v, v.seal(content)).pid == PID
