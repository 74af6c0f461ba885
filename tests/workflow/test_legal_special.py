"""Issue 16, finding 6 (LED Art 10): fields marked `x-sensitivity:
special-category` in schemas/ reach a recipient kind only where the policy's
`special` section allows that field for it; otherwise the submission is refused
naming the field, or minimised with the field named in `removed`, and a
receiver refuses such a packet at step 9."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handover.node.runtime import Node
from handover.protocol.errors import RejectCode
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.policy import Policy, default_policy_path
from inproc import EXIT, PRISON, RELEASE_NOTICE, release_notice, send

pytestmark = pytest.mark.asyncio(loop_scope="session")

FOR_EXIT_REMOVED = (
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
)


def exit_notice() -> dict[str, Any]:
    """A release notice carrying only what an exit organisation may have, plus
    resettlement pathways whose notes reveal health (special category)."""
    notice = release_notice()
    for name in FOR_EXIT_REMOVED:
        notice.pop(name, None)
    notice["risk"] = {k: notice["risk"][k] for k in ("overall_level", "at_risk")}
    notice["resettlement"] = [
        {"pathway": "HEALTH", "status": "IN_PROGRESS", "notes": "Registered with a GP."},
        {"pathway": "ACCOMMODATION", "status": "DONE"},
    ]
    return notice


async def test_health_notes_are_refused_for_an_exit_organisation_naming_the_field(
    prison: Node,
) -> None:
    with pytest.raises(RequestRefused) as refused:
        await send(prison, [EXIT], RELEASE_NOTICE, exit_notice())
    assert refused.value.code is ErrorCode.NOT_PERMITTED
    assert "resettlement[0].notes" in refused.value.message and EXIT in refused.value.message
    assert "Registered" not in refused.value.message


async def test_with_minimise_the_special_category_field_is_removed_and_named(
    prison: Node,
) -> None:
    (packet,) = await send(prison, [EXIT], RELEASE_NOTICE, exit_notice(), minimise=True)
    assert packet["removed"] == ["resettlement[0].notes"]


async def test_prison_and_probation_keep_what_the_policy_allows_them(prison: Node) -> None:
    notice = release_notice()
    packets = await send(prison, ["probation.test"], RELEASE_NOTICE, notice)
    assert packets[0]["removed"] == []


async def test_a_receiver_refuses_special_category_data_its_kind_may_not_have(
    prison: Node, exit_org: Node
) -> None:
    async with exit_org.db.connection() as conn:
        rejected = await exit_org.workflow.check_receive(
            conn, sender=PRISON, schema=RELEASE_NOTICE, body=exit_notice()
        )
    assert rejected is not None and rejected.code is RejectCode.NOT_PERMITTED
    assert "resettlement[0].notes" in rejected.detail


async def test_a_policy_can_allow_a_special_category_field_for_a_kind(tmp_path: Path) -> None:
    document = json.loads(default_policy_path().read_text("utf-8"))
    document["special"][RELEASE_NOTICE]["exit"] = ["resettlement.*.notes"]
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document))
    policy = Policy.load(path)
    notice = exit_notice()
    special = ["resettlement.*.notes", "risk_detail"]
    assert policy.view(RELEASE_NOTICE, "exit", notice, set(), special).removed == []
    default = Policy.load()
    view = default.view(RELEASE_NOTICE, "exit", notice, set(), special)
    assert view.removed == ["resettlement[0].notes"]
    assert "notes" not in view.body["resettlement"][0]
    assert notice["resettlement"][0]["notes"]  # the submitted body is not changed
