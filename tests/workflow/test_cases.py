"""Cases (`workflow/cases.py`) on real nodes: the case list and a case's view on
both sides of a handover, local case ids, overdue continuity items, and
acknowledging a responsibility agreement (which goes back to the other parties)."""

from __future__ import annotations

from typing import Any

import pytest

from handover.node.runtime import Node
from handover.workflow.errors import ErrorCode, RequestRefused
from inproc import (
    CASEWORKER,
    EXIT,
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    body,
    deliver,
    new_case,
    release_notice,
    send,
    send_delivered,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

AGREEMENT = "handover/responsibility-agreement/1"
WHY = "agreeing who does what after release"


async def listed(node: Node, case_ref: str) -> dict[str, Any] | None:
    found = [
        c for c in await node.cases.list_cases(limit=500, before=None) if c["case_ref"] == case_ref
    ]
    return found[0] if found else None


async def refused(call: Any) -> ErrorCode:
    with pytest.raises(RequestRefused) as info:
        await call
    return info.value.code


def agreement_for(parties: list[str], case_ref: str | None = None) -> dict[str, Any]:
    """The agreement example between `parties` (prison, probation, exit order)."""
    out = body(AGREEMENT)
    kinds = {PRISON: "prison", PROBATION: "probation", EXIT: "exit"}
    out["parties"] = [p for p in out["parties"] if p["kind"] in {kinds[n] for n in parties}]
    for party in out["parties"]:
        party["node"] = next(n for n in parties if kinds[n] == party["kind"])
    if case_ref is not None:
        out["case_ref"] = case_ref
    return out


async def test_a_case_is_listed_and_shown_on_both_sides(prison: Node, probation: Node) -> None:
    notice = release_notice()
    case = notice["case_ref"]
    pid = await send_delivered(prison, [PROBATION], RELEASE_NOTICE, notice)

    sent, received = await listed(prison, case), await listed(probation, case)
    assert sent is not None and received is not None
    assert (sent["sent"], sent["received"]) == (1, 0)
    assert (received["sent"], received["received"]) == (0, 1)
    assert sent["release_date"] == received["release_date"] == notice["confirmed_release_date"]
    assert sent["overdue"] is True  # the example's release date is long past

    shown = await prison.cases.show(case)
    assert (shown["case_ref"], shown["first_pid"], shown["local_id"]) == (case, pid, None)
    (packet,) = shown["sent"]
    assert (packet["pid"], packet["schema"], packet["deliveries"]) == (
        pid,
        RELEASE_NOTICE,
        {PROBATION: "delivered"},
    )
    assert packet["fields"] == sorted(notice) and packet["removed"] == []
    assert shown["received"] == []
    assert [(e["pid"], e["counterpart"], e["event"]) for e in shown["timeline"]] == [
        (pid, PROBATION, "queued"),
        (pid, PROBATION, "delivered"),
    ]

    other = await probation.cases.show(case)
    (item,) = other["received"]
    assert (item["pid"], item["sender"], item["restricted"], item["erased"]) == (
        pid,
        PRISON,
        False,
        False,
    )
    assert other["sent"] == [] and other["expectations"] == []


async def test_an_overdue_expectation_is_listed(prison: Node) -> None:
    notice = release_notice()  # released in 2025: the answer was due 14 days before
    (packet,) = await send(prison, [PROBATION], RELEASE_NOTICE, notice)
    overdue = [i for i in await prison.cases.overdue() if i["case_ref"] == notice["case_ref"]]
    assert [(i["pid"], i["node"], i["expected"]) for i in overdue] == [
        (packet["pid"], PROBATION, ["handover/condition-update/1"])
    ]
    assert overdue[0]["overdue_days"] > 0
    await deliver(prison, packet["pid"])


async def test_a_local_id_names_the_case(prison: Node) -> None:
    first, second = release_notice(), release_notice()
    for notice in (first, second):
        await send(prison, [PROBATION], RELEASE_NOTICE, notice)
    local = "NOMIS-" + first["case_ref"][-8:]
    assert await prison.cases.set_local_id(first["case_ref"], local) == {
        "case_ref": first["case_ref"],
        "local_id": local,
    }
    assert (await prison.cases.show(local))["case_ref"] == first["case_ref"]
    assert (await listed(prison, first["case_ref"]) or {})["local_id"] == local

    assert await refused(prison.cases.set_local_id(second["case_ref"], local)) is ErrorCode.CONFLICT
    assert await refused(prison.cases.set_local_id(second["case_ref"], "")) is ErrorCode.BAD_REQUEST
    assert await refused(prison.cases.set_local_id(second["case_ref"], 7)) is ErrorCode.BAD_REQUEST

    await prison.cases.set_local_id(local, None)  # cleared through the local id itself
    assert await refused(prison.cases.show(local)) is ErrorCode.NOT_FOUND
    assert (await prison.cases.show(first["case_ref"]))["local_id"] is None


async def test_an_unknown_case_is_not_found(prison: Node) -> None:
    assert await refused(prison.cases.show(new_case())) is ErrorCode.NOT_FOUND
    assert await refused(prison.cases.show("x" * 65)) is ErrorCode.BAD_REQUEST


async def test_acknowledging_an_agreement_sends_it_back_to_the_other_parties(
    prison: Node, probation: Node, exit_org: Node
) -> None:
    agreement = agreement_for([PRISON, PROBATION, EXIT])
    case, agreement_id = agreement["case_ref"], agreement["agreement_id"]
    pid = await send_delivered(prison, [PROBATION, EXIT], AGREEMENT, agreement)
    view = (await probation.cases.show(case))["agreement"]
    assert (view["pid"], view["author"], view["revision"]) == (pid, PRISON, 1)
    assert (view["acknowledged"], sorted(view["pending"])) == ([PRISON], [EXIT, PROBATION])

    (packet,) = await probation.cases.acknowledge_agreement(CASEWORKER, case, agreement_id, WHY)
    assert sorted(packet["to"]) == [EXIT, PRISON]
    await deliver(probation, packet["pid"])
    for node in (prison, probation, exit_org):
        view = (await node.cases.show(case))["agreement"]
        assert (view["acknowledged"], view["pending"]) == ([PRISON, PROBATION], [EXIT]), node

    # What went back is the same agreement with probation's acknowledgement added.
    opened = await prison.inbox.read(CASEWORKER, packet["pid"], WHY)
    (ack,) = opened["body"].pop("acknowledgements")
    assert ack["node"] == PROBATION
    assert opened["body"] == agreement


async def test_an_agreement_can_only_be_acknowledged_by_a_party(
    prison: Node, exit_org: Node
) -> None:
    agreement = agreement_for([PRISON, PROBATION])
    case = agreement["case_ref"]
    await send_delivered(prison, [PROBATION, EXIT], AGREEMENT, agreement)
    acknowledge = exit_org.cases.acknowledge_agreement
    assert await refused(acknowledge(CASEWORKER, case, agreement["agreement_id"], WHY)) is (
        ErrorCode.FORBIDDEN
    )
    assert await refused(acknowledge(CASEWORKER, case, "RA-other", WHY)) is ErrorCode.NOT_FOUND
    assert await refused(acknowledge(CASEWORKER, new_case(), "RA-other", WHY)) is (
        ErrorCode.NOT_FOUND
    )


async def test_a_restricted_agreement_cannot_be_acknowledged(prison: Node, probation: Node) -> None:
    agreement = agreement_for([PRISON, PROBATION])
    case = agreement["case_ref"]
    pid = await send_delivered(prison, [PROBATION], AGREEMENT, agreement)
    await probation.reviews.decide(
        CASEWORKER, pid, outcome="RESTRICT", justification=WHY, reason="contested"
    )
    code = await refused(
        probation.cases.acknowledge_agreement(CASEWORKER, case, agreement["agreement_id"], WHY)
    )
    assert code is ErrorCode.RESTRICTED
