"""Retention (LED Art 5) on a real node: review dates from the policy's rules,
and the outcomes of a review, EXTEND, RESTRICT, ERASE and LIFT, each with its
audit entry and its effect on what operators can read."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from handover.node.runtime import Node
from handover.protocol.packet import SealedPacket
from handover.workflow.engine import date_ms
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.retention import add_months
from inproc import (
    ADMIN,
    CASEWORKER,
    PRISON,
    RELEASE_NOTICE,
    audit_entries,
    body,
    release_notice,
    seal_from,
    send,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

WHY = "annual review of held data"
DAY = 86_400_000


def in_days(days: int) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)).isoformat()


async def receive(prison: Node, probation: Node, notice: dict[str, Any]) -> SealedPacket:
    """A release-notice from prison, accepted by probation (the wire kept for replays)."""
    packet = seal_from(prison, probation, RELEASE_NOTICE, notice)
    (answer,) = await probation.receiver.receive_many([packet.wire])
    assert answer.outcome.value == "accepted"
    return packet


async def review_of(node: Node, pid: str, now: int) -> dict[str, Any] | None:
    """The packet's item in the node's review list at `now`, or None if not due."""
    found = [item for item in await node.retention.reviews(now=now) if item["pid"] == pid]
    return found[0] if found else None


async def decide(node: Node, pid: str, outcome: str, **kwargs: Any) -> dict[str, Any]:
    operator = kwargs.pop("operator", CASEWORKER)
    kwargs.setdefault("justification", WHY)
    return await node.reviews.decide(operator, pid, outcome=outcome, **kwargs)


async def make_due(node: Node, pid: str) -> None:
    """Bring a held packet's review date into the past (as if its time had come)."""
    async with node.db.connection() as conn:
        for table in ("outbox", "received"):
            await conn.execute(f"UPDATE {table} SET review_at = 1 WHERE pid = $1", pid)


async def refused(node: Node, pid: str, outcome: str, **kwargs: Any) -> ErrorCode:
    with pytest.raises(RequestRefused) as info:
        await decide(node, pid, outcome, **kwargs)
    return info.value.code


async def test_without_a_supervision_end_the_review_falls_on_the_fallback_rule(
    prison: Node, probation: Node
) -> None:
    before = probation.clock()
    packet = await receive(prison, probation, release_notice())
    after = probation.clock()
    assert await review_of(probation, packet.pid, add_months(before, 72) - DAY) is None
    item = await review_of(probation, packet.pid, add_months(after, 72))
    assert item is not None
    assert add_months(before, 72) <= item["review_at"] <= add_months(after, 72)
    assert (item["direction"], item["sender"], item["restricted"]) == ("received", PRISON, None)


async def test_a_supervision_end_moves_the_reviews_of_the_case(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    packet = await receive(prison, probation, notice)
    end = in_days(30)
    ending = body("handover/supervision-end/1", case_ref=notice["case_ref"], end_date=end)
    (sent,) = await send(probation, [PRISON], "handover/supervision-end/1", ending)
    due = add_months(date_ms(end), 24)  # the default rule: 24 months after the end
    assert await review_of(probation, packet.pid, due - DAY) is None
    items = {pid: await review_of(probation, pid, due) for pid in (packet.pid, sent["pid"])}
    assert {pid: item and item["review_at"] for pid, item in items.items()} == {
        packet.pid: due,
        sent["pid"]: due,
    }


async def test_extend_sets_a_later_review_that_a_recomputed_rule_cannot_bring_forward(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    packet = await receive(prison, probation, notice)
    await make_due(probation, packet.pid)
    later = in_days(2000)
    state = await decide(probation, packet.pid, "EXTEND", new_date=later)
    assert state["review_at"] == date_ms(later) and state["erased"] is False
    (entry,) = [
        e for e in await audit_entries(probation, pid=packet.pid) if e["op"] != "collection"
    ]
    assert (entry["op"], entry["outcome"], entry["changed"]) == (
        "alteration",
        "EXTEND",
        ["review_at"],
    )
    assert (entry["operator"], entry["justification"]) == (CASEWORKER.name, WHY)

    ending = body("handover/supervision-end/1", case_ref=notice["case_ref"], end_date=in_days(1))
    await send(probation, [PRISON], "handover/supervision-end/1", ending)
    assert await review_of(probation, packet.pid, date_ms(later) - DAY) is None
    assert await review_of(probation, packet.pid, date_ms(later)) is not None


@pytest.mark.parametrize(
    ("outcome", "kwargs", "code"),
    [
        ("KEEP", {}, ErrorCode.BAD_REQUEST),
        ("EXTEND", {}, ErrorCode.BAD_REQUEST),
        ("EXTEND", {"new_date": "2001-01-01"}, ErrorCode.BAD_REQUEST),
        ("EXTEND", {"new_date": "soon"}, ErrorCode.BAD_REQUEST),
        ("EXTEND", {"new_date": "2999-01-01", "reason": "x"}, ErrorCode.BAD_REQUEST),
        ("EXTEND", {"new_date": "2199-01-01"}, ErrorCode.EXTENSION_TOO_LONG),
        ("EXTEND", {"new_date": in_days(30)}, ErrorCode.FORBIDDEN),
        ("EXTEND", {"new_date": in_days(30), "operator": ADMIN}, ErrorCode.REASON_REQUIRED),
        ("ERASE", {}, ErrorCode.FORBIDDEN),
        ("ERASE", {"operator": ADMIN}, ErrorCode.REASON_REQUIRED),
        ("ERASE", {"operator": ADMIN, "reason_code": "BORED"}, ErrorCode.BAD_REQUEST),
        ("ERASE", {"new_date": "2999-01-01"}, ErrorCode.BAD_REQUEST),
        ("RESTRICT", {}, ErrorCode.REASON_REQUIRED),
        ("RESTRICT", {"reason": " "}, ErrorCode.REASON_REQUIRED),
        ("ERASE", {"justification": ""}, ErrorCode.JUSTIFICATION_REQUIRED),
        ("ERASE", {"direction": "sideways"}, ErrorCode.BAD_REQUEST),
        ("ERASE", {"direction": "sent"}, ErrorCode.NOT_FOUND),
        ("LIFT", {}, ErrorCode.FORBIDDEN),
        ("LIFT", {"operator": ADMIN}, ErrorCode.NOT_RESTRICTED),
    ],
)
async def test_a_decision_that_cannot_be_taken_is_refused_and_changes_nothing(
    prison: Node, probation: Node, outcome: str, kwargs: dict[str, Any], code: ErrorCode
) -> None:
    packet = await receive(prison, probation, release_notice())
    assert await refused(probation, packet.pid, outcome, **kwargs) is code
    assert [e["op"] for e in await audit_entries(probation, pid=packet.pid)] == ["collection"]
    state = await probation.retention.find(packet.pid)
    assert (state.restricted, state.erased_at) == (None, None)


async def test_an_unknown_pid_is_not_found(probation: Node) -> None:
    assert await refused(probation, "AAAAAAAAAAAAAAAAAAAAAA", "ERASE") is ErrorCode.NOT_FOUND


async def test_a_pid_held_both_ways_must_be_told_apart(prison: Node, probation: Node) -> None:
    # probation sent a packet with this pid; prison then (legitimately) chose the same one.
    ending = body("handover/supervision-end/1")
    (sent,) = await send(probation, [PRISON], "handover/supervision-end/1", ending)
    packet = seal_from(prison, probation, RELEASE_NOTICE, release_notice(), pid=sent["pid"])
    await probation.receiver.receive_many([packet.wire])
    assert await refused(probation, packet.pid, "ERASE") is ErrorCode.AMBIGUOUS
    await make_due(probation, packet.pid)
    state = await decide(probation, packet.pid, "ERASE", direction="received", sender=PRISON)
    assert (state["direction"], state["erased"]) == ("received", True)
    assert (await probation.retention.find(packet.pid, "sent")).erased_at is None


async def test_restrict_withholds_the_content_until_an_admin_lifts_it(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    packet = await receive(prison, probation, notice)
    at = probation.clock()
    state = await decide(probation, packet.pid, "RESTRICT", reason="accuracy contested")
    assert state["restricted"] == "accuracy contested"
    assert add_months(at, 72) <= state["review_at"] <= add_months(probation.clock(), 72)
    with pytest.raises(RequestRefused) as info:
        await probation.inbox.read(CASEWORKER, packet.pid, WHY)
    assert info.value.code is ErrorCode.RESTRICTED
    (item,) = await probation.inbox.list(limit=5, before=None, case_ref=notice["case_ref"])
    assert item["restricted"] is True

    assert await refused(probation, packet.pid, "LIFT") is ErrorCode.FORBIDDEN
    state = await decide(probation, packet.pid, "LIFT", operator=ADMIN)
    assert state["restricted"] is None
    assert (await probation.inbox.read(CASEWORKER, packet.pid, WHY))["body"] == notice
    ops = [(e["op"], e.get("outcome")) for e in await audit_entries(probation, pid=packet.pid)]
    # The refused read is not a consultation: nothing was shown.
    assert ops == [
        ("collection", None),
        ("alteration", "RESTRICT"),
        ("alteration", "LIFT"),
        ("consultation", None),
    ]


async def test_erase_clears_the_content_and_keeps_the_replay_record(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    packet = await receive(prison, probation, notice)
    (first,) = await probation.receiver.receive_many([packet.wire])
    # Before the review is due, erasure is an admin's proposal; once due, a caseworker's.
    assert await refused(probation, packet.pid, "ERASE") is ErrorCode.FORBIDDEN
    await make_due(probation, packet.pid)
    state = await decide(probation, packet.pid, "ERASE")
    assert state["erased"] is True
    erasure = (await audit_entries(probation, pid=packet.pid))[-1]
    assert (erasure["op"], erasure["fields"]) == ("erasure", sorted(notice))
    assert notice["police_national_id"] not in str(erasure)

    with pytest.raises(RequestRefused) as info:
        await probation.inbox.read(CASEWORKER, packet.pid, WHY)
    assert info.value.code is ErrorCode.ERASED
    (item,) = await probation.inbox.list(limit=5, before=None, case_ref=notice["case_ref"])
    assert item["erased"] is True
    assert await refused(probation, packet.pid, "ERASE") is ErrorCode.ERASED
    assert await review_of(probation, packet.pid, add_months(probation.clock(), 100)) is None

    # A retry of the erased packet gets its first receipt and does not bring the content back.
    (again,) = await probation.receiver.receive_many([packet.wire])
    assert again.receipt == first.receipt
    with pytest.raises(RequestRefused):
        await probation.inbox.read(CASEWORKER, packet.pid, WHY)


async def test_erase_is_not_blocked_by_a_body_that_cannot_be_decrypted(
    prison: Node, probation: Node
) -> None:
    packet = await receive(prison, probation, release_notice())
    async with probation.db.connection() as conn:
        await conn.execute(
            "UPDATE received SET body_box = $1 WHERE sender = $2 AND pid = $3",
            bytes(64),
            PRISON,
            packet.pid,
        )
    await make_due(probation, packet.pid)
    state = await decide(probation, packet.pid, "ERASE")
    assert state["erased"] is True
    erasure = (await audit_entries(probation, pid=packet.pid))[-1]
    assert erasure["op"] == "erasure" and "fields" not in erasure
