"""Rectification (Art 7(3), 16) between real nodes: the sender changes its own
copy and notifies every node holding the packet (`rectification.py`); each
recipient applies an accepted notice to its copy (`corrections.py`). A held
body that cannot be decrypted stops a rectification before anything changes."""

from __future__ import annotations

from typing import Any

import pytest

from handover.node.runtime import Node
from handover.workflow.errors import BodyUnavailable, ErrorCode, RequestRefused
from inproc import (
    CASEWORKER,
    EXIT,
    PROBATION,
    RELEASE_NOTICE,
    audit_entries,
    audit_seq,
    body,
    deliver,
    release_notice,
    send,
    send_delivered,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

WHY = "the prison corrected its record"
NOTICE = "handover/rectification-notice/1"


async def rectify(node: Node, pid: str, action: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("reason", "INACCURATE")
    kwargs.setdefault("justification", WHY)
    return await node.rectification.rectify(CASEWORKER, pid, action=action, **kwargs)


async def read(node: Node, pid: str) -> dict[str, Any]:
    opened = await node.inbox.read(CASEWORKER, pid, "checking the correction")
    result: dict[str, Any] = opened["body"]
    return result


async def refusal(node: Node, pid: str) -> ErrorCode:
    with pytest.raises(RequestRefused) as info:
        await read(node, pid)
    return info.value.code


async def test_rectify_reaches_the_recipient_and_is_acknowledged(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    target = await send_delivered(prison, [PROBATION], RELEASE_NOTICE, notice)
    corrected = {**notice, "prison_id": "XYZ"}

    result = await rectify(prison, target, "RECTIFY", corrected_body=corrected)
    (packet,) = result["packets"]
    assert (result["target_pid"], result["action"]) == (target, "RECTIFY")
    assert (packet["to"], packet["removed"]) == ([PROBATION], [])
    own = [e for e in await audit_entries(prison, pid=target) if e["op"] == "alteration"]
    assert [(e["action"], e["fields"]) for e in own] == [("RECTIFY", ["prison_id"])]
    pending = await prison.rectification.status(target)
    assert pending["acknowledged"] is False
    assert pending["rectifications"][0]["recipients"][0]["status"] == "pending"

    await deliver(prison, packet["pid"])
    assert await read(probation, target) == corrected
    (applied,) = [e for e in await audit_entries(probation, pid=target) if e["op"] == "alteration"]
    assert (applied["action"], applied["fields"], applied["notice"]) == (
        "RECTIFY",
        ["prison_id"],
        packet["pid"],
    )
    received = {r["pid"]: r for r in (await probation.cases.show(notice["case_ref"]))["received"]}
    assert received[target]["rectified_by"] == packet["pid"]
    assert received[packet["pid"]]["schema"] == NOTICE

    status = await prison.rectification.status(target)
    (item,) = status["rectifications"]
    (recipient,) = item["recipients"]
    assert status["acknowledged"] is True
    assert (item["id"], item["action"], item["reason"]) == (
        result["rectification"],
        "RECTIFY",
        "INACCURATE",
    )
    assert (recipient["node"], recipient["notice_pid"], recipient["status"]) == (
        PROBATION,
        packet["pid"],
        "delivered",
    )


async def test_a_recipient_gets_only_its_kinds_view_of_the_correction(
    prison: Node, exit_org: Node
) -> None:
    notice = release_notice()
    packets = await send(prison, [PROBATION, EXIT], RELEASE_NOTICE, notice, minimise=True)
    await deliver(prison, *[p["pid"] for p in packets])
    (to_exit,) = [p for p in packets if p["to"] == [EXIT]]
    corrected = {**notice, "prison_id": "XYZ"}

    result = await rectify(prison, to_exit["pid"], "RECTIFY", corrected_body=corrected)
    (packet,) = result["packets"]
    assert packet["removed"] == to_exit["removed"]
    await deliver(prison, packet["pid"])
    held = await read(exit_org, to_exit["pid"])
    assert held["prison_id"] == "XYZ"
    assert set(held).isdisjoint(to_exit["removed"])


@pytest.mark.parametrize(("action", "code"), [("ERASE", "erased"), ("RESTRICT", "restricted")])
async def test_erase_and_restrict_reach_the_recipient(
    prison: Node, probation: Node, action: str, code: str
) -> None:
    target = await send_delivered(prison, [PROBATION], RELEASE_NOTICE, release_notice())
    result = await rectify(prison, target, action, reason="UNLAWFULLY_PROCESSED")
    await deliver(prison, *[p["pid"] for p in result["packets"]])
    assert (await refusal(probation, target)).value == code
    own = await prison.retention.find(target)
    assert (own.erased_at is not None, own.restricted is not None) == (
        action == "ERASE",
        action == "RESTRICT",
    )
    assert (await prison.rectification.status(target))["acknowledged"] is True


async def test_a_rectification_whose_held_body_cannot_be_decrypted_changes_nothing(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    target = await send_delivered(prison, [PROBATION], RELEASE_NOTICE, notice)
    unreadable = bytes(range(64))  # 24-byte nonce and a box that does not open
    async with prison.db.connection() as conn:
        await conn.execute("UPDATE outbox SET body_box = $1 WHERE pid = $2", unreadable, target)
    seq = await audit_seq(prison)

    with pytest.raises(BodyUnavailable) as info:
        await rectify(prison, target, "RECTIFY", corrected_body={**notice, "prison_id": "XYZ"})
    assert info.value.pid == target
    assert target in info.value.message
    assert info.value.code is ErrorCode.BODY_UNAVAILABLE

    # Nothing changed: no rectification recorded, no audit entry, no notice
    # queued, the stored box untouched, the recipient's copy as it was.
    assert (await prison.rectification.status(target))["rectifications"] == []
    assert await audit_seq(prison) == seq
    async with prison.db.connection() as conn:
        stored = await conn.fetchval("SELECT body_box FROM outbox WHERE pid = $1", target)
    assert bytes(stored) == unreadable
    assert await read(probation, target) == notice


async def test_a_rectification_is_refused_while_a_delivery_is_pending(prison: Node) -> None:
    notice = release_notice()
    (packet,) = await send(prison, [PROBATION], RELEASE_NOTICE, notice)
    seq = await audit_seq(prison)
    with pytest.raises(RequestRefused) as info:
        await rectify(
            prison, packet["pid"], "RECTIFY", corrected_body={**notice, "prison_id": "X1"}
        )
    assert info.value.code is ErrorCode.DELIVERY_PENDING
    assert await audit_seq(prison) == seq
    await deliver(prison, packet["pid"])


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"action": "AMEND"}, ErrorCode.BAD_REQUEST),
        ({"reason": "BECAUSE"}, ErrorCode.BAD_REQUEST),
        ({"corrected_body": None}, ErrorCode.BAD_REQUEST),
        ({"corrected_body": {"case_ref": "HC-X"}}, ErrorCode.SCHEMA_INVALID),
        ({"case_ref": "HC-0000000000000000000000000A"}, ErrorCode.SCHEMA_INVALID),
        ({"justification": ""}, ErrorCode.JUSTIFICATION_REQUIRED),
        ({"pid": "AAAAAAAAAAAAAAAAAAAAAA"}, ErrorCode.NOT_FOUND),
    ],
)
async def test_a_rectification_that_cannot_be_made_is_refused_before_anything_changes(
    prison: Node, probation: Node, changes: dict[str, Any], code: ErrorCode
) -> None:
    notice = release_notice()
    target = await send_delivered(prison, [PROBATION], RELEASE_NOTICE, notice)
    corrected = {**notice, "prison_id": "XYZ"}
    if "case_ref" in changes:
        corrected["case_ref"] = changes.pop("case_ref")
    request: dict[str, Any] = {"action": "RECTIFY", "corrected_body": corrected, **changes}
    pid = request.pop("pid", target)
    seq = await audit_seq(prison)
    with pytest.raises(RequestRefused) as info:
        await rectify(prison, pid, **request)
    assert info.value.code is code
    assert await audit_seq(prison) == seq
    assert (await prison.rectification.status(target))["rectifications"] == []


async def test_a_notice_from_a_node_that_did_not_send_the_target_is_rejected(
    prison: Node, probation: Node, exit_org: Node
) -> None:
    notice = release_notice()
    target = await send_delivered(prison, [PROBATION], RELEASE_NOTICE, notice)
    forged = body(
        NOTICE,
        case_ref=notice["case_ref"],
        target_pid=target,
        target_schema=RELEASE_NOTICE,
        action="ERASE",
        reason="UNLAWFULLY_PROCESSED",
    )
    del forged["corrected_body"]
    (packet,) = await send(exit_org, [PROBATION], NOTICE, forged)
    (status,) = await deliver(exit_org, packet["pid"])
    (delivery,) = status["deliveries"]
    assert (delivery["status"], delivery["reason"]) == ("rejected", "not_permitted")
    assert await read(probation, target) == notice
    assert [e["op"] for e in await audit_entries(probation, pid=target)] == [
        "collection",
        "consultation",
    ]
