"""The ceiling: the isolated CPU cost of one packet's cryptography and validation.

In one process, with real keys made by `keystore.init_keys` for two nodes,
each iteration does what the two nodes must compute for one packet, and
nothing else (no database, no HTTP, no logging, no audit chain):

    sender:    schema validation of the submitted body
               seal to one recipient (content key, wrap, secretbox, sign)
    receiver:  parse_packet + open_parsed (signature, unwrap, decrypt,
               canonical-JSON parse, schema validation)
               make_receipt (sign)
    sender:    verify_receipt (parse, signature)

`ceiling_pps = cores / cost_s`: the rate if every core did nothing but this.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handover.node import keystore
from handover.protocol.auditchain import LogPosition
from handover.protocol.opening import open_parsed, parse_packet
from handover.protocol.packet import Recipient, seal
from handover.protocol.receipt import make_receipt, verify_receipt
from handover.protocol.timeutil import now_ms
from handover.workflow.schemas import default_registry

SCHEMA_ID = "handover/release-notice/1"
SENDER = "sender.bench.example"
RECEIVER = "receiver.bench.example"


class _NoRevalidation:
    """The node validates once on submit and seals without validating again."""

    def validate(self, schema_id: str, body: object) -> None:
        return None


@dataclass(frozen=True)
class Ceiling:
    iterations: int
    cost_s: float  # CPU seconds per packet, both sides together
    wire_bytes: int  # size of one sealed packet on the wire

    def pps(self, cores: int) -> float:
        return cores / self.cost_s


def measure(body: dict[str, Any], iterations: int, max_seconds: float = 20.0) -> Ceiling:
    """Mean process CPU time per packet over `iterations` (fewer if `max_seconds` runs out)."""
    registry = default_registry()
    with tempfile.TemporaryDirectory(prefix="handover-ceiling-") as tmp:
        now = now_ms()
        sender = keystore.init_keys(Path(tmp) / "s", SENDER, now)
        receiver = keystore.init_keys(Path(tmp) / "r", RECEIVER, now)
    identity = sender.identity()
    receiver_identity = receiver.identity()
    receiver_keys = receiver.receiver_keys()
    recipient = Recipient.from_keyset(receiver.keyset, now)
    sender_keyset = sender.keyset
    keysets = {RECEIVER: receiver.keyset}
    position = LogPosition(1, bytes(range(32)))  # any non-genesis position
    no_revalidation = _NoRevalidation()

    def one() -> int:
        t = now_ms()
        registry.validate(SCHEMA_ID, body)
        sealed = seal(
            identity,
            [recipient],
            SCHEMA_ID,
            body,
            log=position,
            now=t,
            validator=no_revalidation,
        )
        opened = open_parsed(
            parse_packet(sealed.wire),
            receiver=receiver_keys,
            sender_keyset=sender_keyset,
            now=t,
            validator=registry,
        )
        if opened.rejection is not None:
            raise RuntimeError(f"ceiling: the body was rejected: {opened.rejection}")
        receipt = make_receipt(
            receiver_identity,
            pid=opened.pid,
            pd=opened.pd,
            to=SENDER,
            status="accepted",
            reason=None,
            log=position,
            now=t,
        )
        verify_receipt(
            receipt,
            sender=SENDER,
            pid=sealed.pid,
            pd=sealed.pd,
            recipient=sealed.to[0],
            keyset_for=keysets.get,
            now=t,
        )
        return len(sealed.wire)

    wire_bytes = one()
    for _ in range(max(1, iterations // 20)):  # warm up
        one()
    started_wall = time.perf_counter()
    started = time.process_time()
    done = 0
    while done < iterations and time.perf_counter() - started_wall < max_seconds:
        one()
        done += 1
    cost = (time.process_time() - started) / done
    return Ceiling(iterations=done, cost_s=cost, wire_bytes=wire_bytes)
