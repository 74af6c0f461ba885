"""Keyset acceptance rules (docs/protocol.md section 2)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import NOW, box_entry, make_node, seed, sig_entry
from handover.protocol import crypto
from handover.protocol.canonical import b64u_encode, cj_dumps, dump_wire_object
from handover.protocol.errors import InvalidKeyset
from handover.protocol.keyset import (
    KEYSET_LABEL,
    KeyEntry,
    Keyset,
    accept_keyset,
    build_keyset,
    parse_keyset,
)
from handover.protocol.timeutil import DAY_MS, SKEW_MS

NODE = "probation.bob.example"
ROOT = crypto.SigningKey.from_seed(seed("root", NODE))
FINGERPRINT = crypto.kid("ed25519-root", ROOT.public_key)
SIG = crypto.SigningKey.from_seed(seed("sig", NODE))
BOX = crypto.BoxKey.from_secret(seed("box", NODE))

# Small-order Ed25519 points (libsodium's blocklist) and a non-canonical encoding (y = p).
ED25519_BAD_POINTS = [
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p
]
# Small-order X25519 u-coordinates, canonical and not.
X25519_BAD_POINTS = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p - 1
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # p
]


def default_keys(nbf: int = NOW - DAY_MS) -> list[KeyEntry]:
    return [sig_entry(SIG, nbf), box_entry(BOX, nbf)]


def wire(
    *,
    node: str = NODE,
    serial: int = 1,
    iat: int = NOW,
    exp: int = NOW + 7 * DAY_MS,
    root: crypto.SigningKey = ROOT,
    keys: list[KeyEntry] | None = None,
) -> bytes:
    return build_keyset(
        node=node,
        serial=serial,
        iat=iat,
        exp=exp,
        root=root,
        keys=default_keys() if keys is None else keys,
    )


def body(**changes: Any) -> dict[str, Any]:
    """A keyset body as a dict, to be changed and signed with `sign`."""
    kb = {
        "typ": "hp1.keyset",
        "v": 1,
        "node": NODE,
        "serial": 1,
        "iat": NOW,
        "exp": NOW + 7 * DAY_MS,
        "root": b64u_encode(ROOT.public_key),
        "keys": [k.to_json() for k in default_keys()],
    }
    kb.update(changes)
    return kb


def sign(kb: dict[str, Any] | bytes, signer: crypto.SigningKey = ROOT) -> bytes:
    """Sign keyset bytes honestly (so only the defect under test remains)."""
    raw = kb if isinstance(kb, bytes) else cj_dumps(kb)
    sig = signer.sign(crypto.pae(KEYSET_LABEL, raw))
    return dump_wire_object({"hp1k": b64u_encode(raw), "sig": b64u_encode(sig)})


def accept(data: bytes, *, now: int = NOW, last: Keyset | None = None, **kw: Any) -> Keyset:
    kw.setdefault("node", NODE)
    kw.setdefault("fingerprint", FINGERPRINT)
    return accept_keyset(data, now=now, last=last, **kw)


def raw_key(pk: bytes, key_type: str, **extra: Any) -> dict[str, Any]:
    """A key entry with a self-consistent kid for any public key bytes."""
    entry = {
        "kid": crypto.kid(key_type, pk),  # type: ignore[arg-type]
        "type": key_type,
        "pk": b64u_encode(pk),
        "nbf": NOW - DAY_MS,
        "status": "active",
    }
    entry.update(extra)
    return entry


# --- acceptance ---------------------------------------------------------------------


def test_good_keyset_is_accepted_and_fingerprint_is_root_kid() -> None:
    ks = accept(wire())
    assert ks.fingerprint == FINGERPRINT
    assert ks.node == NODE
    assert [k.kid for k in ks.keys] == [k.kid for k in default_keys()]
    assert ks.wire == wire()


def test_offline_tool_without_fingerprint_trusts_the_file_root() -> None:
    other = crypto.SigningKey.from_seed(seed("root", "elsewhere"))
    assert accept(wire(root=other), fingerprint=None).root == other.public_key


# --- rollback ---------------------------------------------------------------------


def test_lower_serial_is_a_rollback() -> None:
    last = accept(wire(serial=5))
    with pytest.raises(InvalidKeyset, match="rollback: serial 4 is not above the accepted 5"):
        accept(wire(serial=4), last=last)


def test_equal_serial_with_other_bytes_is_a_rollback() -> None:
    last = accept(wire(serial=5))
    with pytest.raises(InvalidKeyset, match="rollback: serial 5 is not above the accepted 5"):
        accept(wire(serial=5, iat=NOW - 1, exp=NOW + DAY_MS), last=last)


def test_equal_serial_with_identical_bytes_is_accepted() -> None:
    last = accept(wire(serial=5))
    assert accept(wire(serial=5), last=last).kb == last.kb


def test_higher_serial_is_accepted() -> None:
    last = accept(wire(serial=5))
    assert accept(wire(serial=6), last=last).serial == 6


def test_a_key_removed_from_the_keyset_is_refused() -> None:
    last = accept(wire(serial=5))
    with pytest.raises(InvalidKeyset, match="keyset dropped key"):
        accept(wire(serial=6, keys=default_keys()[:1]), last=last)


# --- time window ---------------------------------------------------------------------


def test_expired_keyset_is_refused() -> None:
    exp = NOW + 7 * DAY_MS
    assert accept(wire(), now=exp).exp == exp
    with pytest.raises(InvalidKeyset, match="keyset has expired"):
        accept(wire(), now=exp + 1)


def test_future_dated_keyset_is_refused() -> None:
    assert accept(wire(iat=NOW + SKEW_MS, exp=NOW + SKEW_MS + DAY_MS))
    with pytest.raises(InvalidKeyset, match="keyset is dated in the future"):
        accept(wire(iat=NOW + SKEW_MS + 1, exp=NOW + SKEW_MS + DAY_MS))


@pytest.mark.parametrize("lifetime", [7 * DAY_MS + 1, 0, -1])
def test_keyset_lifetime_outside_0_to_7_days_is_refused(lifetime: int) -> None:
    with pytest.raises(InvalidKeyset, match=r"keyset lifetime is not within \(0, 7 days\]"):
        accept(wire(iat=NOW - 1, exp=NOW - 1 + lifetime), now=NOW - 1)


# --- pin ----------------------------------------------------------------------------


def test_keyset_for_another_node_is_refused() -> None:
    with pytest.raises(InvalidKeyset, match=r"keyset is for node 'other\.example', expected"):
        accept(wire(node="other.example"))


def test_keyset_with_another_root_is_refused() -> None:
    other = crypto.SigningKey.from_seed(seed("root", "mallory.example"))
    with pytest.raises(InvalidKeyset, match=f"does not match the pinned {FINGERPRINT}"):
        accept(wire(root=other))


def test_keyset_naming_the_pinned_root_but_signed_by_another_key_is_refused() -> None:
    other = crypto.SigningKey.from_seed(seed("root", "mallory.example"))
    with pytest.raises(InvalidKeyset, match="keyset signature does not verify under its root key"):
        accept(sign(body(), signer=other))


def test_keyset_signed_by_its_signing_key_instead_of_root_is_refused() -> None:
    with pytest.raises(InvalidKeyset, match="keyset signature does not verify under its root key"):
        accept(sign(body(), signer=SIG))


def test_keyset_with_tampered_body_is_refused() -> None:
    good = json.loads(wire())
    kb = cj_dumps(body(serial=2))
    tampered = dump_wire_object({"hp1k": b64u_encode(kb), "sig": good["sig"]})
    with pytest.raises(InvalidKeyset, match="keyset signature does not verify"):
        accept(tampered)


def test_node_id_with_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidKeyset, match="keyset node id is malformed"):
        accept(sign(body(node=NODE + "\n")), node=NODE + "\n")


# --- keys inside ------------------------------------------------------------------


@pytest.mark.parametrize("point", X25519_BAD_POINTS)
def test_keyset_holding_a_small_order_x25519_key_is_refused(point: str) -> None:
    keys = [*body()["keys"], raw_key(bytes.fromhex(point), "x25519-box")]
    with pytest.raises(InvalidKeyset, match=r"encryption key .* is of small order"):
        accept(sign(body(keys=keys)))


@pytest.mark.parametrize("point", ED25519_BAD_POINTS)
def test_keyset_holding_a_small_order_or_noncanonical_ed25519_key_is_refused(point: str) -> None:
    keys = [*body()["keys"], raw_key(bytes.fromhex(point), "ed25519-sig")]
    with pytest.raises(InvalidKeyset, match=r"signing key .* is non-canonical or of small order"):
        accept(sign(body(keys=keys)))


@pytest.mark.parametrize("point", ED25519_BAD_POINTS)
def test_keyset_with_a_small_order_root_is_refused(point: str) -> None:
    pk = bytes.fromhex(point)
    data = sign(body(root=b64u_encode(pk)))
    with pytest.raises(InvalidKeyset, match="keyset root key is non-canonical or of small order"):
        accept(data, fingerprint=crypto.kid("ed25519-root", pk))


@pytest.mark.parametrize("status", ["retired", "revoked"])
def test_until_missing_on_a_retired_or_revoked_key_is_refused(status: str) -> None:
    keys = body()["keys"]
    keys[0]["status"] = status
    with pytest.raises(InvalidKeyset, match="a key entry has missing or extra members"):
        accept(sign(body(keys=keys)))


def test_until_present_on_an_active_key_is_refused() -> None:
    keys = body()["keys"]
    keys[0]["until"] = NOW
    with pytest.raises(InvalidKeyset, match="a key entry has missing or extra members"):
        accept(sign(body(keys=keys)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "ed25519-root"}, "a key entry has an unknown type"),
        ({"status": "paused"}, "a key entry has an unknown status"),
        ({"nbf": "0"}, "a key entry has a non-integer time"),
        ({"nbf": True}, "a key entry has a non-integer time"),
        ({"pk": b64u_encode(bytes(31))}, "a key entry has a malformed public key"),
        ({"pk": b64u_encode(BOX.public_key) + "="}, "a key entry has a malformed public key"),
        ({"kid": crypto.kid("x25519-box", SIG.public_key)}, "does not match its key and type"),
        ({"type": "x25519-box"}, "does not match its key and type"),
        ({"extra": 1}, "a key entry has missing or extra members"),
    ],
)
def test_malformed_key_entry_is_refused(change: dict[str, Any], message: str) -> None:
    keys = body()["keys"]
    keys[0].update(change)
    with pytest.raises(InvalidKeyset, match=message):
        accept(sign(body(keys=keys)))


def test_duplicate_kid_is_refused() -> None:
    keys = body()["keys"]
    with pytest.raises(InvalidKeyset, match="keyset lists a key id twice"):
        accept(sign(body(keys=[*keys, keys[0]])))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"typ": "hp1.packet"}, r"not an hp1 keyset \(typ or v\)"),
        ({"v": 2}, r"not an hp1 keyset \(typ or v\)"),
        ({"v": True}, r"not an hp1 keyset \(typ or v\)"),
        ({"serial": -1}, "keyset serial is negative"),
        ({"iat": "0"}, "keyset iat is not an integer"),
        ({"root": b64u_encode(ROOT.public_key) + "="}, "keyset root key is malformed"),
        ({"keys": {}}, "keyset keys is not a list"),
        ({"extra": 1}, "keyset has missing or extra members"),
    ],
)
def test_malformed_keyset_body_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidKeyset, match=message):
        accept(sign(body(**change)))


# --- CJ inside the keyset -----------------------------------------------------------


def _raw_with(replace: bytes, by: bytes, **changes: Any) -> bytes:
    kb = cj_dumps(body(**changes))
    assert replace in kb
    return kb.replace(replace, by, 1)


@pytest.mark.parametrize(
    ("kb", "message"),
    [
        (_raw_with(b'"node":"', b'"node":"\\ud800'), "unpaired surrogate in string"),
        (_raw_with(b'"node":"', b'"node":"\\udfff'), "unpaired surrogate in string"),
        (
            _raw_with(b'"keys":[]', b'"keys":' + b"[" * 32 + b"]" * 32, keys=[]),
            "nesting deeper than 32",
        ),
        (_raw_with(b'"iat":', b'"iat": '), "input is not canonical JSON"),
        (_raw_with(b'"exp":', b'"v":1,"exp":'), "duplicate key 'v'"),
        (_raw_with(b'"serial":1', b'"serial":1.0'), "floats are not allowed"),
    ],
)
def test_non_cj_keyset_bytes_are_refused(kb: bytes, message: str) -> None:
    with pytest.raises(InvalidKeyset, match=f"keyset is not well-formed: {message}"):
        accept(sign(kb))


def test_keyset_wire_with_padding_or_wrong_members_is_refused() -> None:
    good = json.loads(wire())
    padded = dict(good, sig=good["sig"] + "==")
    with pytest.raises(InvalidKeyset, match="keyset is not well-formed: base64url"):
        accept(json.dumps(padded).encode())
    with pytest.raises(InvalidKeyset, match="keyset is not well-formed: wire object"):
        accept(json.dumps(dict(good, x="y")).encode())
    with pytest.raises(InvalidKeyset, match="keyset is not well-formed: duplicate key"):
        accept(wire()[:-1] + b',"sig":' + json.dumps(good["sig"]).encode() + b"}")


def test_keyset_wire_may_have_whitespace() -> None:
    good = json.loads(wire())
    assert accept(json.dumps(good, indent=2).encode()).serial == 1


# --- key validity over time ----------------------------------------------------------


def test_retired_signing_key_verifies_only_up_to_until() -> None:
    entry = sig_entry(SIG, NOW - DAY_MS, "retired", NOW)
    assert entry.verifies_at(NOW)
    assert not entry.verifies_at(NOW + 1)


def test_signing_key_verifies_from_nbf_minus_skew() -> None:
    entry = sig_entry(SIG, NOW)
    assert entry.verifies_at(NOW - SKEW_MS)
    assert not entry.verifies_at(NOW - SKEW_MS - 1)


def test_revoked_signing_key_verifies_nothing_new() -> None:
    assert not sig_entry(SIG, NOW - DAY_MS, "revoked", NOW).verifies_at(NOW - 1)


def test_box_key_is_not_a_signing_key_and_vice_versa() -> None:
    assert not box_entry(BOX, NOW - DAY_MS).verifies_at(NOW)
    assert not sig_entry(SIG, NOW - DAY_MS).decrypts_at(NOW)


def test_retired_box_key_decrypts_for_30_days_plus_skew() -> None:
    entry = box_entry(BOX, NOW - DAY_MS, "retired", NOW)
    assert entry.decrypts_at(NOW + 30 * DAY_MS + SKEW_MS)
    assert not entry.decrypts_at(NOW + 30 * DAY_MS + SKEW_MS + 1)
    assert not box_entry(BOX, NOW - DAY_MS, "revoked", NOW).decrypts_at(NOW - 1)


def test_box_key_is_used_from_nbf_minus_skew() -> None:
    entry = box_entry(BOX, NOW)
    assert entry.decrypts_at(NOW - SKEW_MS)
    assert not entry.decrypts_at(NOW - SKEW_MS - 1)


def test_senders_encrypt_to_the_newest_active_box_key_lowest_kid_on_ties() -> None:
    boxes = [crypto.BoxKey.from_secret(seed(f"box{i}", NODE)) for i in range(4)]
    entries = [
        box_entry(boxes[0], NOW - 2 * DAY_MS),
        box_entry(boxes[1], NOW - DAY_MS),
        box_entry(boxes[2], NOW - DAY_MS),
        box_entry(boxes[3], NOW + 1),  # not yet: nbf > now
        box_entry(BOX, NOW, "retired", NOW),  # newest nbf, but retired
    ]
    ks = make_node(NODE, keys=[sig_entry(SIG, NOW - DAY_MS), *entries]).keyset
    newest = ks.newest_box_key(NOW)
    assert newest is not None
    assert newest.kid == min(entries[1].kid, entries[2].kid)
    assert ks.newest_box_key(NOW + 1).kid == entries[3].kid  # type: ignore[union-attr]


def test_parse_keyset_round_trips_build_keyset() -> None:
    ks = parse_keyset(wire(serial=3))
    assert ks.serial == 3
    assert ks.keys == tuple(default_keys())
