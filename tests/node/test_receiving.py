"""Receiving (`Receiver.receive_many`): an accepted packet gets a receipt the sender
can verify, a retry gets the same receipt, the same pid with other bytes is
refused, a policy refusal gets a signed `rejected` receipt, and every refusal
leaves a precise local audit entry."""

from __future__ import annotations

import pytest

from conftest import make_node
from handover.node.runtime import Node
from handover.node.transport import Outcome
from handover.protocol.canonical import b64u_encode
from handover.protocol.errors import RejectCode
from handover.protocol.keyset import accept_keyset
from handover.protocol.packet import Recipient, seal
from handover.store import security as security_store
from handover.workflow.schemas import default_registry
from inproc import (
    CASEWORKER,
    PRISON,
    RELEASE_NOTICE,
    audit_entries,
    audit_seq,
    body,
    check_receipt,
    new_case,
    release_notice,
    seal_from,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_accepted_packet_gets_a_receipt_the_sender_verifies(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    packet = seal_from(prison, probation, RELEASE_NOTICE, notice)
    (answer,) = await probation.receiver.receive_many([packet.wire])
    assert answer.outcome is Outcome.ACCEPTED
    assert answer.receipt is not None
    receipt = check_receipt(prison, packet, answer.receipt)
    assert (receipt.status, receipt.reason) == ("accepted", None)
    assert receipt.signer == probation.config.node and receipt.to == PRISON

    (item,) = await probation.inbox.list(limit=10, before=None, case_ref=notice["case_ref"])
    assert (item["pid"], item["sender"], item["schema"]) == (packet.pid, PRISON, RELEASE_NOTICE)
    opened = await probation.inbox.read(CASEWORKER, packet.pid, "supervision planning")
    assert opened["body"] == notice


async def test_the_receipts_log_position_is_the_collection_entry(
    prison: Node, probation: Node
) -> None:
    packet = seal_from(prison, probation, RELEASE_NOTICE, release_notice())
    (answer,) = await probation.receiver.receive_many([packet.wire])
    assert answer.receipt is not None
    receipt = check_receipt(prison, packet, answer.receipt)
    (entry,) = await audit_entries(probation, pid=packet.pid)
    assert entry["op"] == "collection"
    assert entry["seq"] == receipt.log.seq
    assert entry["counterpart"] == PRISON
    assert entry["pd"] == b64u_encode(packet.pd)


async def test_an_identical_retry_returns_the_same_receipt_and_stores_nothing(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    packet = seal_from(prison, probation, RELEASE_NOTICE, notice)
    (first,) = await probation.receiver.receive_many([packet.wire])
    seq = await audit_seq(probation)
    again = await probation.receiver.receive_many([packet.wire, packet.wire])
    assert [a.outcome for a in again] == [Outcome.ACCEPTED, Outcome.ACCEPTED]
    assert [a.receipt for a in again] == [first.receipt, first.receipt]
    assert await audit_seq(probation) == seq
    items = await probation.inbox.list(limit=10, before=None, case_ref=notice["case_ref"])
    assert [i["pid"] for i in items] == [packet.pid]


async def test_the_same_pid_twice_in_one_batch_is_stored_once(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    packet = seal_from(prison, probation, RELEASE_NOTICE, notice)
    answers = await probation.receiver.receive_many([packet.wire, packet.wire])
    assert [a.outcome for a in answers] == [Outcome.ACCEPTED, Outcome.ACCEPTED]
    assert answers[0].receipt == answers[1].receipt
    assert len(await audit_entries(probation, pid=packet.pid)) == 1


async def test_the_same_pid_with_other_bytes_is_an_invalid_packet(
    prison: Node, probation: Node
) -> None:
    case = new_case()
    first = seal_from(prison, probation, RELEASE_NOTICE, release_notice(case))
    other = seal_from(
        prison, probation, RELEASE_NOTICE, release_notice(case, prison_id="XYZ"), pid=first.pid
    )
    (accepted,) = await probation.receiver.receive_many([first.wire])
    seq = await audit_seq(probation)
    counted = await security_count(probation, "replay_conflict")
    (answer,) = await probation.receiver.receive_many([other.wire], "192.0.2.7")
    assert answer.outcome is Outcome.INVALID and answer.receipt is None
    # Caught at step 3, before the signature: anyone could send it, so it is
    # counted in the security log, not written into the audit log.
    assert await audit_entries(probation, after=seq) == []
    assert await security_count(probation, "replay_conflict") == counted + 1
    # The first packet stays as it was, and so does its answer.
    opened = await probation.inbox.read(CASEWORKER, first.pid, "supervision planning")
    assert opened["body"]["prison_id"] != "XYZ"
    (again,) = await probation.receiver.receive_many([first.wire])
    assert again.receipt == accepted.receipt


async def security_count(node: Node, reason: str) -> int:
    """Refusals of `reason` in the node's security log (flushed first)."""
    await node.security.flush()
    async with node.db.connection() as conn:
        rows = await security_store.recent(conn, since=0)
    return sum(r.count for r in rows if r.reason == reason)


async def test_a_policy_refusal_gets_a_signed_rejected_receipt(
    prison: Node, probation: Node
) -> None:
    # A prison may not send a condition-update (the default policy): probation
    # refuses it at step 9 with a signed receipt, and keeps no content.
    update = body("handover/condition-update/1")
    packet = seal_from(prison, probation, "handover/condition-update/1", update)
    (answer,) = await probation.receiver.receive_many([packet.wire])
    assert answer.outcome is Outcome.REJECTED
    assert answer.receipt is not None
    receipt = check_receipt(prison, packet, answer.receipt)
    assert (receipt.status, receipt.reason) == ("rejected", RejectCode.NOT_PERMITTED)
    (entry,) = await audit_entries(probation, pid=packet.pid)
    assert entry["op"] == "rejection" and entry["reason"] == "not_permitted"
    assert "fields" not in entry
    assert await probation.inbox.list(limit=10, before=None, case_ref=update["case_ref"]) == []
    (again,) = await probation.receiver.receive_many([packet.wire])
    assert (again.outcome, again.receipt) == (Outcome.REJECTED, answer.receipt)


async def test_a_packet_from_an_unpinned_sender_is_invalid_with_the_reason_kept_local(
    probation: Node,
) -> None:
    now = probation.clock()
    stranger = make_node("stranger.test", now)
    keyset = probation.directory.keys.keyset
    recipient = Recipient.from_keyset(
        accept_keyset(keyset.wire, node=keyset.node, fingerprint=keyset.fingerprint, now=now), now
    )
    packet = seal(
        stranger.identity,
        [recipient],
        RELEASE_NOTICE,
        release_notice(),
        now=now,
        validator=default_registry(),
    )
    seq = await audit_seq(probation)
    counted = await security_count(probation, "unknown_sender")
    (answer,) = await probation.receiver.receive_many([packet.wire], "192.0.2.8")
    assert (answer.outcome, answer.receipt) == (Outcome.INVALID, None)
    assert await audit_entries(probation, after=seq) == []
    assert await security_count(probation, "unknown_sender") == counted + 1
    assert probation.metrics.registry.get_sample_value(
        "handover_packets_invalid_total", {"stage": "unauthenticated"}
    )


async def test_a_batch_is_answered_packet_by_packet_in_order(prison: Node, probation: Node) -> None:
    good = seal_from(prison, probation, RELEASE_NOTICE, release_notice())
    refused = seal_from(
        prison, probation, "handover/condition-update/1", body("handover/condition-update/1")
    )
    seq = await audit_seq(probation)
    answers = await probation.receiver.receive_many([b"{not a packet", good.wire, refused.wire])
    assert [a.outcome for a in answers] == [Outcome.INVALID, Outcome.ACCEPTED, Outcome.REJECTED]
    assert answers[0].receipt is None
    assert check_receipt(prison, good, answers[1].receipt or b"").status == "accepted"
    assert check_receipt(prison, refused, answers[2].receipt or b"").status == "rejected"
    # The signed rejection is audited; the malformed bytes only counted.
    ops = sorted(e["op"] for e in await audit_entries(probation, after=seq))
    assert ops == ["collection", "rejection"]
