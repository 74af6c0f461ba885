"""The stored-body vault: each body is sealed with its own data key, wrapped by
the node's storage key; it opens again with that wrapped key, a box sealed
before data keys (with the storage key itself) still opens, and anything that
does not open as a JSON object is `BodyUnavailable` naming the packet (never an
empty body). Without its wrapped data key a box opens with no key at all."""

from __future__ import annotations

import pytest

from handover.protocol import crypto
from handover.protocol.canonical import cj_dumps
from handover.workflow.errors import BodyUnavailable, ErrorCode
from handover.workflow.vault import Sealed, Vault

PID = "q3mS0cxYQWmXUvaI0-OyZw"
BODY = {"case_ref": "HC-1", "nested": {"list": [1, 2, 3], "text": "é ✓"}, "flag": True}


def vault(key: bytes | None = None) -> Vault:
    return Vault(key or crypto.random_bytes(32))


def test_a_sealed_body_opens_to_the_same_body() -> None:
    v = vault()
    sealed = v.seal_body(BODY)
    assert v.open(PID, sealed.box, sealed.key) == BODY
    again = v.seal(cj_dumps(BODY))
    assert v.open(PID, memoryview(again.box), memoryview(again.key)) == BODY


def test_each_seal_has_its_own_data_key_unless_one_is_given() -> None:
    v = vault()
    first, second = v.seal_body(BODY), v.seal_body(BODY)
    assert first.box != second.box and first.key != second.key
    assert cj_dumps(BODY) not in first.box
    shared = v.seal(b"wire", first.key)
    assert shared.key == first.key
    assert v.open_bytes(PID, shared.box, first.key) == b"wire"


def test_the_storage_key_alone_does_not_open_a_box() -> None:
    storage = crypto.random_bytes(32)
    sealed = vault(storage).seal_body(BODY)
    with pytest.raises(crypto.CryptoFailure):
        crypto.open_at_rest(storage, sealed.box)
    # Without the wrapped data key (erased), the vault cannot open it either.
    with pytest.raises(BodyUnavailable):
        vault(storage).open(PID, sealed.box, None)


def test_a_box_sealed_before_data_keys_still_opens() -> None:
    storage = crypto.random_bytes(32)
    legacy = crypto.seal_at_rest(storage, cj_dumps(BODY))
    assert vault(storage).open(PID, legacy, None) == BODY


def test_a_rewrapped_key_opens_under_the_new_storage_key_only() -> None:
    old, new = vault(), vault()
    sealed = old.seal_body(BODY)
    moved = old.rewrap(PID, sealed.key, new)
    assert new.open(PID, sealed.box, moved) == BODY
    with pytest.raises(BodyUnavailable):
        new.open(PID, sealed.box, sealed.key)
    with pytest.raises(BodyUnavailable):
        old.open(PID, sealed.box, moved)


def unavailable(v: Vault, sealed: Sealed) -> BodyUnavailable:
    with pytest.raises(BodyUnavailable) as info:
        v.open(PID, sealed.box, sealed.key)
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
    sealed = v.seal_body(BODY)
    broken = Sealed(damage(sealed.box), sealed.key)  # type: ignore[operator]
    assert unavailable(v, broken).pid == PID


@pytest.mark.parametrize("content", [b"[1,2]", b'"text"', b"null", b"{not json"])
def test_a_box_without_a_json_object_is_unavailable(content: bytes) -> None:
    v = vault()
    assert unavailable(v, v.seal(content)).pid == PID
