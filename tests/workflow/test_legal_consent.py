"""Issue 16, finding 5 (LED Art 8): a consent covers only the nodes in its
`recipients` and only between its own dates; the consent in force is chosen by
those dates, not by the order in which the records arrived."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from handover.node.runtime import Node
from handover.protocol.errors import RejectCode
from handover.workflow.errors import ErrorCode, RequestRefused
from inproc import PRISON, PROBATION, body, new_case, send, send_delivered

pytestmark = pytest.mark.asyncio(loop_scope="session")

CONSENT = "handover/consent-record/1"
PROGRESS = "handover/progress-summary/1"


def _day(offset: int) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=offset)).isoformat()


async def _record(exit_org: Node, case_ref: str, consent_id: str, **fields: Any) -> None:
    consent = body(CONSENT, case_ref=case_ref, scope="SHARE_PROGRESS", consent_id=consent_id)
    consent.pop("recipients", None)
    consent.update(fields)
    await send_delivered(exit_org, [PROBATION, PRISON], CONSENT, consent)


async def _progress(exit_org: Node, case_ref: str, to: str) -> list[dict[str, Any]]:
    return await send(exit_org, [to], PROGRESS, body(PROGRESS, case_ref=case_ref))


async def test_a_consent_for_probation_only_does_not_let_prison_receive(
    exit_org: Node, probation: Node, prison: Node
) -> None:
    case_ref = new_case()
    await _record(exit_org, case_ref, "C-P1", given_at=_day(-3), recipients=[PROBATION])
    assert await _progress(exit_org, case_ref, PROBATION)
    with pytest.raises(RequestRefused) as refused:
        await _progress(exit_org, case_ref, PRISON)
    assert refused.value.code is ErrorCode.CONSENT_REQUIRED
    assert PRISON in refused.value.message and "SHARE_PROGRESS" in refused.value.message
    # The receivers hold the same rule at step 9: probation is covered, prison is not.
    summary = body(PROGRESS, case_ref=case_ref)
    verdicts = {}
    for node in (probation, prison):
        async with node.db.connection() as conn:
            verdicts[node.config.node] = await node.workflow.check_receive(
                conn, sender=exit_org.config.node, schema=PROGRESS, body=summary
            )
    assert verdicts[PROBATION] is None
    rejected = verdicts[PRISON]
    assert rejected is not None and rejected.code is RejectCode.CONSENT_REQUIRED


async def test_the_consent_in_force_is_the_latest_by_its_own_dates(exit_org: Node) -> None:
    case_ref = new_case()
    # A withdrawal dated last week arrives after a consent given yesterday: the
    # newer consent (by its dates) holds.
    await _record(exit_org, case_ref, "C-D1", given_at=_day(-1))
    await _record(
        exit_org,
        case_ref,
        "C-D0",
        state="WITHDRAWN",
        given_at=_day(-30),
        withdrawn_at=_day(-7),
    )
    assert await _progress(exit_org, case_ref, PROBATION)


async def test_a_consent_outside_its_own_dates_is_not_in_force(exit_org: Node) -> None:
    expired, future = new_case(), new_case()
    await _record(exit_org, expired, "C-E1", given_at=_day(-30), expires_on=_day(-1))
    await _record(exit_org, future, "C-F1", given_at=_day(5))
    for case_ref in (expired, future):
        with pytest.raises(RequestRefused) as refused:
            await _progress(exit_org, case_ref, PROBATION)
        assert refused.value.code is ErrorCode.CONSENT_REQUIRED
