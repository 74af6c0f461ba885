"""The audit hash chain and signed log checkpoints (docs/protocol.md section 5).

head_0 = 32 zero bytes
head_N = H32(PAE("hp1/audit/v1", head_{N-1}, H32(entry_N)))
"""

from __future__ import annotations

from collections.abc import Iterable
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
from handover.protocol.errors import EncodingError, InvalidCheckpoint
from handover.protocol.keyset import Keyset, is_int, is_node_id
from handover.protocol.timeutil import SKEW_MS

AUDIT_LABEL = "hp1/audit/v1"
CHECKPOINT_LABEL = "hp1/checkpoint/v1"
ZERO_HEAD = crypto.ZERO_HEAD
AUDIT_OPS = frozenset(
    {
        "collection",
        "consultation",
        "disclosure",
        "alteration",
        "combination",
        "erasure",
        "delivery",
        "rejection",
        "key",
        "policy",
    }
)


@dataclass(frozen=True)
class LogPosition:
    """A position on a node's audit chain: after entry `seq`, the head is `head`."""

    seq: int
    head: bytes

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "head": b64u_encode(self.head)}

    @classmethod
    def genesis(cls) -> LogPosition:
        return cls(0, ZERO_HEAD)

    @classmethod
    def from_json(cls, raw: object) -> LogPosition:
        """Parse `{"seq", "head"}` strictly; seq is 0 exactly when head is the zero head.

        Raises:
            EncodingError: members, types or the seq/head rule.
        """
        if not isinstance(raw, dict) or set(raw) != {"seq", "head"}:
            raise EncodingError("log position must have exactly seq and head")
        seq = raw["seq"]
        if not is_int(seq) or seq < 0:
            raise EncodingError("log seq must be a non-negative integer")
        head = b64u_decode(raw["head"], 32)
        if (seq == 0) != (head == ZERO_HEAD):
            raise EncodingError("log seq is 0 exactly when head is the zero head")
        return cls(seq, head)


def entry_bytes(seq: int, at: int, op: str, **fields: Any) -> bytes:
    """CJ bytes of an audit entry. Fields hold identifiers and field names only."""
    if op not in AUDIT_OPS:
        raise ValueError(f"unknown audit op {op!r}")
    return cj_dumps({"seq": seq, "at": at, "op": op, **fields})


def entry_digest(entry: bytes) -> bytes:
    return crypto.h32(entry)


def next_head(prev_head: bytes, entry_or_digest: bytes, *, is_digest: bool = False) -> bytes:
    digest = entry_or_digest if is_digest else crypto.h32(entry_or_digest)
    return crypto.h32(crypto.pae(AUDIT_LABEL, prev_head, digest))


def extend(head: bytes, digests: Iterable[bytes]) -> bytes:
    """Fold entry digests onto `head`."""
    for digest in digests:
        head = next_head(head, digest, is_digest=True)
    return head


def chain_heads(entries: Iterable[bytes], start: bytes = ZERO_HEAD) -> list[bytes]:
    """Heads after each entry, from `start`."""
    heads = []
    head = start
    for entry in entries:
        head = next_head(head, entry)
        heads.append(head)
    return heads


@dataclass(frozen=True)
class Checkpoint:
    node: str
    kid: str
    seq: int
    head: bytes
    iat: int
    cb: bytes
    wire: bytes

    @property
    def position(self) -> LogPosition:
        return LogPosition(self.seq, self.head)


def make_checkpoint(
    *, node: str, kid: str, key: crypto.SigningKey, position: LogPosition, now: int
) -> bytes:
    cb = cj_dumps(
        {
            "typ": "hp1.checkpoint",
            "v": 1,
            "node": node,
            "kid": kid,
            "seq": position.seq,
            "head": b64u_encode(position.head),
            "iat": now,
        }
    )
    sig = key.sign(crypto.pae(CHECKPOINT_LABEL, cb))
    return dump_wire_object({"hp1c": b64u_encode(cb), "sig": b64u_encode(sig)})


def verify_checkpoint(wire: bytes | str, keyset: Keyset, now: int) -> Checkpoint:
    """Verify a checkpoint against the signer's accepted keyset.

    Raises:
        InvalidCheckpoint: naming the rule broken.
    """
    try:
        outer = parse_wire_object(wire, ("hp1c", "sig"))
        cb = b64u_decode(outer["hp1c"])
        sig = b64u_decode(outer["sig"], 64)
        body = cj_loads(cb)
    except EncodingError as exc:
        raise InvalidCheckpoint(f"checkpoint is not well-formed: {exc}") from exc
    members = {"typ", "v", "node", "kid", "seq", "head", "iat"}
    if not isinstance(body, dict) or set(body) != members:
        raise InvalidCheckpoint("checkpoint has missing or extra members")
    if body["typ"] != "hp1.checkpoint" or body["v"] != 1 or not is_int(body["v"]):
        raise InvalidCheckpoint("not an hp1 checkpoint (typ or v)")
    if not is_node_id(body["node"]) or body["node"] != keyset.node:
        raise InvalidCheckpoint("checkpoint is not from the keyset's node")
    if not is_int(body["iat"]) or body["iat"] > now + SKEW_MS:
        raise InvalidCheckpoint("checkpoint iat is malformed or in the future")
    try:
        position = LogPosition.from_json({"seq": body["seq"], "head": body["head"]})
    except EncodingError as exc:
        raise InvalidCheckpoint(f"checkpoint position is malformed: {exc}") from exc
    if not isinstance(body["kid"], str):
        raise InvalidCheckpoint("checkpoint kid is malformed")
    entry = keyset.signing_key_for(body["kid"], body["iat"])
    if entry is None:
        raise InvalidCheckpoint(f"checkpoint signing key {body['kid']!r} is not valid at its iat")
    if not crypto.ed25519_verify(entry.public_key, crypto.pae(CHECKPOINT_LABEL, cb), sig):
        raise InvalidCheckpoint("checkpoint signature does not verify")
    return Checkpoint(
        node=body["node"],
        kid=body["kid"],
        seq=position.seq,
        head=position.head,
        iat=body["iat"],
        cb=cb,
        wire=wire.encode("utf-8") if isinstance(wire, str) else wire,
    )


# --- fork declarations (docs/protocol.md section 5.1) ----------------------------

FORK_LABEL = "hp1/fork/v1"


@dataclass(frozen=True)
class ForkDeclaration:
    """A node's signed statement that its log restarted as a new chain at `iat`,
    the previous chain ending (as far as the node still knows it) at `previous`."""

    node: str
    kid: str
    previous: LogPosition
    iat: int
    fb: bytes
    wire: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "previous": self.previous.to_json(),
            "iat": self.iat,
            "kid": self.kid,
            "signed": self.wire.decode("utf-8"),
        }


def make_fork_declaration(
    *, node: str, kid: str, key: crypto.SigningKey, previous: LogPosition, now: int
) -> bytes:
    """Sign a fork declaration: FB = CJ({typ, v, node, kid, previous, iat})."""
    fb = cj_dumps(
        {
            "typ": "hp1.fork",
            "v": 1,
            "node": node,
            "kid": kid,
            "previous": previous.to_json(),
            "iat": now,
        }
    )
    sig = key.sign(crypto.pae(FORK_LABEL, fb))
    return dump_wire_object({"hp1f": b64u_encode(fb), "sig": b64u_encode(sig)})


def verify_fork_declaration(wire: bytes | str, keyset: Keyset, now: int) -> ForkDeclaration:
    """Verify a fork declaration against the signer's accepted keyset (the same
    rules as a checkpoint's).

    Raises:
        InvalidCheckpoint: naming the rule broken (a declaration is a signed
            statement about the log, like a checkpoint).
    """
    try:
        outer = parse_wire_object(wire, ("hp1f", "sig"))
        fb = b64u_decode(outer["hp1f"])
        sig = b64u_decode(outer["sig"], 64)
        body = cj_loads(fb)
    except EncodingError as exc:
        raise InvalidCheckpoint(f"fork declaration is not well-formed: {exc}") from exc
    if not isinstance(body, dict) or set(body) != {"typ", "v", "node", "kid", "previous", "iat"}:
        raise InvalidCheckpoint("fork declaration has missing or extra members")
    if body["typ"] != "hp1.fork" or body["v"] != 1 or not is_int(body["v"]):
        raise InvalidCheckpoint("not an hp1 fork declaration (typ or v)")
    if not is_node_id(body["node"]) or body["node"] != keyset.node:
        raise InvalidCheckpoint("fork declaration is not from the keyset's node")
    if not is_int(body["iat"]) or body["iat"] > now + SKEW_MS:
        raise InvalidCheckpoint("fork declaration iat is malformed or in the future")
    try:
        previous = LogPosition.from_json(body["previous"])
    except EncodingError as exc:
        raise InvalidCheckpoint(f"fork declaration previous is malformed: {exc}") from exc
    if not isinstance(body["kid"], str):
        raise InvalidCheckpoint("fork declaration kid is malformed")
    entry = keyset.signing_key_for(body["kid"], body["iat"])
    if entry is None:
        raise InvalidCheckpoint(
            f"fork declaration signing key {body['kid']!r} is not valid at its iat"
        )
    if not crypto.ed25519_verify(entry.public_key, crypto.pae(FORK_LABEL, fb), sig):
        raise InvalidCheckpoint("fork declaration signature does not verify")
    return ForkDeclaration(
        node=body["node"],
        kid=body["kid"],
        previous=previous,
        iat=body["iat"],
        fb=fb,
        wire=wire.encode("utf-8") if isinstance(wire, str) else wire,
    )
