"""The workflow engine between real nodes: one view per recipient kind, consent
that widens a view or is required for a packet, the receiver's own policy at
step 9, and continuity-of-care expectations that an answer satisfies."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from handover.node.runtime import Node
from handover.protocol.errors import RejectCode
from handover.workflow.engine import PlannedPacket, date_ms
from handover.workflow.errors import ErrorCode, RequestRefused
from inproc import (
    EXIT,
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    body,
    deliver,
    release_notice,
    send,
    send_delivered,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CONDITION_UPDATE = "handover/condition-update/1"
CONSENT_RECORD = "handover/consent-record/1"
EXIT_REMOVED = {
    "identifiers",
    "police_national_id",
    "confirmed_release_date",
    "release_date_type",
    "release_reason",
    "sentence_dates",
    "release_address",
    "exclusion_zones",
    "risk_detail",
    "flags",
}


async def plan(
    node: Node, to: list[str], schema: str, payload: dict[str, Any], minimise: bool = True
) -> dict[str, PlannedPacket]:
    """The workflow's plan for a submission, by recipient (each packet once per recipient)."""
    async with node.db.connection() as conn:
        planned = await node.workflow.plan(
            conn, to=to, schema=schema, body=payload, minimise=minimise
        )
    return {r: p for p in planned for r in p.recipients}


async def give_consent(exit_org: Node, case_ref: str, scope: str, to: list[str]) -> None:
    """The exit organisation records a consent and tells `to` (delivered)."""
    consent = body(CONSENT_RECORD, case_ref=case_ref, scope=scope, consent_id=f"C-{scope}")
    consent["recipients"] = to
    await send_delivered(exit_org, to, CONSENT_RECORD, consent)


async def test_each_recipient_kind_gets_its_own_view(prison: Node) -> None:
    notice = release_notice()
    views = await plan(prison, [PROBATION, EXIT], RELEASE_NOTICE, notice)
    assert views[PROBATION] is not views[EXIT]
    assert (views[PROBATION].body, views[PROBATION].removed) == (notice, [])
    assert views[PROBATION].kinds == ["probation"]
    exit_view = views[EXIT]
    assert exit_view.kinds == ["exit"]
    # Art 10: the health notes of the resettlement pathways are special category.
    notes = {
        f"resettlement[{i}].notes" for i, r in enumerate(notice["resettlement"]) if "notes" in r
    }
    assert notes and set(exit_view.removed) == EXIT_REMOVED | notes
    assert all("notes" not in r for r in exit_view.body["resettlement"])
    assert set(exit_view.body) == set(notice) - EXIT_REMOVED
    assert exit_view.body["risk"] == {k: notice["risk"][k] for k in ("overall_level", "at_risk")}
    assert exit_view.body["case_ref"] == notice["case_ref"]


async def test_without_minimise_a_reduced_view_is_refused(prison: Node) -> None:
    with pytest.raises(RequestRefused) as info:
        await plan(prison, [PROBATION, EXIT], RELEASE_NOTICE, release_notice(), minimise=False)
    assert info.value.code is ErrorCode.NOT_PERMITTED
    assert EXIT in info.value.message and "field " in info.value.message


async def test_a_list_view_keeps_only_the_matching_items(probation: Node, exit_org: Node) -> None:
    update = body(CONDITION_UPDATE)
    await give_consent(exit_org, update["case_ref"], "INCLUDE_IN_CONDITIONS", [PROBATION])
    views = await plan(probation, [PRISON, EXIT], CONDITION_UPDATE, update)
    assert views[PRISON].body == update
    exit_view = views[EXIT]
    assert exit_view.body["conditions"] == [c for c in update["conditions"] if c["exit_related"]]
    assert "first_appointment" not in exit_view.body
    dropped = [
        f"conditions[{i}]" for i, c in enumerate(update["conditions"]) if not c["exit_related"]
    ]
    assert set(exit_view.removed) == {"first_appointment", *dropped}
    assert exit_view.consents == ["INCLUDE_IN_CONDITIONS"]


async def test_a_packet_that_needs_consent_is_planned_once_the_consent_is_in_force(
    probation: Node, exit_org: Node
) -> None:
    update = body(CONDITION_UPDATE)
    with pytest.raises(RequestRefused) as info:
        await plan(probation, [EXIT], CONDITION_UPDATE, update)
    assert info.value.code is ErrorCode.CONSENT_REQUIRED
    assert "INCLUDE_IN_CONDITIONS" in info.value.message and EXIT in info.value.message

    await give_consent(exit_org, update["case_ref"], "INCLUDE_IN_CONDITIONS", [PROBATION])
    assert (await plan(probation, [EXIT], CONDITION_UPDATE, update))[EXIT].consents == [
        "INCLUDE_IN_CONDITIONS"
    ]


async def test_a_consent_in_force_widens_the_view(prison: Node, exit_org: Node) -> None:
    notice = body(RELEASE_NOTICE, 3)  # with family_contact (FAMILY_INVOLVEMENT)
    without = await plan(prison, [PROBATION], RELEASE_NOTICE, notice)
    assert without[PROBATION].removed == ["family_contact"]
    assert "family_contact" not in without[PROBATION].body

    await give_consent(exit_org, notice["case_ref"], "FAMILY_INVOLVEMENT", [PRISON, PROBATION])
    widened = await plan(prison, [PROBATION], RELEASE_NOTICE, notice)
    assert widened[PROBATION].body == notice
    assert widened[PROBATION].consents == ["FAMILY_INVOLVEMENT"]


async def test_the_receiver_applies_its_own_policy(prison: Node, probation: Node) -> None:
    async with probation.db.connection() as conn:
        not_ours = await probation.workflow.check_receive(
            conn, sender=PRISON, schema=CONDITION_UPDATE, body=body(CONDITION_UPDATE)
        )
        needs_consent = await probation.workflow.check_receive(
            conn, sender=PRISON, schema=RELEASE_NOTICE, body=body(RELEASE_NOTICE, 3)
        )
        unknown_sender = await probation.workflow.check_receive(
            conn, sender="nobody.test", schema=RELEASE_NOTICE, body=release_notice()
        )
        fine = await probation.workflow.check_receive(
            conn, sender=PRISON, schema=RELEASE_NOTICE, body=release_notice()
        )
    assert not_ours is not None and not_ours.code is RejectCode.NOT_PERMITTED
    assert needs_consent is not None and needs_consent.code is RejectCode.CONSENT_REQUIRED
    assert unknown_sender is not None and unknown_sender.code is RejectCode.NOT_PERMITTED
    assert fine is None


def in_days(days: int) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)).isoformat()


async def test_a_release_notice_sets_expectations_that_an_answer_satisfies(
    prison: Node, probation: Node
) -> None:
    release = in_days(60)
    notice = release_notice(expected_release_date=release, confirmed_release_date=release)
    case = notice["case_ref"]
    packets = await send(prison, [PROBATION, EXIT], RELEASE_NOTICE, notice, minimise=True)
    await deliver(prison, *[p["pid"] for p in packets])
    pid_for = {p["to"][0]: p["pid"] for p in packets}

    shown = await prison.cases.show(case)
    expected = {(e["node"], tuple(e["schemas"])): e for e in shown["expectations"]}
    assert set(expected) == {
        (PROBATION, (CONDITION_UPDATE,)),
        (EXIT, ("handover/care-acknowledgement/1",)),
    }
    deadline = date_ms(release) - 14 * 86_400_000
    for (node, _schemas), item in expected.items():
        assert item["pid"] == pid_for[node]
        assert (item["deadline"], item["state"], item["answered_by"]) == (deadline, "open", None)

    update = body(CONDITION_UPDATE, case_ref=case)
    answer = await send_delivered(probation, [PRISON], CONDITION_UPDATE, update)
    shown = await prison.cases.show(case)
    states = {e["node"]: (e["state"], e["answered_by"]) for e in shown["expectations"]}
    assert states == {PROBATION: ("acknowledged", answer), EXIT: ("open", None)}
    assert shown["release_date"] == release
