#!/usr/bin/env python3
"""Write the hp1 known-answer vectors into tests/vectors/, one JSON file per case.

    python tools/make_vectors.py           # (re)write tests/vectors/*.json
    python tools/make_vectors.py --check   # exit 1 if the files differ from a fresh run

Everything is deterministic, so a rerun writes byte-identical files:

- keys: every seed / secret key is `H32(PAE("hp1-vectors/seed", LABEL))`, and
  the files list them in hex so any implementation can rebuild the keys;
- time: a fixed `NOW` (2026-01-01T00:00:00Z);
- randomness: an injected `rand(n)` reading a BLAKE2b stream in counter mode,
  `block_i = H64(PAE("hp1-vectors/rand", LABEL, LE64(i)))`, consumed in order.
  The values drawn (K, e, n, pid bytes, rid bytes) are written out too, so an
  implementation does not need the stream to check a vector.

The packet body is the first example of `schemas/release-notice.v1.json`.
`docs/protocol.md` ("Known-answer vectors") describes every file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import nacl.bindings as sodium  # noqa: E402

from handover.protocol import crypto  # noqa: E402
from handover.protocol.auditchain import (  # noqa: E402
    LogPosition,
    chain_heads,
    entry_bytes,
    make_checkpoint,
)
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps  # noqa: E402
from handover.protocol.errors import RejectCode  # noqa: E402
from handover.protocol.keyset import KeyEntry, build_keyset  # noqa: E402
from handover.protocol.packet import (  # noqa: E402
    COMMITMENT_LABEL,
    CONTENT_KEY_LABEL,
    PACKET_LABEL,
    Identity,
    Recipient,
    _derive,
    _seal_at,
    packet_digest,
    pad,
)
from handover.protocol.receipt import make_receipt  # noqa: E402
from handover.protocol.timeutil import DAY_MS  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
from att_vectors import attachments_vector  # noqa: E402

VECTOR_DIR = ROOT / "tests" / "vectors"
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR_MS = 60 * 60 * 1000
TTL_MS = 14 * DAY_MS
SCHEMA_ID = "handover/release-notice/1"
SCHEMA_FILE = ROOT / "schemas" / "release-notice.v1.json"
ED25519_L = 2**252 + 27742317777372353535851937790883648493
GENERATOR = "tools/make_vectors.py"

SENDER = "prison.vught.example"
RECIPIENT_1 = "probation.utrecht.example"
RECIPIENT_2 = "exit.stichting.example"

RAND_CONSTRUCTION = (
    'block_i = BLAKE2b-512(PAE("hp1-vectors/rand", label, LE64(i))) for i = 0, 1, ...; '
    "rand(n) returns the next n bytes of block_0 || block_1 || ..."
)
SEED_CONSTRUCTION = 'BLAKE2b-256(PAE("hp1-vectors/seed", label))'


def secret(label: str) -> bytes:
    """A deterministic 32-byte seed or secret key."""
    return crypto.h32(crypto.pae("hp1-vectors/seed", label))


class Stream:
    """rand(n) over a BLAKE2b counter-mode stream; remembers what it handed out."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.buffer = b""
        self.counter = 0
        self.drawn: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        while len(self.buffer) < n:
            block = crypto.h64(
                crypto.pae("hp1-vectors/rand", self.label, crypto.le64(self.counter))
            )
            self.buffer += block
            self.counter += 1
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        self.drawn.append(out)
        return out

    def describe(self) -> dict[str, Any]:
        return {"construction": RAND_CONSTRUCTION, "label": self.label}


class Replay:
    """rand(n) that hands out fixed values in order (what the vector files record)."""

    def __init__(self, values: list[bytes]) -> None:
        self.values = list(values)

    def __call__(self, n: int) -> bytes:
        value = self.values.pop(0)
        assert len(value) == n, (len(value), n)
        return value


class NodeMaterial:
    """A vector node: keys derived from labels, and its keyset."""

    def __init__(self, node: str, *, serial: int = 1, history: bool = False) -> None:
        self.node = node
        self.root = crypto.SigningKey.from_seed(secret(f"{node}/root"))
        self.sig = crypto.SigningKey.from_seed(secret(f"{node}/sig"))
        self.box = crypto.BoxKey.from_secret(secret(f"{node}/box"))
        self.serial = serial
        self.iat = NOW - DAY_MS
        self.exp = self.iat + 7 * DAY_MS
        self.nbf = NOW - 2 * DAY_MS
        # (type, private hex, public key, nbf, status, until) in keyset order
        self.entries: list[tuple[str, bytes, bytes, int, str, int | None]] = []
        if history:
            old_sig = crypto.SigningKey.from_seed(secret(f"{node}/sig-old"))
            old_box = crypto.BoxKey.from_secret(secret(f"{node}/box-old"))
            retired = NOW - 2 * DAY_MS
            self.entries += [
                (
                    "ed25519-sig",
                    old_sig.seed,
                    old_sig.public_key,
                    NOW - 40 * DAY_MS,
                    "retired",
                    retired,
                ),
                (
                    "x25519-box",
                    old_box.secret,
                    old_box.public_key,
                    NOW - 40 * DAY_MS,
                    "retired",
                    retired,
                ),
            ]
        self.entries += [
            ("ed25519-sig", self.sig.seed, self.sig.public_key, self.nbf, "active", None),
            ("x25519-box", self.box.secret, self.box.public_key, self.nbf, "active", None),
        ]
        self.wire = build_keyset(
            node=node,
            serial=serial,
            iat=self.iat,
            exp=self.exp,
            root=self.root,
            keys=self.key_entries(),
        )

    def key_entries(self) -> list[KeyEntry]:
        return [
            KeyEntry(crypto.kid(t, pk), t, pk, nbf, status, until)  # type: ignore[arg-type]
            for t, _priv, pk, nbf, status, until in self.entries
        ]

    @property
    def fingerprint(self) -> str:
        return crypto.kid("ed25519-root", self.root.public_key)

    @property
    def identity(self) -> Identity:
        return Identity.create(self.node, self.sig)

    @property
    def box_kid(self) -> str:
        return crypto.kid("x25519-box", self.box.public_key)

    def describe(self) -> dict[str, Any]:
        """Everything another implementation needs to rebuild and act as this node."""
        keys = []
        for t, priv, pk, nbf, status, until in self.entries:
            entry: dict[str, Any] = {
                "type": t,
                "kid": crypto.kid(t, pk),
                ("seed_hex" if t == "ed25519-sig" else "secret_key_hex"): priv.hex(),
                "pk_hex": pk.hex(),
                "nbf": nbf,
                "status": status,
            }
            if until is not None:
                entry["until"] = until
            keys.append(entry)
        return {
            "node": self.node,
            "root": {
                "seed_hex": self.root.seed.hex(),
                "pk_hex": self.root.public_key.hex(),
                "fingerprint": self.fingerprint,
            },
            "serial": self.serial,
            "iat": self.iat,
            "exp": self.exp,
            "keys": keys,
            "keyset_wire": self.wire.decode("ascii"),
        }


def write_sig_s(signature: bytes, s: int) -> bytes:
    return signature[:32] + s.to_bytes(32, "little")


# --- the vectors ----------------------------------------------------------------------


def keyset_vector(sender: NodeMaterial) -> dict[str, Any]:
    outer = json.loads(sender.wire)
    kb = b64u_decode(outer["hp1k"])
    newest = [
        crypto.kid(t, pk)
        for t, _p, pk, _n, status, _u in sender.entries
        if t == "x25519-box" and status == "active"
    ]
    return {
        "description": (
            "A node's keyset (docs/protocol.md 2) with a retired signing key, a retired x25519 key "
            "and one active key of each type. Rebuild it from the seeds: the wire must be "
            "byte-identical (Ed25519 is deterministic). It is accepted at accept_at with the "
            "pinned node id and fingerprint; senders encrypt to newest_box_kid."
        ),
        "seed_construction": SEED_CONSTRUCTION,
        **sender.describe(),
        "kb": kb.decode("utf-8"),
        "signed_message_hex": crypto.pae("hp1/keyset/v1", kb).hex(),
        "sig": outer["sig"],
        "accept_at": NOW,
        "newest_box_kid": newest[-1],
    }


def audit_entries(sender: NodeMaterial, pid: str, body: dict[str, Any]) -> list[bytes]:
    """The sender's first five audit entries; the fifth records the disclosure of `pid`."""
    case = body["case_ref"]
    return [
        entry_bytes(
            1,
            NOW - 3 * HOUR_MS,
            "key",
            action="rotated",
            kid=sender.identity.kid,
            serial=sender.serial,
            org=SENDER,
        ),
        entry_bytes(
            2,
            NOW - 2 * HOUR_MS,
            "collection",
            case=case,
            operator="op-0417",
            org=SENDER,
            fields=["expected_release_date", "phase", "prison_id"],
            justification="release planning",
        ),
        entry_bytes(
            3,
            NOW - HOUR_MS,
            "consultation",
            case=case,
            operator="op-0417",
            org=SENDER,
            fields=["risk"],
            justification="pre-release risk review",
        ),
        entry_bytes(
            4,
            NOW - HOUR_MS // 2,
            "policy",
            operator="admin-0001",
            org=SENDER,
            counterpart=RECIPIENT_2,
            justification="exit organisation may receive release notices",
        ),
        entry_bytes(
            5,
            NOW,
            "disclosure",
            pid=pid,
            case=case,
            schema=SCHEMA_ID,
            operator="op-0417",
            org=SENDER,
            to=[RECIPIENT_1, RECIPIENT_2],
            fields=sorted(body),
            justification="release notice to supervising probation office and exit programme",
        ),
    ]


def main_vectors() -> dict[str, dict[str, Any]]:
    sender = NodeMaterial(SENDER, serial=3, history=True)
    r1 = NodeMaterial(RECIPIENT_1)
    r2 = NodeMaterial(RECIPIENT_2)
    body = json.loads(SCHEMA_FILE.read_text("utf-8"))["examples"][0]
    out: dict[str, dict[str, Any]] = {}
    out["keyset.json"] = keyset_vector(sender)

    # Packet. The pid must exist before the audit entry that names it (step 1), and
    # the log position after that entry goes inside I: draw first, then seal.
    stream = Stream("packet-two-recipients")
    content_key, e, n, pid_bytes = stream(32), stream(32), stream(24), stream(16)
    pid = b64u_encode(pid_bytes)
    entries = audit_entries(sender, pid, body)
    heads = chain_heads(entries)
    log = LogPosition(5, heads[4])
    recipients = [Recipient(r.node, r.box_kid, r.box.public_key) for r in (r1, r2)]
    sealed = _seal_at(
        NOW,
        Replay([content_key, e, n, pid_bytes]),
        sender.identity,
        recipients,
        SCHEMA_ID,
        body,
        log,
        TTL_MS,
    )
    wire = json.loads(sealed.wire)
    inner = cj_dumps({"schema": SCHEMA_ID, "body": body, "log": log.to_json()})
    ctx = (SENDER, sender.identity.kid, pid)
    ck = _derive(content_key, CONTENT_KEY_LABEL, *ctx)
    kc = _derive(content_key, COMMITMENT_LABEL, *ctx)
    header = json.loads(sealed.hb)
    per_recipient = []
    for i, (r, entry) in enumerate(zip((r1, r2), header["to"], strict=True)):
        per_recipient.append(
            {
                "index": i,
                "node": r.node,
                "kid": r.box_kid,
                "wrap_nonce_hex": crypto.wrap_nonce(i).hex(),
                "shared_key_hex": sodium.crypto_box_beforenm(r.box.public_key, e).hex(),
                "wk": entry["wk"],
                "CK_hex": ck.hex(),
                "kc_hex": kc.hex(),
                "opened_I": inner.decode("utf-8"),
            }
        )
    out["packet-two-recipients.json"] = {
        "description": (
            "A packet from a prison to a probation office and an exit organisation "
            "(docs/protocol.md 3). Rebuild the three keysets from the seeds, seal body under "
            "schema with log at now with ttl_ms, taking K, e, n and the 16 pid bytes from "
            "drawn (in that order): the wire must be byte-identical. Each recipient opens it "
            "at now to exactly I. log is the sender's position after audit entry 5 of "
            "audit-chain.json, which names this pid."
        ),
        "now": NOW,
        "ttl_ms": TTL_MS,
        "sender": sender.describe(),
        "recipients": [r1.describe(), r2.describe()],
        "schema": SCHEMA_ID,
        "body": body,
        "log": log.to_json(),
        "rand": stream.describe(),
        "drawn": {
            "K_hex": content_key.hex(),
            "e_hex": e.hex(),
            "n_hex": n.hex(),
            "pid_bytes_hex": pid_bytes.hex(),
        },
        "expected": {
            "E_hex": crypto.BoxKey.from_secret(e).public_key.hex(),
            "pid": pid,
            "CK_hex": ck.hex(),
            "kc_hex": kc.hex(),
            "I": inner.decode("utf-8"),
            "I_length": len(inner),
            "padded_length": len(pad(inner)),
            "clen": header["clen"],
            "ch": header["ch"],
            "HB": sealed.hb.decode("utf-8"),
            "signed_message_hex": crypto.pae(PACKET_LABEL, sealed.hb).hex(),
            "sig": wire["sig"],
            "pd": b64u_encode(sealed.pd),
            "wire": sealed.wire.decode("ascii"),
            "recipients": per_recipient,
        },
    }

    # Receipts: the probation office accepts, the exit organisation's policy refuses.
    for name, signer, status, reason, op in (
        ("receipt-accepted.json", r1, "accepted", None, "collection"),
        ("receipt-rejected.json", r2, "rejected", RejectCode.NOT_PERMITTED, "rejection"),
    ):
        # The shape of the entry handover.node.service writes on receipt of a packet.
        fields: dict[str, Any] = {
            "pid": pid,
            "pd": b64u_encode(sealed.pd),
            "counterpart": SENDER,
            "schema": SCHEMA_ID,
            "org": signer.node,
            "sender_log": log.to_json(),
        }
        if reason is None:
            fields["case"] = body["case_ref"]
            fields["fields"] = sorted(body)
        else:
            fields["reason"] = reason.value
        entry = entry_bytes(1, NOW + 1000, op, **fields)
        position = LogPosition(1, chain_heads([entry])[0])
        rstream = Stream(name.removesuffix(".json"))
        receipt = make_receipt(
            signer.identity,
            pid=pid,
            pd=sealed.pd,
            to=SENDER,
            status=status,  # type: ignore[arg-type]
            reason=reason,
            log=position,
            now=NOW + 1000,
            rand=rstream,
        )
        outer = json.loads(receipt)
        rb = b64u_decode(outer["hp1r"])
        out[name] = {
            "description": (
                f"The {status} receipt {signer.node} returns for the packet of "
                "packet-two-recipients.json (docs/protocol.md 4)"
                + (f", reason {reason.value}" if reason else "")
                + ". Rebuild it with rid from drawn: the wire must be byte-identical. The "
                "sender verifies it at now against the signer's keyset, its outbox record "
                "(pid, pd) and the packet's recipients. log is the signer's position after "
                "log_entry, its first audit entry."
            ),
            "now": NOW + 1000,
            "signer": signer.describe(),
            "sender": SENDER,
            "recipients": [RECIPIENT_1, RECIPIENT_2],
            "pid": pid,
            "pd": b64u_encode(sealed.pd),
            "status": status,
            "reason": reason.value if reason else None,
            "log_entry": entry.decode("utf-8"),
            "log": position.to_json(),
            "rand": rstream.describe(),
            "drawn": {"rid_bytes_hex": rstream.drawn[0].hex()},
            "expected": {
                "RB": rb.decode("utf-8"),
                "signed_message_hex": crypto.pae("hp1/receipt/v1", rb).hex(),
                "sig": outer["sig"],
                "wire": receipt.decode("ascii"),
            },
        }

    # Audit chain and checkpoint.
    digests = [crypto.h32(x) for x in entries]
    out["audit-chain.json"] = {
        "description": (
            "The sender's first five audit entries (docs/protocol.md 5) as CJ text, each entry's "
            "digest H32(entry) and the heads head_1..head_5, with head_0 the zero head and "
            "head_N = H32(PAE('hp1/audit/v1', head_{N-1}, H32(entry_N))). Entry 5 records "
            "the disclosure of the packet in packet-two-recipients.json; the digests list is "
            "what GET /federation/v1/log/digests?after=0&limit=5 serves."
        ),
        "node": SENDER,
        "head_0": b64u_encode(bytes(32)),
        "entries": [
            {"entry": x.decode("utf-8"), "digest": b64u_encode(d), "head": b64u_encode(h)}
            for x, d, h in zip(entries, digests, heads, strict=True)
        ],
        "digests_response": {"after": 0, "digests": [b64u_encode(d) for d in digests]},
    }
    checkpoint = make_checkpoint(
        node=SENDER,
        kid=sender.identity.kid,
        key=sender.sig,
        position=LogPosition(5, heads[4]),
        now=NOW + 60_000,
    )
    cb = b64u_decode(json.loads(checkpoint)["hp1c"])
    out["checkpoint.json"] = {
        "description": (
            "The sender's signed log checkpoint (docs/protocol.md 5) at seq 5, the head_5 of "
            "audit-chain.json. It verifies at now against the sender's keyset; the "
            "receivers of packet-two-recipients.json check that its head equals the "
            "commitment log inside the packet."
        ),
        "now": NOW + 60_000,
        "signer": sender.describe(),
        "seq": 5,
        "head": b64u_encode(heads[4]),
        "expected": {
            "CB": cb.decode("utf-8"),
            "signed_message_hex": crypto.pae("hp1/checkpoint/v1", cb).hex(),
            "sig": json.loads(checkpoint)["sig"],
            "wire": checkpoint.decode("ascii"),
        },
    }

    out["signature-lax-accepts.json"] = lax_signature_vector(sender, sealed)
    out["keyset-small-order-key.json"] = small_order_vector()
    out["b64u.json"] = b64u_vector()
    out["cj.json"] = cj_vector()
    out["packet-attachments.json"] = attachments_vector(
        sender, r1, now=NOW, ttl_ms=TTL_MS, schema_id=SCHEMA_ID, body=body,
        stream_cls=Stream, replay_cls=Replay,
    )  # fmt: skip
    for name, vector in out.items():
        vector["generator"] = GENERATOR
        assert vector["description"], name
    return out


def lax_signature_vector(sender: NodeMaterial, sealed: Any) -> dict[str, Any]:
    message = crypto.pae(PACKET_LABEL, sealed.hb)
    s = int.from_bytes(sealed.sig[32:], "little")
    malleated = write_sig_s(sealed.sig, s + ED25519_L)
    wire = json.loads(sealed.wire)
    wire["sig"] = b64u_encode(malleated)
    malleated_wire = cj_dumps(wire)
    identity = bytes([1]) + bytes(31)  # the neutral element: small order (order 1)
    lax_message = b"hp1 vectors: any message verifies under a small-order key"
    assert crypto.ed25519_verify(sender.sig.public_key, message, sealed.sig)
    assert not crypto.ed25519_verify(sender.sig.public_key, message, malleated)
    assert not crypto.ed25519_verify(identity, lax_message, identity + bytes(32))
    return {
        "description": (
            "Ed25519 signatures that libsodium's crypto_sign_verify_detached (the rule of "
            "docs/protocol.md 1) REJECTS but a lax verifier accepts: one that checks "
            "encode([S]B - [k]A) == R without first refusing S >= L and small-order A or R "
            "(tweetnacl's crypto_sign_open behaves like this). Every implementation must "
            "reject every case. Case s_plus_l is the packet signature of "
            "packet-two-recipients.json with L added to S; its malleated packet must be "
            "refused with reason bad_signature (a receiver that already stored the original "
            "reports replay_conflict first, as pd differs)."
        ),
        "ed25519_L": str(ED25519_L),
        "cases": [
            {
                "name": "s_plus_l",
                "rule": "S >= L: the scalar S must be reduced (S < L)",
                "public_key_hex": sender.sig.public_key.hex(),
                "message_hex": message.hex(),
                "valid_signature_hex": sealed.sig.hex(),
                "signature_hex": malleated.hex(),
                "libsodium": "reject",
                "lax_verifier": "accept ([S+L]B = [S]B)",
                "packet_wire": malleated_wire.decode("ascii"),
                "packet_pd": b64u_encode(packet_digest(sealed.hb, malleated)),
                "expected_reason": "bad_signature",
            },
            {
                "name": "small_order_a_and_r",
                "rule": "A and R of small order: the identity point 0x01 0x00*31 as both, S = 0",
                "public_key_hex": identity.hex(),
                "message_hex": lax_message.hex(),
                "signature_hex": (identity + bytes(32)).hex(),
                "libsodium": "reject",
                "lax_verifier": "accept ([0]B - [k]A = identity = R for every message)",
            },
        ],
    }


ED25519_ORDER_8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
X25519_ORDER_8 = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


def small_order_vector() -> dict[str, Any]:
    node = "mallory.example"
    root = crypto.SigningKey.from_seed(secret(f"{node}/root"))
    sig = crypto.SigningKey.from_seed(secret(f"{node}/sig"))
    box = crypto.BoxKey.from_secret(secret(f"{node}/box"))
    p = 2**255 - 19
    mixed = sodium.crypto_core_ed25519_add(
        crypto.SigningKey.from_seed(secret(f"{node}/mixed")).public_key, ED25519_ORDER_8
    )
    bad_keys: list[tuple[str, str, bytes, str]] = [
        ("x25519_zero", "x25519-box", bytes(32), "the all-zero u-coordinate (order 2)"),
        ("x25519_one", "x25519-box", (1).to_bytes(32, "little"), "u = 1 (order 4)"),
        ("x25519_order_8", "x25519-box", X25519_ORDER_8, "a u-coordinate of order 8"),
        (
            "x25519_p",
            "x25519-box",
            p.to_bytes(32, "little"),
            "u = p, a non-canonical encoding of 0",
        ),
        ("ed25519_identity", "ed25519-sig", bytes([1]) + bytes(31), "the neutral element"),
        ("ed25519_order_8", "ed25519-sig", ED25519_ORDER_8, "a point of order 8"),
        (
            "ed25519_non_canonical",
            "ed25519-sig",
            (p + 3).to_bytes(32, "little"),
            "y = p + 3 >= p: a non-canonical encoding (of a point on the curve)",
        ),
        (
            "ed25519_mixed_order",
            "ed25519-sig",
            mixed,
            "a valid key plus a point of order 8: not small order itself, but outside the "
            "prime-order subgroup; refused by crypto_core_ed25519_is_valid_point (our "
            "stricter reading, docs/protocol.md)",
        ),
    ]
    cases = []
    for name, key_type, pk, why in bad_keys:
        good = [
            KeyEntry(
                crypto.kid("ed25519-sig", sig.public_key),
                "ed25519-sig",
                sig.public_key,
                NOW - DAY_MS,
                "active",
            ),
            KeyEntry(
                crypto.kid("x25519-box", box.public_key),
                "x25519-box",
                box.public_key,
                NOW - DAY_MS,
                "active",
            ),
        ]
        bad = KeyEntry(crypto.kid(key_type, pk), key_type, pk, NOW - DAY_MS, "active")  # type: ignore[arg-type]
        wire = build_keyset(
            node=node,
            serial=1,
            iat=NOW - DAY_MS,
            exp=NOW + 6 * DAY_MS,
            root=root,
            keys=[*good, bad],
        )
        cases.append(
            {
                "name": name,
                "key_type": key_type,
                "bad_kid": bad.kid,
                "bad_pk_hex": pk.hex(),
                "rule": why,
                "keyset_wire": wire.decode("ascii"),
            }
        )
    return {
        "description": (
            "Keysets that are correctly root-signed (the signature verifies, every kid "
            "matches its pk and type, times are fine at accept_at) but hold one bad key next "
            "to two good ones: small-order X25519 keys, and small-order, non-canonical or "
            "mixed-order Ed25519 signing keys. Each keyset must be rejected whole, not "
            "accepted minus the bad key (docs/protocol.md 1, 'Ed25519 verification rule')."
        ),
        "node": node,
        "fingerprint": crypto.kid("ed25519-root", root.public_key),
        "root_seed_hex": root.seed.hex(),
        "accept_at": NOW,
        "cases": cases,
    }


def b64u_vector() -> dict[str, Any]:
    cases: list[tuple[str, bool, str]] = [
        ("", True, "empty"),
        ("AA", True, "one zero byte"),
        ("AAA", True, "two zero bytes"),
        ("AAAA", True, "three zero bytes"),
        ("-_8", True, "url-safe alphabet: 0xfb 0xff"),
        ("_w", True, "0xff"),
        ("aHAx", True, "'hp1'"),
        ("AA==", False, "padding"),
        ("AAA=", False, "padding"),
        ("AB", False, "non-zero trailing bits (would decode to 0x00 too)"),
        ("AAB", False, "non-zero trailing bits"),
        ("_x", False, "non-zero trailing bits"),
        ("A", False, "impossible length (1 mod 4)"),
        ("AAAAA", False, "impossible length (1 mod 4)"),
        ("+/8", False, "standard alphabet '+' and '/'"),
        ("ab+c", False, "standard alphabet '+'"),
        ("ab/c", False, "standard alphabet '/'"),
        (" AA", False, "whitespace"),
        ("AA\n", False, "trailing newline"),
        ("A A", False, "inner space"),
        ("AA.", False, "character outside the alphabet"),
        ("\u00fc", False, "non-ASCII"),
    ]
    out = []
    for text, valid, why in cases:
        case: dict[str, Any] = {"input": text, "valid": valid, "why": why}
        if valid:
            case["bytes_hex"] = b64u_decode(text).hex()
        out.append(case)
    return {
        "description": (
            "Strict unpadded base64url (docs/protocol.md 1): a decoder decodes, re-encodes and "
            "compares. valid cases give bytes_hex; every other input must be refused."
        ),
        "cases": out,
    }


def cj_vector() -> dict[str, Any]:
    deep_ok = b"[" * 32 + b"]" * 32
    deep_bad = b"[" * 33 + b"]" * 33
    cases: list[tuple[bytes, bool, str]] = [
        (b"{}", True, "empty object"),
        (b"[]", True, "empty array"),
        (b'{"a":1,"b":[true,false],"c":"x"}', True, "sorted keys, no whitespace"),
        (b'{"B":1,"_":2,"a":3}', True, "keys sorted by code point (upper case first)"),
        (b"9007199254740991", True, "2^53-1"),
        (b"-9007199254740991", True, "-(2^53-1)"),
        (b"0", True, "zero"),
        ('{"a":"\u00e9\U0001f600"}'.encode(), True, "non-ASCII string values are raw UTF-8"),
        (b'"\\u001f\\n\\t\\"\\\\"', True, "control characters escaped the one canonical way"),
        ('"\u007f\u2028"'.encode(), True, "DEL and U+2028 stay raw"),
        (deep_ok, True, "depth 32"),
        (deep_bad, False, "depth 33"),
        (b'{"b":1,"a":2}', False, "keys not sorted"),
        (b'{"a":1,"a":2}', False, "duplicate key"),
        (b'{"a": 1}', False, "whitespace"),
        (b"{}\n", False, "trailing newline"),
        (b" {}", False, "leading whitespace"),
        (b'{"a":1.0}', False, "float"),
        (b"1e3", False, "exponent (a float)"),
        (b"-0", False, "negative zero"),
        (b'{"a":null}', False, "null"),
        (b"NaN", False, "NaN"),
        (b"9007199254740992", False, "2^53, out of range"),
        (b"-9007199254740992", False, "-2^53, out of range"),
        (b'"\\ud800"', False, "escaped lone surrogate"),
        (b'"\\ud83d\\ude00"', False, "escaped surrogate pair (must be raw UTF-8)"),
        (b'"\\u00e9"', False, "escaped non-ASCII (must be raw UTF-8)"),
        (b'"\\u001F"', False, "upper-case hex escape"),
        (b'"\\/"', False, "escaped solidus"),
        (b'"\x1f"', False, "raw control character"),
        ('{"\u00e9":1}'.encode(), False, "non-ASCII key"),
        (b'{"":1}', False, "empty key"),
        (b'"\xed\xa0\x80"', False, "UTF-8-encoded surrogate (invalid UTF-8)"),
        (b'"\xff"', False, "invalid UTF-8"),
        (b"\xef\xbb\xbf{}", False, "byte order mark"),
        (b"01", False, "leading zero"),
        (b'{"a":1}{}', False, "trailing data"),
    ]
    out = []
    for raw, valid, why in cases:
        case: dict[str, Any] = {"input_hex": raw.hex(), "valid": valid, "why": why}
        with contextlib.suppress(UnicodeDecodeError):
            case["input"] = raw.decode("utf-8")
        out.append(case)
    return {
        "description": (
            "Canonical JSON (docs/protocol.md 1). input_hex is the exact byte string (input shows "
            "it as text when it is valid UTF-8). A CJ parser accepts exactly the valid "
            "cases; for them CJ(parse(input)) equals input byte for byte."
        ),
        "cases": out,
    }


def render(vector: dict[str, Any]) -> bytes:
    return (json.dumps(vector, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--out", type=Path, default=VECTOR_DIR, help="output directory")
    args = parser.parse_args(argv)
    vectors = {name: render(v) for name, v in main_vectors().items()}
    if args.check:
        stale = [
            name
            for name, data in vectors.items()
            if not (args.out / name).exists() or (args.out / name).read_bytes() != data
        ]
        for name in stale:
            print(f"stale: {args.out / name} (run `make vectors`)", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in vectors.items():
        (args.out / name).write_bytes(data)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
