"""Partner profiles: who an agency is, signed with its root key (docs/protocol.md section 9.1).

A profile says, for people at the partner agencies: the organisation's name,
its agency kind, country and jurisdiction, a data-protection contact, an
operational contact and a short statement of its responsibilities in the
cooperation. It is signed like a keyset: `sig` = Ed25519(root, PAE(
"hp1/profile/v1", pb)) over the exact CJ bytes `pb`, so a peer that pinned
the root fingerprint can check it wherever it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handover.protocol import crypto
from handover.protocol.canonical import (
    b64u_decode,
    b64u_encode,
    cj_dumps,
    cj_loads,
    dump_wire_object,
    parse_wire_object,
)
from handover.protocol.errors import EncodingError, InvalidKeyset
from handover.protocol.keyset import is_int, is_node_id

PROFILE_LABEL = "hp1/profile/v1"
PROFILE_TYP = "hp1.profile"
# The people-facing fields and their longest length in characters.
TEXT_FIELDS: dict[str, int] = {
    "organisation": 200,
    "kind": 40,
    "country": 2,
    "jurisdiction": 200,
    "dp_contact": 500,
    "contact": 500,
    "responsibilities": 2000,
}
MAX_PROFILE_WIRE = 16 * 1024
_MEMBERS = {"typ", "v", "node", "serial", "iat", "root", *TEXT_FIELDS}


class InvalidProfile(InvalidKeyset):
    """A profile that fails a rule: encoding, signature, node, or a field."""


@dataclass(frozen=True)
class Profile:
    node: str
    serial: int
    iat: int
    root: bytes
    fields: dict[str, str]
    wire: bytes

    @property
    def fingerprint(self) -> str:
        return crypto.kid("ed25519-root", self.root)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "serial": self.serial, "iat": self.iat, **self.fields}


def check_fields(fields: dict[str, str]) -> dict[str, str]:
    """The profile fields, trimmed; raises InvalidProfile naming a missing or long one."""
    out = {}
    for name, limit in TEXT_FIELDS.items():
        value = fields.get(name)
        if not isinstance(value, str) or not value.strip():
            raise InvalidProfile(f"profile field {name} is required")
        value = value.strip()
        if len(value) > limit:
            raise InvalidProfile(f"profile field {name} is longer than {limit} characters")
        out[name] = value
    if not (len(out["country"]) == 2 and out["country"].isalpha() and out["country"].isupper()):
        raise InvalidProfile("profile field country is an ISO 3166-1 alpha-2 code, e.g. NL")
    unknown = set(fields) - set(TEXT_FIELDS)
    if unknown:
        raise InvalidProfile(f"unknown profile fields: {', '.join(sorted(unknown))}")
    return out


def build_profile(
    *, node: str, serial: int, iat: int, root: crypto.SigningKey, fields: dict[str, str]
) -> bytes:
    """Sign a profile with the root key; the wire JSON bytes."""
    pb = cj_dumps(
        {
            "typ": PROFILE_TYP,
            "v": 1,
            "node": node,
            "serial": serial,
            "iat": iat,
            "root": b64u_encode(root.public_key),
            **check_fields(fields),
        }
    )
    sig = root.sign(crypto.pae(PROFILE_LABEL, pb))
    return dump_wire_object({"hp1p": b64u_encode(pb), "sig": b64u_encode(sig)})


def verify_profile(wire: bytes, *, node: str, fingerprint: str) -> Profile:
    """Parse a profile and check it against a pin (node id and root fingerprint).

    Raises:
        InvalidProfile: with a message naming the rule broken.
    """
    if len(wire) > MAX_PROFILE_WIRE:
        raise InvalidProfile("profile too large")
    try:
        outer = parse_wire_object(wire, ("hp1p", "sig"))
        pb = b64u_decode(outer["hp1p"])
        sig = b64u_decode(outer["sig"], 64)
        body = cj_loads(pb)
    except (EncodingError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidProfile("profile is not a wire object of canonical JSON") from exc
    if not isinstance(body, dict) or set(body) != _MEMBERS:
        raise InvalidProfile("profile members are " + ", ".join(sorted(_MEMBERS)))
    if body["typ"] != PROFILE_TYP or body["v"] != 1 or not is_node_id(body["node"]):
        raise InvalidProfile("not a hp1.profile v1 with a node id")
    if not is_int(body["serial"]) or not is_int(body["iat"]) or body["serial"] < 1:
        raise InvalidProfile("profile serial and iat are integers, serial >= 1")
    try:
        root = b64u_decode(body["root"], 32) if isinstance(body["root"], str) else b""
    except EncodingError as exc:
        raise InvalidProfile("profile root is not b64u of 32 bytes") from exc
    if body["node"] != node:
        raise InvalidProfile(f"profile is for node {body['node']!r}, expected {node!r}")
    if crypto.kid("ed25519-root", root) != fingerprint:
        raise InvalidProfile("profile root does not match the pinned fingerprint")
    if not crypto.ed25519_verify(root, crypto.pae(PROFILE_LABEL, pb), sig):
        raise InvalidProfile("profile signature does not verify")
    fields = check_fields({k: body[k] for k in TEXT_FIELDS})
    return Profile(
        node=node, serial=body["serial"], iat=body["iat"], root=root, fields=fields, wire=wire
    )
