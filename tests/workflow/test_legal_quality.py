"""Issue 16, finding 8 (LED Art 7(2), 18): `basis` per field group, FACT only
with a source system named, an assessment never labelled FACT; rectification
notices carry the basis of what they correct; data from judicial decisions
(licence conditions) is marked in the disclosure entry."""

from __future__ import annotations

from typing import Any

import pytest

from handover.node.runtime import Node
from handover.workflow.errors import ErrorCode, RequestRefused
from inproc import (
    CASEWORKER,
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    WHY,
    audit_entries,
    body,
    release_notice,
    send,
    send_delivered,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CONDITION_UPDATE = "handover/condition-update/1"


async def refused(node: Node, schema: str, notice: dict[str, Any]) -> RequestRefused:
    with pytest.raises(RequestRefused) as info:
        await send(node, [PROBATION], schema, notice)
    return info.value


async def test_a_risk_narrative_cannot_be_labelled_fact(prison: Node) -> None:
    notice = release_notice()
    notice["quality"] = {"as_of": "2025-03-10", "source_system": "NOMIS", "basis": "FACT"}
    error = await refused(prison, RELEASE_NOTICE, notice)
    assert error.code is ErrorCode.SCHEMA_INVALID
    assert "risk_detail" in error.message and "ASSESSMENT" in error.message
    # Labelled per group, it goes.
    notice["quality"]["groups"] = [{"group": "risk_narrative", "basis": "ASSESSMENT"}]
    assert await send(prison, [PROBATION], RELEASE_NOTICE, notice)


async def test_fact_only_where_a_source_system_is_named(prison: Node) -> None:
    notice = release_notice()
    notice["quality"]["groups"] = [
        {"group": "risk_narrative", "basis": "ASSESSMENT"},
        {"group": "release_dates", "basis": "FACT"},
    ]
    error = await refused(prison, RELEASE_NOTICE, notice)
    assert error.paths == ["/quality/groups/1"] and "source_system" in error.message
    notice["quality"]["groups"][1]["source_system"] = "NOMIS"
    assert await send(prison, [PROBATION], RELEASE_NOTICE, notice)


async def test_a_group_the_schema_does_not_have_is_refused(prison: Node) -> None:
    notice = release_notice()
    notice["quality"]["groups"].append({"group": "progress", "basis": "ASSESSMENT"})
    error = await refused(prison, RELEASE_NOTICE, notice)
    assert error.code is ErrorCode.SCHEMA_INVALID and "progress" in error.message


async def test_a_rectification_notice_carries_the_basis_of_what_it_corrects(
    probation: Node,
) -> None:
    update = body(CONDITION_UPDATE)
    update["quality"]["basis"] = "ASSESSMENT"
    pid = await send_delivered(probation, [PRISON], CONDITION_UPDATE, update)
    result = await probation.rectification.rectify(
        CASEWORKER, pid, action="RESTRICT", reason="ACCURACY_CONTESTED", justification=WHY
    )
    (notice,) = result["packets"]
    async with probation.db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT body_box, data_key FROM outbox WHERE pid = $1", notice["pid"]
        )
    sent = probation.sender.vault.open(notice["pid"], row["body_box"], row["data_key"])
    assert sent["quality"]["basis"] == "ASSESSMENT"


async def test_judicial_data_is_marked_in_the_disclosure_entry(probation: Node) -> None:
    update = body(CONDITION_UPDATE)
    (packet,) = await send(probation, [PRISON], CONDITION_UPDATE, update)
    (entry,) = [
        e for e in await audit_entries(probation, pid=packet["pid"]) if e["op"] == "disclosure"
    ]
    assert "conditions" in entry["judicial"]
