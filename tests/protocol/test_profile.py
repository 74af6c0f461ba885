"""Partner profiles (protocol/profile.py) and pairing offers (protocol/pairing.py):
what a receiver refuses."""

from __future__ import annotations

import json

import pytest

from handover.protocol import crypto
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps, cj_loads
from handover.protocol.pairing import PairingError, make_offer, parse_offer
from handover.protocol.profile import InvalidProfile, build_profile, verify_profile

ROOT = crypto.SigningKey.from_seed(bytes(range(32)))
OTHER = crypto.SigningKey.from_seed(bytes(32))
FINGERPRINT = crypto.kid("ed25519-root", ROOT.public_key)
FIELDS = {
    "organisation": "Example prison",
    "kind": "prison",
    "country": "NL",
    "jurisdiction": "Example district",
    "dp_contact": "privacy desk",
    "contact": "duty desk",
    "responsibilities": "Detention; sends release notices",
}


def wire(**changes: object) -> bytes:
    return build_profile(
        node="prison.example", serial=1, iat=1, root=ROOT, fields={**FIELDS, **changes}
    )  # type: ignore[dict-item]


def test_a_profile_verifies_with_its_pin() -> None:
    profile = verify_profile(wire(), node="prison.example", fingerprint=FINGERPRINT)
    assert profile.fields == FIELDS and profile.serial == 1


@pytest.mark.parametrize(
    ("node", "fingerprint", "problem"),
    [
        ("probation.example", FINGERPRINT, "is for node"),
        ("prison.example", crypto.kid("ed25519-root", OTHER.public_key), "fingerprint"),
    ],
)
def test_a_profile_for_another_pin_is_refused(node: str, fingerprint: str, problem: str) -> None:
    with pytest.raises(InvalidProfile, match=problem):
        verify_profile(wire(), node=node, fingerprint=fingerprint)


def test_a_changed_field_breaks_the_signature() -> None:
    outer = json.loads(wire())
    body = cj_loads(b64u_decode(outer["hp1p"]))
    body["contact"] = "someone else"
    outer["hp1p"] = b64u_encode(cj_dumps(body))
    with pytest.raises(InvalidProfile, match="signature"):
        verify_profile(json.dumps(outer).encode(), node="prison.example", fingerprint=FINGERPRINT)


@pytest.mark.parametrize(
    "changes",
    [{"organisation": " "}, {"country": "nl"}, {"country": "NLD"}, {"contact": "x" * 501}],
)
def test_fields_are_checked_when_signing(changes: dict[str, str]) -> None:
    with pytest.raises(InvalidProfile):
        wire(**changes)


def test_an_offer_round_trips_and_bad_offers_are_refused() -> None:
    raw = make_offer(
        node="prison.example", kind="prison", url="https://h.example/", root=ROOT.public_key,
        profile=None,
    )  # fmt: skip
    offer = parse_offer(raw)
    assert (offer.node, offer.url, offer.profile) == ("prison.example", "https://h.example", None)
    assert offer.fingerprint == FINGERPRINT
    body = cj_loads(raw)
    for name, value in (
        ("kind", "Prison Service"),
        ("url", "ftp://h.example"),
        ("root", b64u_encode(bytes(32))),  # the identity point is not a key
        ("node", "Not A Node"),
    ):
        with pytest.raises(PairingError):
            parse_offer(cj_dumps({**body, name: value}))
