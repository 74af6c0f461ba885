"""The delivery worker over a MemoryTransport: a packet reaches its recipient and
the signed receipt is stored with a `delivery` entry; a peer that is down gets
the packet once it is back; every kind of answer is classified as final or
worth retrying."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from conftest import make_node
from handover.node.runtime import Node
from handover.node.transport import Answer, Endpoint, Outcome
from handover.protocol.auditchain import LogPosition
from handover.protocol.errors import RejectCode
from handover.protocol.opening import parse_packet
from handover.protocol.receipt import make_receipt
from inproc import (
    CASEWORKER,
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    Cluster,
    audit_entries,
    body,
    deliver,
    release_notice,
    send,
    stored_receipt,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_packet_is_delivered_and_its_receipt_stored(prison: Node, probation: Node) -> None:
    notice = release_notice()
    (packet,) = await send(prison, [PROBATION], RELEASE_NOTICE, notice)
    (status,) = await deliver(prison, packet["pid"])
    (delivery,) = status["deliveries"]
    assert (delivery["node"], delivery["status"], delivery["attempts"]) == (
        PROBATION,
        "delivered",
        1,
    )
    receipt = stored_receipt(delivery)
    assert (receipt.pid, receipt.signer, receipt.status) == (packet["pid"], PROBATION, "accepted")

    entries = await audit_entries(prison, pid=packet["pid"])
    assert [e["op"] for e in entries] == ["disclosure", "delivery"]
    assert entries[1]["status"] == "accepted"
    assert entries[1]["rid"] == receipt.rid
    assert entries[1]["peer_log"] == receipt.log.to_json()

    opened = await probation.inbox.read(CASEWORKER, packet["pid"], "supervision planning")
    assert opened["body"] == notice and opened["sender"] == PRISON
    assert stored_receipt({"receipt": opened["receipt"]}).rid == receipt.rid


async def test_a_peer_that_is_down_gets_the_packet_when_it_is_back(
    cluster: Cluster, prison: Node, probation: Node
) -> None:
    (packet,) = await send(prison, [PROBATION], RELEASE_NOTICE, release_notice())
    cluster.transport.down(probation.config.url)
    try:
        (status,) = await deliver(
            prison, packet["pid"], until=lambda d: d["last_error"] is not None
        )
    finally:
        cluster.transport.down(probation.config.url, False)
    (delivery,) = status["deliveries"]
    assert delivery["status"] == "pending"
    assert "cannot be reached" in delivery["last_error"]
    assert await probation.inbox.list(limit=500, before=None, case_ref=status["case_ref"]) == []

    cluster.clock.advance(60_000)  # past the retry backoff
    (status,) = await deliver(prison, packet["pid"])
    (delivery,) = status["deliveries"]
    assert delivery["status"] == "delivered" and delivery["attempts"] >= 2
    assert delivery["last_error"] is None
    (item,) = await probation.inbox.list(limit=500, before=None, case_ref=status["case_ref"])
    assert item["pid"] == packet["pid"]


class Scripted:
    """probation.test with its `receive_many` answered by a script, so the sender
    sees answers a real receiver gives rarely (or never)."""

    def __init__(self, real: Node, answer: Callable[[bytes], Answer]) -> None:
        self.real = real
        self.answer = answer

    def keyset_wire(self) -> bytes:
        return self.real.keyset_wire()

    async def checkpoint(self) -> bytes:
        return await self.real.checkpoint()

    async def entry_digests(self, after: int, limit: int) -> list[bytes]:
        return await self.real.entry_digests(after, limit)

    async def receive_many(self, wires: list[bytes]) -> list[Answer]:
        return [self.answer(w) for w in wires]


def signed_receipt(
    node: Node, wire: bytes, status: str, reason: RejectCode | None, *, forged: bool = False
) -> bytes:
    """A receipt `node` signs for `wire` without storing the packet (with a key of
    the same name that is not in its keyset, if `forged`)."""
    packet = parse_packet(wire)
    identity = node.directory.keys.identity()
    if forged:
        identity = make_node(node.config.node, node.clock()).identity
    return make_receipt(
        identity,
        pid=packet.pid,
        pd=packet.pd,
        to=packet.sender,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        log=LogPosition(1, b"\x01" * 32),
        now=node.clock(),
    )


@pytest.fixture
def scripted(cluster: Cluster, probation: Node) -> Iterator[Callable[[Endpoint], None]]:
    """Put an endpoint in place of probation.test on the transport (until the test ends)."""
    url = probation.config.url

    def use(endpoint: Endpoint) -> None:
        cluster.transport.attach(url, endpoint)

    yield use
    cluster.transport.attach(url, probation)


Script = Callable[[Node, bytes], Answer]


def signed_rejection(node: Node, wire: bytes) -> Answer:
    return Answer(
        Outcome.REJECTED, signed_receipt(node, wire, "rejected", RejectCode.NOT_PERMITTED)
    )


def too_large(node: Node, wire: bytes) -> Answer:
    return Answer(Outcome.TOO_LARGE)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (signed_rejection, ("rejected", "not_permitted", True)),
        (too_large, ("rejected", "too_large", False)),
    ],
)
async def test_final_answers_end_the_delivery(
    prison: Node,
    probation: Node,
    scripted: Callable[[Endpoint], None],
    script: Script,
    expected: tuple[str, str, bool],
) -> None:
    scripted(Scripted(probation, lambda wire: script(probation, wire)))
    (packet,) = await send(prison, [PROBATION], RELEASE_NOTICE, release_notice())
    (status,) = await deliver(prison, packet["pid"])
    (delivery,) = status["deliveries"]
    assert (delivery["status"], delivery["reason"], delivery["receipt"] is not None) == expected
    entries = await audit_entries(prison, pid=packet["pid"])
    assert entries[-1]["op"] == "delivery" and entries[-1]["status"] == "rejected"
    assert entries[-1]["reason"] == expected[1]


def unavailable(node: Node, wire: bytes) -> Answer:
    return Answer(Outcome.UNAVAILABLE, detail="busy")


def invalid(node: Node, wire: bytes) -> Answer:
    return Answer(Outcome.INVALID)


def forged_receipt(node: Node, wire: bytes) -> Answer:
    return Answer(Outcome.ACCEPTED, signed_receipt(node, wire, "accepted", None, forged=True))


def mismatched_receipt(node: Node, wire: bytes) -> Answer:
    receipt = signed_receipt(node, wire, "rejected", RejectCode.SCHEMA_INVALID)
    return Answer(Outcome.ACCEPTED, receipt)


def no_receipt(node: Node, wire: bytes) -> Answer:
    return Answer(Outcome.ACCEPTED)


@pytest.mark.parametrize(
    ("script", "error"),
    [
        (unavailable, "peer answered unavailable (busy)"),
        (invalid, "peer answered invalid_packet"),
        (forged_receipt, "the receipt did not verify"),
        (mismatched_receipt, "the receipt's status does not match the answer"),
        (no_receipt, "peer answered accepted"),
    ],
)
async def test_other_answers_are_retried_with_the_reason(
    cluster: Cluster,
    prison: Node,
    probation: Node,
    scripted: Callable[[Endpoint], None],
    script: Script,
    error: str,
) -> None:
    scripted(Scripted(probation, lambda wire: script(probation, wire)))
    (packet,) = await send(prison, [PROBATION], RELEASE_NOTICE, release_notice())
    (status,) = await deliver(prison, packet["pid"], until=lambda d: d["last_error"] is not None)
    (delivery,) = status["deliveries"]
    assert (delivery["status"], delivery["receipt"], delivery["last_error"]) == (
        "pending",
        None,
        error,
    )
    assert [e["op"] for e in await audit_entries(prison, pid=packet["pid"])] == ["disclosure"]

    # The real receiver answers the retry, and the delivery ends there.
    scripted(probation)
    cluster.clock.advance(60_000)
    (status,) = await deliver(prison, packet["pid"])
    assert status["deliveries"][0]["status"] == "delivered"


async def test_a_packet_to_two_recipients_is_delivered_to_each(
    prison: Node, probation: Node, exit_org: Node
) -> None:
    agreement_schema = "handover/responsibility-agreement/1"
    agreement = body(agreement_schema)
    (packet,) = await send(prison, [PROBATION, exit_org.config.node], agreement_schema, agreement)
    (status,) = await deliver(prison, packet["pid"])
    signers = {d["node"]: stored_receipt(d).signer for d in status["deliveries"]}
    assert signers == {PROBATION: PROBATION, exit_org.config.node: exit_org.config.node}
    for node in (probation, exit_org):
        (item,) = await node.inbox.list(limit=5, before=None, case_ref=agreement["case_ref"])
        assert item["pid"] == packet["pid"]
    delivered = [e for e in await audit_entries(prison, pid=packet["pid"]) if e["op"] == "delivery"]
    assert sorted(e["counterpart"] for e in delivered) == sorted(signers)
