"""Fuzzing the protocol parsers with hypothesis (issue: hardening, test campaign).

Every target gets arbitrary input and mutations of valid input (byte-level, and
structural changes re-signed with the real key so the checks behind the
signature are reached). The property is the one of campaign_fuzz.py: only the
documented error (EncodingError, InvalidKeyset, InvalidPacket with a Reason) is
ever raised, and what is accepted is consistent.

Examples per target: CAMPAIGN_FUZZ_EXAMPLES (150 under `make test`, 100,000
under `make soak`); runs are derandomized, so a failure reproduces as is.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import campaign_fuzz as cf
from campaign_budget import FUZZ_EXAMPLES, fuzz_settings, report
from hypothesis import given
from hypothesis import strategies as st

from handover.protocol import crypto
from handover.protocol.canonical import b64u_encode, cj_dumps
from handover.protocol.errors import EncodingError
from handover.protocol.packet import pad

# --- strategies --------------------------------------------------------------------------

B64U_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**53) - 2, max_value=2**53 + 2)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _b64(n: int) -> str:
    return b64u_encode(crypto.h64(b"campaign-%d" % n)[:n] if n <= 64 else bytes(n))


NODES = (cf.ALICE, cf.BOB, cf.CAROL, cf.MALLORY)
# Values a real header or keyset could hold: the fuzzer swaps them in so the
# checks after parsing (signature, keys, times, recipients) see plausible input.
PLAUSIBLE: tuple[Any, ...] = (
    *(n.name for n in NODES),
    *(k.kid for n in NODES for k in n.keyset.keys),
    *(n.fingerprint for n in NODES),
    *(b64u_encode(k.public_key) for n in NODES for k in n.keyset.keys),
    *(_b64(n) for n in (0, 1, 15, 16, 17, 24, 32, 48, 64)),
    "hp1.packet", "hp1.keyset", "ed25519-sig", "x25519-box", "ed25519-root",
    "active", "retired", "revoked", "A", "", "a" * 254,
    0, 1, -1, 2, 63, 64, 65, 4096, 2**53 - 1, 2**53, -(2**53) + 1,
    cf.NOW, cf.NOW - 1, cf.NOW + 1, cf.NOW + 5 * 60_000 + 1, cf.NOW + 30 * 86_400_000,
    cf.NOW - 86_400_000, cf.NOW + 7 * 86_400_000, True, False, None, [], {},
    {"seq": 0, "head": _b64(32)}, {"seq": 1, "head": b64u_encode(bytes(32))},
)  # fmt: skip
# A fresh copy each time: a drawn list or object is changed in place by later
# mutations, and the shared PLAUSIBLE values must stay as they are.
values = (st.sampled_from(PLAUSIBLE) | json_values).map(copy.deepcopy)

mutation_ops = st.lists(
    st.tuples(
        st.integers(0, 6),
        st.integers(0, 2**20),
        st.integers(0, 64),
        st.binary(max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def mutated(seeds: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """Byte-level mutations of one of `seeds`."""
    return st.builds(cf.mutate, st.sampled_from(seeds), mutation_ops)


def _slots(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths of every member and item inside `value` (the root is the empty path)."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _slots(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _slots(item, (*path, index))


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


@st.composite
def structural(draw: st.DrawFn, document: dict[str, Any]) -> bytes:
    """`document` with 1-3 structural changes (replace, delete, add, move), encoded as
    CJ when it can be, else (or when drawn) as other JSON text."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_slots(doc))))
        action = draw(st.sampled_from(("replace", "delete", "add", "copy")))
        if not path:
            if action == "replace" and draw(st.booleans()):
                doc = draw(values)
            continue
        parent = _at(doc, path[:-1])
        key = path[-1]
        if action == "replace":
            parent[key] = draw(values)
        elif action == "delete":
            del parent[key]
        elif action == "add":
            if isinstance(parent, dict):
                parent[draw(st.sampled_from((*document, "x", "until", "")))] = draw(values)
            else:
                parent.insert(key, draw(values))
        else:
            other = draw(st.sampled_from(list(_slots(document))))
            parent[key] = copy.deepcopy(_at(document, other))
    if draw(st.booleans()):
        try:
            return cj_dumps(doc)
        except EncodingError:
            pass
    indent = draw(st.sampled_from((None, 1)))
    return json.dumps(doc, indent=indent, sort_keys=draw(st.booleans())).encode()


def run(name: str, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
    """Run `check` on FUZZ_EXAMPLES inputs from `strategy`; report count and time."""
    count = 0

    @fuzz_settings()
    @given(strategy)
    def target(value: Any) -> None:
        nonlocal count
        count += 1
        check(value)

    started = time.monotonic()
    target()
    elapsed = time.monotonic() - started
    report(
        f"fuzz {name}: {count} inputs in {elapsed:.1f} s"
        f" ({count / max(elapsed, 1e-9):.0f}/s, max_examples {FUZZ_EXAMPLES})"
    )


# --- canonical JSON, wire objects, base64url -------------------------------------------------

json_texts = st.builds(
    lambda v, indent, ascii_: json.dumps(v, indent=indent, ensure_ascii=ascii_).encode(
        "utf-8", "surrogatepass"
    ),
    json_values,
    st.sampled_from((None, 0, 2)),
    st.booleans(),
)


def test_fuzz_cj_loads() -> None:
    """Strict CJ parse (cj_loads), against the independent parser too."""
    run(
        "cj_loads",
        st.binary(max_size=200) | mutated(cf.CJ_SEEDS) | json_texts,
        cf.check_cj_loads,
    )


def test_fuzz_strict_json_loads() -> None:
    """The strict JSON parser under every wire object, on bytes and on text."""
    run(
        "strict_json_loads",
        st.binary(max_size=200)
        | st.text(max_size=100)
        | mutated(cf.CJ_SEEDS + cf.WIRE_SEEDS)
        | json_texts
        | json_texts.map(lambda b: b.decode("utf-8", "surrogatepass")),
        cf.check_strict_json,
    )


def test_fuzz_wire_object() -> None:
    """The outer wire object parse (parse_wire_object)."""
    run(
        "parse_wire_object",
        st.binary(max_size=200) | mutated(cf.WIRE_SEEDS) | json_texts,
        cf.check_wire_object,
    )


def test_fuzz_b64u_decode() -> None:
    """Strict unpadded base64url, with and without an expected length."""
    texts = (
        st.text(alphabet=B64U_ALPHABET, max_size=90)
        | st.text(alphabet=B64U_ALPHABET + "=+/ \n.\u00e9\u0660", max_size=40)
        | st.text(max_size=40)
        | st.binary(max_size=20)
        | st.integers()
        | st.none()
        | st.binary(max_size=66).map(b64u_encode)
        | st.binary(max_size=66).map(lambda b: cf.ind.b64u(b) + "=" * (-len(cf.ind.b64u(b)) % 4))
    )
    run(
        "b64u_decode",
        st.tuples(texts, st.none() | st.integers(0, 70) | st.integers()),
        lambda args: cf.check_b64u(*args),
    )


# --- keysets ----------------------------------------------------------------------------------


def test_fuzz_keyset_bytes() -> None:
    """parse_keyset and accept_keyset on arbitrary bytes and mutated keyset wires."""
    run(
        "keyset_bytes",
        st.tuples(
            st.binary(max_size=300) | mutated((cf.VALID_KEYSET,)) | json_texts,
            st.sampled_from((None, cf.ALICE.keyset)),
        ),
        lambda args: (cf.check_parse_keyset(args[0]), cf.check_accept_keyset(*args)),
    )


def test_fuzz_keyset_resigned() -> None:
    """Structural changes to the keyset body, signed again by Alice's root key, so
    every acceptance rule behind the signature is reached."""
    bodies = (
        structural(cf.VALID_KEYSET_BODY)
        | mutated((cf.VALID_KB,))
        | st.binary(max_size=100)
        | json_values.map(lambda v: json.dumps(v).encode())
    )
    run(
        "keyset_resigned",
        st.tuples(bodies.map(cf.resign_keyset), st.sampled_from((None, cf.ALICE.keyset))),
        lambda args: cf.check_accept_keyset(*args),
    )


# --- packets ---------------------------------------------------------------------------------


def test_fuzz_parse_packet() -> None:
    """Receive steps 1-2 (parse_packet) on arbitrary bytes and mutated packets."""
    run(
        "parse_packet",
        st.binary(max_size=300) | mutated((cf.VALID_PACKET,)) | json_texts,
        cf.check_parse_packet,
    )


def test_fuzz_open_packet_mutated() -> None:
    """Every receive check (open_packet) on byte-level mutations of a valid packet,
    with an empty replay store or one holding a record for its pid."""
    run(
        "open_packet_mutated",
        st.tuples(st.binary(max_size=300) | mutated((cf.VALID_PACKET,)), st.booleans()),
        lambda args: cf.check_open_packet(args[0], replay_record=args[1]),
    )


def test_fuzz_open_packet_resigned_header() -> None:
    """Structural changes to the header, signed again with Alice's real key, so
    steps 4-8 (keys, times, recipients, unwrap, commitment) see the change."""
    headers = structural(cf.VALID_HEADER) | mutated((cf.VALID_HB,))
    run("open_packet_resigned_header", headers, cf.check_resigned_header)


@st.composite
def payloads(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        inner = draw(mutated((cf.VALID_INNER,)))
    elif kind == 1:
        inner = draw(structural(json.loads(cf.VALID_INNER)))
    elif kind == 2:
        inner = draw(st.binary(max_size=200))
    else:
        inner = draw(json_texts)
    padded = None
    if draw(st.integers(0, 3)) == 0:
        padded = cf.mutate(pad(inner), draw(mutation_ops))
    return inner, padded


def test_fuzz_open_packet_payload() -> None:
    """Packets that decrypt but carry a mutated, arbitrary or wrongly padded
    plaintext: padding, payload parse, log position, body bytes (permissive
    validator and the real schema registry)."""
    run("open_packet_payload", payloads(), lambda args: cf.check_crafted_payload(*args))
