"""Sending (`Sender.submit`): refusals name the field or scope and the recipient,
each recipient kind gets its policy view as its own packet, and each packet
leaves an outbox row per recipient and a `disclosure` audit entry."""

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
    WHY,
    audit_entries,
    audit_seq,
    body,
    release_notice,
    send,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

# What the default policy removes from a release-notice for an exit organisation.
EXIT_REMOVED = [
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
]
PROGRESS = "handover/progress-summary/1"


async def refused(node: Node, **request: Any) -> RequestRefused:
    """Submit, expecting a refusal that leaves the audit log as it was."""
    before = await audit_seq(node)
    request.setdefault("justification", WHY)
    with pytest.raises(RequestRefused) as info:
        await node.sender.submit(CASEWORKER, **request)
    assert await audit_seq(node) == before
    return info.value


async def test_a_field_the_policy_removes_is_refused_naming_field_and_recipient(
    prison: Node,
) -> None:
    notice = release_notice()
    error = await refused(prison, to=[PROBATION, EXIT], schema_id=RELEASE_NOTICE, body=notice)
    assert error.code is ErrorCode.NOT_PERMITTED
    assert EXIT in error.message and "(exit)" in error.message
    assert "field identifiers" in error.message and '"minimise": true' in error.message


async def test_a_field_that_needs_consent_names_the_missing_consent(prison: Node) -> None:
    notice = body(RELEASE_NOTICE, 3)  # with family_contact
    error = await refused(prison, to=[PROBATION], schema_id=RELEASE_NOTICE, body=notice)
    assert error.code is ErrorCode.NOT_PERMITTED
    assert "field family_contact" in error.message and PROBATION in error.message
    assert "FAMILY_INVOLVEMENT" in error.message


async def test_a_packet_that_needs_consent_is_refused_naming_the_scope(exit_org: Node) -> None:
    summary = body(PROGRESS)
    error = await refused(exit_org, to=[PROBATION], schema_id=PROGRESS, body=summary)
    assert error.code is ErrorCode.CONSENT_REQUIRED
    assert "SHARE_PROGRESS" in error.message and PROBATION in error.message
    assert summary["case_ref"] in error.message


async def test_a_schema_the_sender_may_not_send_is_refused(prison: Node) -> None:
    update = body("handover/condition-update/1")
    error = await refused(
        prison, to=[PROBATION], schema_id="handover/condition-update/1", body=update
    )
    assert error.code is ErrorCode.NOT_PERMITTED
    assert "a prison send handover/condition-update/1 to a probation" in error.message


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        ({"to": []}, ErrorCode.BAD_REQUEST, "'to'"),
        ({"to": [PROBATION, PROBATION]}, ErrorCode.BAD_REQUEST, "twice"),
        ({"to": ["nobody.test"]}, ErrorCode.UNKNOWN_RECIPIENT, "nobody.test is not a pinned"),
        ({"to": [PRISON]}, ErrorCode.RECIPIENT_IS_SELF, "prison.test is this node"),
        ({"schema_id": "handover/nothing/1"}, ErrorCode.UNKNOWN_SCHEMA, "handover/nothing/1"),
        ({"body": {"case_ref": "HC-1"}}, ErrorCode.SCHEMA_INVALID, ""),
        ({"justification": " "}, ErrorCode.JUSTIFICATION_REQUIRED, "justification"),
        ({"minimise": "yes"}, ErrorCode.BAD_REQUEST, "minimise"),
    ],
)
async def test_malformed_submissions_are_refused_with_their_code(
    prison: Node, request_: dict[str, Any], code: ErrorCode, words: str
) -> None:
    request: dict[str, Any] = {
        "to": [PROBATION],
        "schema_id": RELEASE_NOTICE,
        "body": release_notice(),
        **request_,
    }
    error = await refused(prison, **request)
    assert error.code is code
    assert words in error.message


async def test_minimised_views_become_one_packet_per_recipient_kind(prison: Node) -> None:
    notice = release_notice()
    packets = await send(prison, [PROBATION, EXIT], RELEASE_NOTICE, notice, minimise=True)
    by_node = {tuple(p["to"]): p for p in packets}
    assert set(by_node) == {(PROBATION,), (EXIT,)}
    assert by_node[(PROBATION,)]["removed"] == []
    notes = [
        f"resettlement[{i}].notes" for i, r in enumerate(notice["resettlement"]) if "notes" in r
    ]
    assert sorted(by_node[(EXIT,)]["removed"]) == sorted(EXIT_REMOVED + notes)
    assert by_node[(PROBATION,)]["pid"] != by_node[(EXIT,)]["pid"]


async def test_recipients_with_the_same_view_share_one_packet(prison: Node) -> None:
    agreement = body("handover/responsibility-agreement/1")
    packets = await send(
        prison, [PROBATION, EXIT], "handover/responsibility-agreement/1", agreement
    )
    assert [sorted(p["to"]) for p in packets] == [[EXIT, PROBATION]]


async def test_each_packet_is_queued_with_a_pending_delivery_per_recipient(prison: Node) -> None:
    notice = release_notice()
    agreement = body("handover/responsibility-agreement/1", case_ref=notice["case_ref"])
    (packet,) = await send(
        prison, [PROBATION, EXIT], "handover/responsibility-agreement/1", agreement
    )
    status = await prison.sender.packet_status(packet["pid"])
    assert status["pid"] == packet["pid"]
    assert status["schema"] == "handover/responsibility-agreement/1"
    assert status["case_ref"] == notice["case_ref"]
    assert status["exp"] - status["iat"] == prison.config.ttl_days * 86_400_000
    assert sorted(d["node"] for d in status["deliveries"]) == [EXIT, PROBATION]
    for delivery in status["deliveries"]:
        assert delivery["status"] == "pending"
        assert delivery["attempts"] == 0
        assert delivery["receipt"] is None


async def test_an_unknown_packet_has_no_status(prison: Node) -> None:
    with pytest.raises(RequestRefused) as info:
        await prison.sender.packet_status("AAAAAAAAAAAAAAAAAAAAAA")
    assert info.value.code is ErrorCode.NOT_FOUND


async def test_each_packet_has_a_disclosure_entry_naming_fields_not_values(prison: Node) -> None:
    notice = release_notice()
    packets = await send(prison, [PROBATION, EXIT], RELEASE_NOTICE, notice, minimise=True)
    for packet in packets:
        (entry,) = await audit_entries(prison, pid=packet["pid"])
        view = [f for f in notice if f not in packet["removed"]]
        assert entry["op"] == "disclosure"
        assert entry["to"] == packet["to"]
        assert entry["schema"] == RELEASE_NOTICE
        assert entry["case"] == notice["case_ref"]
        assert entry["fields"] == sorted(view)
        assert entry.get("removed") == (packet["removed"] or None)
        assert entry["operator"] == CASEWORKER.name
        assert entry["justification"] == WHY
        assert entry["org"] == prison.config.node
        # Names only: no value of the body is in the log.
        assert notice["police_national_id"] not in str(entry)
        assert notice["release_address"]["postcode"] not in str(entry)
