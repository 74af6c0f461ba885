"""Issue 16, finding 7 (LED Art 14, 15) and issue 12 item 14: what a subject
access export may say. A restriction's reason is never shown; an admin can
record an Art 15 decision to withhold an item, which the export then leaves
out; third-party data is summarised, not quoted; the export states the legal
basis, the rights and the supervisory authority; staff are named by role."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from handover.node.runtime import Node
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.subject_report import render_markdown
from inproc import (
    ADMIN,
    CASEWORKER,
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    WHY,
    release_notice,
    send_delivered,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

EXPORT_WHY = "SUBJECT_ACCESS: request received by letter"


def _later(days: int) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)).isoformat()


async def _case(prison: Node) -> tuple[str, str, dict[str, Any]]:
    notice = release_notice()
    pid = await send_delivered(prison, [PROBATION], RELEASE_NOTICE, notice)
    return pid, notice["case_ref"], notice


async def test_a_restriction_is_listed_without_its_reason(prison: Node, probation: Node) -> None:
    pid, case_ref, _ = await _case(prison)
    await probation.reviews.decide(
        ADMIN,
        pid,
        outcome="RESTRICT",
        justification=WHY,
        reason="EVIDENCE_PRESERVATION order from prison.example",
    )
    export = await probation.subject_access.export(CASEWORKER, case_ref, EXPORT_WHY)
    (item,) = export["received"]
    assert item["restricted"] is True and "body" not in item
    assert "EVIDENCE_PRESERVATION" not in json.dumps(export)
    assert "EVIDENCE_PRESERVATION" not in render_markdown(export)


async def test_an_item_withheld_under_art_15_is_left_out(prison: Node, probation: Node) -> None:
    pid, case_ref, _ = await _case(prison)
    decision = await probation.subject_access.withhold(
        ADMIN,
        case_ref,
        pid=pid,
        what="item",
        ground="PREJUDICE_INVESTIGATION",
        review_on=_later(90),
        justification="police investigation under way, see the file note",
    )
    assert decision["ground"] == "PREJUDICE_INVESTIGATION"
    export = await probation.subject_access.export(CASEWORKER, case_ref, EXPORT_WHY)
    assert pid not in json.dumps(export)
    assert export["received"] == []
    assert "where the law allows" in export["withheld_notice"]
    # The decision is itself logged, with its ground and review date.
    entries = [
        e["entry"]
        for e in await probation.audit.entries(after=0, limit=500, case_ref=case_ref, pid=pid)
    ]
    (logged,) = [e for e in entries if e.get("action") == "withhold_from_subject_access"]
    assert (logged["ground"], logged["what"]) == ("PREJUDICE_INVESTIGATION", "item")


async def test_a_withholding_decision_needs_a_ground_a_review_date_and_a_held_item(
    prison: Node, probation: Node
) -> None:
    pid, case_ref, _ = await _case(prison)
    good = {
        "pid": pid,
        "what": "restriction",
        "ground": "RIGHTS_OF_OTHERS",
        "review_on": _later(30),
        "justification": WHY,
    }
    for change, code in (
        ({"ground": "BECAUSE"}, ErrorCode.BAD_REQUEST),
        ({"review_on": "2020-01-01"}, ErrorCode.BAD_REQUEST),
        ({"what": "everything"}, ErrorCode.BAD_REQUEST),
        ({"pid": "AAAAAAAAAAAAAAAAAAAAAA"}, ErrorCode.NOT_FOUND),
        ({"justification": "x"}, ErrorCode.JUSTIFICATION_TOO_WEAK),
    ):
        with pytest.raises(RequestRefused) as refused:
            await probation.subject_access.withhold(ADMIN, case_ref, **{**good, **change})
        assert refused.value.code is code, change


async def test_third_party_data_is_summarised_not_quoted(prison: Node, probation: Node) -> None:
    _, case_ref, notice = await _case(prison)
    export = await probation.subject_access.export(CASEWORKER, case_ref, EXPORT_WHY)
    (item,) = export["received"]
    text = json.dumps(export) + render_markdown(export)
    assert notice["exclusion_zones"][0]["area"] not in text
    assert "named victim" not in text
    assert notice["release_address"]["postcode"] not in text
    assert "1 entries held" in item["body"]["exclusion_zones"]
    # What is the subject's own (the release date) is still shown as held.
    assert item["body"]["expected_release_date"] == notice["expected_release_date"]


async def test_a_setting_lets_the_export_quote_third_party_data(
    prison: Node, probation: Node
) -> None:
    _, case_ref, notice = await _case(prison)
    settings = probation.subject_access.settings
    probation.subject_access.settings = dataclasses.replace(settings, quote_third_party=True)
    try:
        export = await probation.subject_access.export(CASEWORKER, case_ref, EXPORT_WHY)
    finally:
        probation.subject_access.settings = settings
    assert export["received"][0]["body"]["exclusion_zones"] == notice["exclusion_zones"]


async def test_the_export_states_legal_basis_rights_and_supervisory_authority(
    prison: Node, probation: Node
) -> None:
    _, case_ref, _ = await _case(prison)
    settings = probation.subject_access.settings
    probation.subject_access.settings = dataclasses.replace(
        settings, supervisory_authority="Information Commissioner, casework@ico.example"
    )
    try:
        export = await probation.subject_access.export(CASEWORKER, case_ref, EXPORT_WHY)
    finally:
        probation.subject_access.settings = settings
    assert {r["right"] for r in export["rights"]} == {
        "rectification",
        "erasure",
        "restriction",
        "complaint",
    }
    assert "2016/680" in export["legal_basis"]
    assert export["supervisory_authority"].startswith("Information Commissioner")
    report = render_markdown(export)
    assert "## The law and your rights" in report and "casework@ico.example" in report


async def test_staff_are_named_by_role_unless_a_setting_says_otherwise(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    await send_delivered(prison, [PROBATION], RELEASE_NOTICE, notice)
    export = await prison.subject_access.export(CASEWORKER, notice["case_ref"], EXPORT_WHY)
    (sent,) = export["sent"]
    assert sent["operator"] == "a member of staff"  # casey is not an operator of the node
    assert CASEWORKER.name not in json.dumps(export)
    settings = prison.subject_access.settings
    prison.subject_access.settings = dataclasses.replace(settings, name_staff=True)
    try:
        named = await prison.subject_access.export(CASEWORKER, notice["case_ref"], EXPORT_WHY)
    finally:
        prison.subject_access.settings = settings
    assert named["sent"][0]["operator"] == CASEWORKER.name
    assert named["node"] == PRISON
