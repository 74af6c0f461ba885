"""A whole case walked across three real nodes (the issue's acceptance tests).

Three `handover serve` processes, prison.example (prison), probation.example
(probation) and exit.example (exit organisation), exchange every packet of one
case through the local API: release-notice (minimised for the exit
organisation), consent, condition-update, care-acknowledgement, responsibility
agreement, progress summaries under and without SHARE_PROGRESS consent, a
risk-of-harm alert, rectification, supervision end, a retention review and
erasure, `audit verify --peers`, and a subject access export on each side.

The nodes run a policy override whose retention rules are zero months after the
supervision end (the fallback, while no supervision end is known, stays 72
months after storing), so a case's packets fall due for review exactly when its
supervision-end arrives.

The second test is a release-notice nobody answers: its continuity-of-care
expectation shows up as overdue in the API, the CLI and the metrics.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import secrets
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from federation import Federation, NodeProcess, example, run_cli
from handover.protocol.timeutil import DAY_MS
from handover.workflow.engine import date_ms
from handover.workflow.policy import default_policy_path
from test_openapi import check_answer

PRISON, PROBATION, EXIT = "prison.example", "probation.example", "exit.example"
NODES = (PRISON, PROBATION, EXIT)

RELEASE_NOTICE = "handover/release-notice/1"
CONDITION_UPDATE = "handover/condition-update/1"
CARE_ACK = "handover/care-acknowledgement/1"
AGREEMENT = "handover/responsibility-agreement/1"
CONSENT = "handover/consent-record/1"
PROGRESS = "handover/progress-summary/1"
RISK_ALERT = "handover/risk-of-harm-alert/1"
SUPERVISION_END = "handover/supervision-end/1"
RECTIFICATION = "handover/rectification-notice/1"

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CASE_REF = re.compile(r"^HC-[0-9A-HJKMNP-TV-Z]{26}$")
DEADLINE_DAYS = 14  # continuity.deadline_days_before_release of the default policy

# What the exit organisation's view of a release-notice lacks (docs/domain.md matrix).
EXIT_REMOVED = frozenset(
    {
        "identifiers",
        "police_national_id",
        "release_address",
        "exclusion_zones",
        "risk_detail",
        "flags",
        "confirmed_release_date",
        "release_date_type",
        "release_reason",
        "sentence_dates",
    }
)
# Values of the release-notice example that must never reach the exit organisation.
EXIT_NEVER = ("A4821DZ", "N482913", "2016/0482913K", "Elm Lodge", "Eastgate", "ERG22+")

# Ledger of disclosures: sender -> {(pid, recipient)}, filled as the walk goes.
Ledger = dict[str, set[tuple[str, str]]]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(
        tmp_path_factory.mktemp("walk"),
        [(PRISON, "prison"), (PROBATION, "probation"), (EXIT, "exit")],
    )
    policy = json.loads(default_policy_path().read_text("utf-8"))
    zero = {"anchor": "supervision_end", "months": 0}
    policy["retention"]["default"] = dict(zero)
    policy["retention"]["schemas"] = {name: dict(zero) for name in policy["retention"]["schemas"]}
    assert policy["retention"]["fallback"]["months"] > 0  # nothing falls due before the end
    for node in federation.nodes.values():
        (node.dir / "policy.json").write_text(json.dumps(policy), "utf-8")
        with open(node.dir / "handover.toml", "a", encoding="utf-8") as toml:
            toml.write('policy_file = "policy.json"\n')
    federation.start()
    yield federation
    federation.stop()


# --- bodies ---------------------------------------------------------------------------------


def new_case() -> str:
    ref = "HC-" + "".join(secrets.choice(CROCKFORD) for _ in range(26))
    assert CASE_REF.match(ref)
    return ref


def day(offset: int = 0) -> str:
    """Today (UTC) plus `offset` days, as YYYY-MM-DD."""
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=offset)).isoformat()


def quality(source: str, as_of: str | None = None, basis: str = "FACT") -> dict[str, str]:
    return {"as_of": as_of or day(), "source_system": source, "basis": basis}


# The risk narrative is an assessment, never FACT (LED Art 7(2), issue 16 finding 8).
NARRATIVE = {"group": "risk_narrative", "basis": "ASSESSMENT"}


def release_notice(case: str, release_date: str) -> dict[str, Any]:
    """The release-notice example with the most fields, without what needs
    FAMILY_INVOLVEMENT consent (`family_contact`) and without `supersedes` (the
    case's first notice replaces none)."""
    body = example(RELEASE_NOTICE, 3)
    del body["family_contact"], body["supersedes"]
    body.update(
        case_ref=case,
        quality={**quality("NOMIS"), "groups": [NARRATIVE]},
        expected_release_date=release_date,
        confirmed_release_date=release_date,
    )
    return body


def exit_removed(body: dict[str, Any]) -> list[str]:
    """What the policy removes for an exit organisation: the fields of EXIT_REMOVED and
    the resettlement notes (special category, LED Art 10)."""
    notes = [
        f"resettlement[{i}].notes"
        for i, item in enumerate(body.get("resettlement", []))
        if "notes" in item
    ]
    return sorted([*EXIT_REMOVED, *notes])


def exit_view(body: dict[str, Any]) -> dict[str, Any]:
    """The release-notice an exit organisation may receive, computed independently."""
    view = {k: copy.deepcopy(v) for k, v in body.items() if k not in EXIT_REMOVED}
    view["risk"] = {k: v for k, v in body["risk"].items() if k in ("overall_level", "at_risk")}
    for item in view.get("resettlement", []):
        item.pop("notes", None)
    return view


def consent(case: str, scope: str, consent_id: str, withdrawn: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "case_ref": case,
        "quality": quality("exit-casework"),
        "consent_id": consent_id,
        "scope": scope,
        "state": "WITHDRAWN" if withdrawn else "GIVEN",
        "basis": "VOLUNTARY",
        "given_at": day(-20),
        "recipients": [PROBATION, PRISON],
    }
    if withdrawn:
        body["withdrawn_at"] = day()
    return body


def agreement(case: str) -> dict[str, Any]:
    body = example(AGREEMENT, 0)
    for party, node in zip(body["parties"], NODES, strict=True):
        party["node"] = node
    assert [p["kind"] for p in body["parties"]] == ["prison", "probation", "exit"]
    body.update(case_ref=case, quality=quality("nDelius"), valid_from=day(-10))
    return body


# --- API helpers ---------------------------------------------------------------------------


def submit(
    node: NodeProcess,
    to: list[str],
    schema: str,
    body: dict[str, Any],
    justification: str,
    minimise: bool = False,
) -> tuple[int, Any]:
    payload: dict[str, Any] = {
        "to": to,
        "schema": schema,
        "body": body,
        "justification": justification,
    }
    if minimise:
        payload["minimise"] = True
    answer = node.api("POST", "/api/v1/packets", payload)
    check_answer("POST", "/api/v1/packets", *answer)
    return answer


def record(ledger: Ledger, sender: str, packets: list[dict[str, Any]]) -> None:
    for packet in packets:
        for node in packet["to"]:
            ledger[sender].add((packet["pid"], node))


def delivered(sender: NodeProcess, *pids: str) -> None:
    for pid in pids:
        packet = sender.wait_delivered(pid)
        assert packet["deliveries"], packet
        assert {d["status"] for d in packet["deliveries"]} == {"delivered"}, packet


def send(
    ledger: Ledger,
    node: NodeProcess,
    to: list[str],
    schema: str,
    body: dict[str, Any],
    justification: str,
    minimise: bool = False,
) -> list[dict[str, Any]]:
    """Submit, expect 202, record the disclosures and wait until each is delivered."""
    status, answer = submit(node, to, schema, body, justification, minimise)
    assert status == 202, (status, answer)
    packets: list[dict[str, Any]] = answer["packets"]
    record(ledger, node.node, packets)
    delivered(node, *(p["pid"] for p in packets))
    return packets


def send_one(
    ledger: Ledger,
    node: NodeProcess,
    to: list[str],
    schema: str,
    body: dict[str, Any],
    justification: str,
) -> str:
    (packet,) = send(ledger, node, to, schema, body, justification)
    assert sorted(packet["to"]) == sorted(to) and packet["removed"] == []
    pid: str = packet["pid"]
    return pid


def read(node: NodeProcess, pid: str) -> tuple[int, Any]:
    why = urllib.parse.quote("supervision and continuity of care for the shared case")
    answer = node.api("GET", f"/api/v1/inbox/{pid}?justification={why}")
    check_answer("GET", "/api/v1/inbox/{pid}", *answer)
    return answer


def body_of(node: NodeProcess, pid: str, sender: str) -> dict[str, Any]:
    status, opened = read(node, pid)
    assert status == 200, (node.node, status, opened)
    assert opened["sender"] == sender and opened["pid"] == pid, opened
    body: dict[str, Any] = opened["body"]
    return body


def show(node: NodeProcess, case: str) -> dict[str, Any]:
    status, view = node.api("GET", f"/api/v1/cases/{case}")
    check_answer("GET", "/api/v1/cases/{ref}", status, view)
    assert status == 200, (node.node, status, view)
    assert view["case_ref"] == case
    result: dict[str, Any] = view
    return result


def expectations(node: NodeProcess, case: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["pid"], e["node"]): e for e in show(node, case)["expectations"]}


def overdue(node: NodeProcess) -> list[dict[str, Any]]:
    status, answer = node.api("GET", "/api/v1/overdue")
    check_answer("GET", "/api/v1/overdue", status, answer)
    assert status == 200, answer
    items: list[dict[str, Any]] = answer["items"]
    return items


def overdue_in(node: NodeProcess, case: str) -> set[tuple[str, str]]:
    return {(i["pid"], i["node"]) for i in overdue(node) if i["case_ref"] == case}


def due_in(node: NodeProcess, case: str) -> dict[tuple[str, str], dict[str, Any]]:
    status, page = node.api("GET", "/api/v1/reviews")
    check_answer("GET", "/api/v1/reviews", status, page)
    assert status == 200 and page["truncated"] is False, page
    return {(i["pid"], i["direction"]): i for i in page["items"] if i["case_ref"] == case}


def held_in(node: NodeProcess, case: str) -> set[tuple[str, str]]:
    """(pid, direction) of every packet of the case the node holds, not erased (SQL)."""
    sent = node.sql("SELECT pid FROM outbox WHERE case_ref = $1 AND erased_at IS NULL", case)
    received = node.sql(
        "SELECT pid FROM received WHERE case_ref = $1 AND status = 'accepted'"
        " AND erased_at IS NULL",
        case,
    )
    return {(r["pid"], "sent") for r in sent} | {(r["pid"], "received") for r in received}


def outbox_consents(node: NodeProcess, pid: str) -> list[str]:
    (row,) = node.sql("SELECT consents FROM outbox WHERE pid = $1", pid)
    return list(row["consents"] or [])


def acknowledge(ledger: Ledger, node: NodeProcess, case: str, agreement_id: str) -> None:
    path = "/api/v1/cases/{ref}/agreements/{agreement_id}/acknowledge"
    status, answer = node.api(
        "POST",
        path.format(ref=case, agreement_id=agreement_id),
        {"justification": "we agree to our part of the arrangement"},
    )
    check_answer("POST", path, status, answer)
    assert status == 202, (node.node, status, answer)
    (packet,) = answer["packets"]
    assert sorted(packet["to"]) == sorted(n for n in NODES if n != node.node), packet
    record(ledger, node.node, answer["packets"])
    delivered(node, packet["pid"])


def export(node: NodeProcess, case: str) -> dict[str, Any]:
    why = urllib.parse.quote("subject access request SAR-WALK received by letter")
    path = "/api/v1/cases/{ref}/export"
    status, answer = node.api("GET", f"{path.format(ref=case)}?justification={why}")
    check_answer("GET", path, status, answer)
    assert status == 200, (node.node, status, answer)
    result: dict[str, Any] = answer
    return result


def audit_ops(node: NodeProcess, pid: str, op: str) -> list[dict[str, Any]]:
    rows = node.sql("SELECT entry FROM audit_log WHERE pid = $1 AND op = $2 ORDER BY seq", pid, op)
    return [json.loads(r["entry"]) for r in rows]


def metric(node: NodeProcess, name: str) -> float:
    status, raw = node.request("GET", "/metrics")
    assert status == 200
    text = raw.decode("utf-8")
    found = re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE)
    assert len(found) == 1, f"{name} not exported exactly once:\n{text}"
    return float(found[0])


# --- the walk ------------------------------------------------------------------------------


def test_a_whole_case_walks_from_release_notice_to_erasure_and_subject_access(
    fed: Federation,
) -> None:
    prison, probation, exit_org = fed[PRISON], fed[PROBATION], fed[EXIT]
    case = new_case()
    ledger: Ledger = {node: set() for node in NODES}
    released = day(-10)  # past: the deadline (release - 14 days) has passed

    # 1. release-notice: probation gets the full body, the exit organisation the minimised one.
    release = release_notice(case, released)
    assert set(release) >= EXIT_REMOVED | {"risk", "phase", "expected_release_date"}
    status, answer = submit(
        prison, [PROBATION, EXIT], RELEASE_NOTICE, release, "release planning", minimise=False
    )
    assert status == 422 and answer["error"] == "not_permitted", answer  # no silent reduction
    assert EXIT in answer["message"] and "minimise" in answer["message"]
    assert not prison.sql("SELECT pid FROM outbox WHERE case_ref = $1", case)
    packets = send(
        ledger,
        prison,
        [PROBATION, EXIT],
        RELEASE_NOTICE,
        release,
        f"release planning for case {case}",
        minimise=True,
    )
    views = {tuple(p["to"]): p for p in packets}
    assert set(views) == {(PROBATION,), (EXIT,)}, packets
    rn_probation, rn_exit = views[(PROBATION,)]["pid"], views[(EXIT,)]["pid"]
    assert views[(PROBATION,)]["removed"] == []
    assert sorted(views[(EXIT,)]["removed"]) == exit_removed(release)

    full = body_of(probation, rn_probation, PRISON)
    assert sorted(full) == sorted(release)
    for name, value in release.items():
        assert full[name] == value, f"probation's release-notice differs in {name}"
    reduced = body_of(exit_org, rn_exit, PRISON)
    for name in EXIT_REMOVED:
        assert name not in reduced, f"exit received {name}"
    assert reduced["risk"] == {
        "overall_level": release["risk"]["overall_level"],
        "at_risk": release["risk"]["at_risk"],
    }
    for name in ("case_ref", "phase", "quality", "expected_release_date", "prison_id"):
        assert reduced[name] == release[name], f"exit's release-notice differs in {name}"
    assert reduced == exit_view(release)
    assert not [v for v in EXIT_NEVER if v in json.dumps(reduced)]
    assert read(exit_org, rn_probation)[0] == 404  # the full view never went there
    (row,) = prison.sql("SELECT fields, removed FROM outbox WHERE pid = $1", rn_exit)
    assert sorted(row["removed"]) == exit_removed(release)
    assert sorted(row["fields"]) == sorted(exit_view(release))

    # Both continuity-of-care answers are past their deadline on the prison.
    deadline = date_ms(released) - DEADLINE_DAYS * DAY_MS
    items = {(i["pid"], i["node"]): i for i in overdue(prison) if i["case_ref"] == case}
    assert set(items) == {(rn_probation, PROBATION), (rn_exit, EXIT)}, items
    assert items[(rn_probation, PROBATION)]["expected"] == [CONDITION_UPDATE]
    assert items[(rn_exit, EXIT)]["expected"] == [CARE_ACK]
    assert {i["deadline"] for i in items.values()} == {deadline}
    assert {e["state"] for e in expectations(prison, case).values()} == {"overdue"}
    assert overdue_in(probation, case) == set() and overdue_in(exit_org, case) == set()

    # 2. consent for exit engagement, recorded on every node.
    engagement = send_one(
        ledger,
        exit_org,
        [PROBATION, PRISON],
        CONSENT,
        consent(case, "EXIT_ENGAGEMENT", "C-WALK-ENGAGE"),
        "client agreed to work with the exit programme",
    )
    for node in (prison, probation, exit_org):
        consents = show(node, case)["consents"]
        assert set(consents) == {"EXIT_ENGAGEMENT"}, (node.node, consents)
        assert consents["EXIT_ENGAGEMENT"] == {
            "state": "GIVEN",
            "consent_id": "C-WALK-ENGAGE",
            "basis": "VOLUNTARY",
            "pid": engagement,
            "author": EXIT,
        }, node.node

    # 3. condition-update: exit-related conditions only, and only with INCLUDE_IN_CONDITIONS.
    conditions = {**example(CONDITION_UPDATE), "case_ref": case, "quality": quality("nDelius")}
    why_conditions = f"licence conditions for case {case}"
    status, answer = submit(
        probation, [PRISON, EXIT], CONDITION_UPDATE, conditions, why_conditions, minimise=True
    )
    assert status == 422 and answer["error"] == "consent_required", answer
    assert "INCLUDE_IN_CONDITIONS" in answer["message"] and EXIT in answer["message"]
    assert not probation.sql("SELECT pid FROM outbox WHERE schema_id = $1", CONDITION_UPDATE)
    send_one(
        ledger,
        exit_org,
        [PROBATION, PRISON],
        CONSENT,
        consent(case, "INCLUDE_IN_CONDITIONS", "C-WALK-CONDITIONS"),
        "client agreed that exit-related conditions are shared",
    )
    packets = send(
        ledger,
        probation,
        [PRISON, EXIT],
        CONDITION_UPDATE,
        conditions,
        why_conditions,
        minimise=True,
    )
    views = {tuple(p["to"]): p for p in packets}
    assert set(views) == {(PRISON,), (EXIT,)}, packets
    cu_prison, cu_exit = views[(PRISON,)]["pid"], views[(EXIT,)]["pid"]
    assert views[(PRISON,)]["removed"] == []
    assert sorted(views[(EXIT,)]["removed"]) == [
        "conditions[0]",
        "conditions[2]",
        "first_appointment",
    ]
    assert body_of(prison, cu_prison, PROBATION) == conditions
    for_exit = body_of(exit_org, cu_exit, PROBATION)
    exit_related = [c for c in conditions["conditions"] if c["exit_related"]]
    assert exit_related and len(exit_related) < len(conditions["conditions"])
    assert for_exit["conditions"] == exit_related
    assert all(c["exit_related"] is True for c in for_exit["conditions"])
    assert "first_appointment" not in for_exit
    assert for_exit == {
        k: v for k, v in conditions.items() if k != "first_appointment" and k != "conditions"
    } | {"conditions": exit_related}
    assert outbox_consents(probation, cu_exit) == ["INCLUDE_IN_CONDITIONS"]
    # Probation's answer clears its own expectation, not the exit organisation's.
    expected = expectations(prison, case)
    assert expected[(rn_probation, PROBATION)]["state"] == "acknowledged"
    assert expected[(rn_probation, PROBATION)]["answered_by"] == cu_prison
    assert expected[(rn_exit, EXIT)]["state"] == "overdue"
    assert overdue_in(prison, case) == {(rn_exit, EXIT)}

    # 4. care-acknowledgement from the exit organisation clears the last overdue item.
    care = {
        **example(CARE_ACK, 0),
        "case_ref": case,
        "quality": quality("exit-casework"),
        "in_reply_to": rn_exit,
        "in_reply_to_schema": RELEASE_NOTICE,
        "first_contact_date": day(-5),
    }
    ack = send_one(
        ledger, exit_org, [PRISON, PROBATION], CARE_ACK, care, "continuity of care accepted"
    )
    assert body_of(prison, ack, EXIT)["in_reply_to"] == rn_exit
    expected = expectations(prison, case)
    assert expected[(rn_exit, EXIT)]["state"] == "acknowledged"
    assert expected[(rn_exit, EXIT)]["answered_by"] == ack
    assert overdue_in(prison, case) == set()
    assert all(i["case_ref"] != case for i in overdue(prison))
    (listed,) = [c for c in prison.api("GET", "/api/v1/cases")[1]["items"] if c["case_ref"] == case]
    assert listed["overdue"] is False

    # 5. responsibility agreement: sent by probation, acknowledged by the other two.
    arrangement = agreement(case)
    agreement_id = arrangement["agreement_id"]
    send_one(
        ledger,
        probation,
        [PRISON, EXIT],
        AGREEMENT,
        arrangement,
        "who is responsible for what in this case",
    )
    for node in (prison, probation, exit_org):
        current = show(node, case)["agreement"]
        assert current is not None, node.node
        assert current["agreement_id"] == agreement_id and current["author"] == PROBATION
        assert current["parties"] == list(NODES)
        assert current["pending"] == [PRISON, EXIT], (node.node, current)
    acknowledge(ledger, prison, case, agreement_id)
    assert show(probation, case)["agreement"]["pending"] == [EXIT]
    acknowledge(ledger, exit_org, case, agreement_id)
    for node in (prison, probation, exit_org):
        current = show(node, case)["agreement"]
        assert current["pending"] == [], (node.node, current)
        assert current["acknowledged"] == sorted(NODES), (node.node, current)
        assert current["revision"] == 1

    # 6. progress-summary: refused before SHARE_PROGRESS, accepted under it, refused after
    #    it is withdrawn; probation, which received progress under it, hears of the withdrawal.
    progress = {**example(PROGRESS, 0), "case_ref": case}
    del progress["consent_pid"]
    why_progress = "progress report to the supervising officer"
    status, answer = submit(exit_org, [PROBATION], PROGRESS, progress, why_progress)
    assert status == 422 and answer["error"] == "consent_required", answer
    assert "SHARE_PROGRESS" in answer["message"]
    assert not exit_org.sql("SELECT pid FROM outbox WHERE schema_id = $1", PROGRESS)
    share = send_one(
        ledger,
        exit_org,
        [PROBATION, PRISON],
        CONSENT,
        consent(case, "SHARE_PROGRESS", "C-WALK-PROGRESS"),
        "client agreed that progress is shared",
    )
    progress = {**progress, "consent_pid": share}
    summary = send_one(ledger, exit_org, [PROBATION], PROGRESS, progress, why_progress)
    assert body_of(probation, summary, EXIT) == progress
    assert outbox_consents(exit_org, summary) == ["SHARE_PROGRESS"]

    (withdrawal,) = send(
        ledger,
        exit_org,
        [PRISON],
        CONSENT,
        consent(case, "SHARE_PROGRESS", "C-WALK-PROGRESS", withdrawn=True),
        "client withdrew consent to share progress",
    )
    # Addressed to the prison only; probation received data under the consent, so it is told.
    assert sorted(withdrawal["to"]) == [PRISON, PROBATION], withdrawal
    assert body_of(probation, withdrawal["pid"], EXIT)["state"] == "WITHDRAWN"
    for node in (prison, probation, exit_org):
        share_state = show(node, case)["consents"]["SHARE_PROGRESS"]
        assert share_state["state"] == "WITHDRAWN", node.node
        assert share_state["pid"] == withdrawal["pid"], node.node
    status, answer = submit(exit_org, [PROBATION], PROGRESS, progress, why_progress)
    assert status == 422 and answer["error"] == "consent_required", answer
    (count,) = exit_org.sql("SELECT count(*) AS n FROM outbox WHERE schema_id = $1", PROGRESS)
    assert count["n"] == 1

    # 7. risk-of-harm alert: sent and accepted whatever the consent.
    alert = {**example(RISK_ALERT, 0), "case_ref": case, "quality": quality("exit-casework")}
    risk = send_one(
        ledger, exit_org, [PROBATION], RISK_ALERT, alert, "risk of harm to a known adult"
    )
    assert body_of(probation, risk, EXIT) == alert
    assert outbox_consents(exit_org, risk) == []

    # 8. rectification of both release-notice views; each recipient applies it and the
    #    prison sees both acknowledgements.
    corrected = copy.deepcopy(release)
    corrected["risk"]["overall_level"] = "MEDIUM"
    corrected["quality"] = {**quality("NOMIS"), "groups": [NARRATIVE]}
    assert release["risk"]["overall_level"] != "MEDIUM"
    notices: dict[str, str] = {}
    path = "/api/v1/packets/{pid}/rectify"
    for target, holder, removed in (
        (rn_probation, PROBATION, []),
        (rn_exit, EXIT, exit_removed(release)),
    ):
        status, answer = prison.api(
            "POST",
            path.format(pid=target),
            {
                "action": "RECTIFY",
                "reason": "INACCURATE",
                "explanation": "The risk level was reassessed as medium before release.",
                "corrected_body": corrected,
                "justification": "risk level recorded wrongly in the release-notice",
            },
        )
        check_answer("POST", path, status, answer)
        assert status == 202, answer
        (notice,) = answer["packets"]
        assert notice["to"] == [holder] and sorted(notice["removed"]) == removed, notice
        record(ledger, PRISON, answer["packets"])
        delivered(prison, notice["pid"])
        notices[holder] = notice["pid"]
    for target, holder in ((rn_probation, PROBATION), (rn_exit, EXIT)):
        path = "/api/v1/packets/{pid}/rectifications"
        status, state = prison.api("GET", path.format(pid=target))
        check_answer("GET", path, status, state)
        assert status == 200 and state["acknowledged"] is True, state
        (item,) = state["rectifications"]
        assert item["action"] == "RECTIFY" and item["reason"] == "INACCURATE"
        (recipient,) = item["recipients"]
        assert recipient["node"] == holder and recipient["notice_pid"] == notices[holder]
        assert recipient["acknowledged"] is True and recipient["status"] == "delivered"
        assert recipient["receipt"] is not None
    assert body_of(probation, rn_probation, PRISON) == corrected
    assert body_of(exit_org, rn_exit, PRISON) == exit_view(corrected)
    for node, target, holder in ((probation, rn_probation, PROBATION), (exit_org, rn_exit, EXIT)):
        (held,) = [p for p in show(node, case)["received"] if p["pid"] == target]
        assert held["rectified_by"] == notices[holder], held
    notice_for_exit = body_of(exit_org, notices[EXIT], PRISON)
    assert notice_for_exit["corrected_body"] == exit_view(corrected)

    # 9. supervision end: only now does what the case holds fall due for review.
    for node in (prison, probation, exit_org):
        assert due_in(node, case) == {}, node.node
    ended = day(-1)
    end = {
        **example(SUPERVISION_END, 0),
        "case_ref": case,
        "quality": quality("nDelius", ended),
        "end_date": ended,
    }
    supervision_end = send_one(
        ledger, probation, [EXIT, PRISON], SUPERVISION_END, end, "supervision has ended"
    )
    for node in (prison, probation, exit_org):
        assert show(node, case)["supervision_end"] == ended, node.node
    due = due_in(exit_org, case)
    assert set(due) == held_in(exit_org, case), sorted(set(due) ^ held_in(exit_org, case))
    assert {(rn_exit, "received"), (supervision_end, "received"), (ack, "sent")} <= set(due)
    assert {i["review_at"] for i in due.values()} == {date_ms(ended)}
    assert set(due_in(prison, case)) == held_in(prison, case)

    # 10. ERASE the exit organisation's release-notice: the content is gone.
    path = "/api/v1/reviews/{pid}"
    status, state = exit_org.api(
        "POST",
        path.format(pid=rn_exit),
        {"outcome": "ERASE", "justification": "no longer needed after supervision ended"},
    )
    check_answer("POST", path, status, state)
    assert status == 200 and state["erased"] is True, state
    assert read(exit_org, rn_exit)[0] == 410
    (row,) = exit_org.sql(
        "SELECT wire, body_box, erased_at, pd FROM received WHERE pid = $1", rn_exit
    )
    assert row["wire"] is None and row["body_box"] is None and row["erased_at"] is not None
    assert row["pd"] is not None  # the replay record stays
    # The notice carrying its corrected copy goes with it.
    assert read(exit_org, notices[EXIT])[0] == 410
    due = due_in(exit_org, case)
    assert (rn_exit, "received") not in due and (notices[EXIT], "received") not in due
    (erasure,) = audit_ops(exit_org, rn_exit, "erasure")
    assert erasure["justification"] == "no longer needed after supervision ended"
    assert "Eastgate" not in json.dumps(erasure) and "MEDIUM" not in json.dumps(erasure)

    # 11. every node's audit log verifies, and so do its peers' logs.
    for node in (prison, probation, exit_org):
        report = json.loads(run_cli("audit", "verify", "--dir", str(node.dir), "--peers").stdout)
        assert report["ok"] is True and report["chain"]["ok"] is True, report
        assert sorted(p["node"] for p in report["peers"]) == sorted(set(NODES) - {node.node})
        assert all(p["ok"] for p in report["peers"]), report

    # 12. subject access: the prison lists every disclosure it made for the case ...
    assert len(ledger[PRISON]) == 6  # 2 release-notice views, 2 notices, 1 ack to 2 parties
    sar = export(prison, case)
    assert sar["node"] == PRISON and sar["case"]["case_ref"] == case
    disclosed = {(r["pid"], r["node"]) for r in sar["recipients"]}
    on_record = {
        (r["pid"], r["node"])
        for r in prison.sql(
            "SELECT d.pid, d.node FROM deliveries d JOIN outbox o USING (pid)"
            " WHERE o.case_ref = $1",
            case,
        )
    }
    assert disclosed == ledger[PRISON] == on_record, (disclosed, ledger[PRISON], on_record)
    assert len(sar["recipients"]) == len(disclosed)  # one line per disclosure and recipient
    assert all(r["status"] == "delivered" and r["justification"] for r in sar["recipients"])
    by_pid = {r["pid"]: r for r in sar["recipients"]}
    assert sorted(by_pid[rn_exit]["withheld"]) == exit_removed(release)
    assert by_pid[rn_probation]["withheld"] == []
    assert {s["pid"] for s in sar["sent"]} == {pid for pid, _ in ledger[PRISON]}
    received_by_prison = {pid for sender in NODES for pid, to in ledger[sender] if to == PRISON}
    assert {r["pid"] for r in sar["received"]} == received_by_prison

    # ... and the exit organisation lists what it holds, the erased item without content.
    sar = export(exit_org, case)
    received_by_exit = {pid for sender in NODES for pid, to in ledger[sender] if to == EXIT}
    held = {r["pid"]: r for r in sar["received"]}
    assert set(held) == received_by_exit, sorted(set(held) ^ received_by_exit)
    assert set(held) == {
        r["pid"]
        for r in exit_org.sql(
            "SELECT pid FROM received WHERE case_ref = $1 AND status = 'accepted'", case
        )
    }
    assert {rn_exit, cu_exit, supervision_end, notices[EXIT]} <= set(held)
    for pid in (rn_exit, notices[EXIT]):
        assert held[pid]["erased"] is True and "body" not in held[pid], held[pid]
    assert held[cu_exit]["body"]["conditions"] == exit_related
    assert held[cu_exit]["origin"] == {"node": PROBATION, "kind": "probation"}
    assert {s["pid"] for s in sar["sent"]} == {pid for pid, _ in ledger[EXIT]}
    assert {(r["pid"], r["node"]) for r in sar["recipients"]} == ledger[EXIT]
    assert [(c["scope"], c["state"], c["author"]) for c in sar["consents"]] == [
        ("EXIT_ENGAGEMENT", "GIVEN", EXIT),
        ("INCLUDE_IN_CONDITIONS", "GIVEN", EXIT),
        ("SHARE_PROGRESS", "GIVEN", EXIT),
        ("SHARE_PROGRESS", "WITHDRAWN", EXIT),
    ]


# --- an unanswered release-notice ------------------------------------------------------------


def test_a_release_notice_past_its_deadline_without_an_answer_is_overdue(
    fed: Federation,
) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    ledger: Ledger = {node: set() for node in NODES}
    late_case, early_case = new_case(), new_case()
    why = "release planning for the shared case"
    # Release in 7 days: the deadline (14 days before) was 7 days ago. In 60 days: not yet.
    late = send_one(
        ledger, prison, [PROBATION], RELEASE_NOTICE, release_notice(late_case, day(7)), why
    )
    early = send_one(
        ledger, prison, [PROBATION], RELEASE_NOTICE, release_notice(early_case, day(60)), why
    )

    # An answer from a node that was not asked for one does not clear the item.
    care = {
        **example(CARE_ACK, 0),
        "case_ref": late_case,
        "quality": quality("exit-casework"),
        "in_reply_to": late,
        "in_reply_to_schema": RELEASE_NOTICE,
    }
    send_one(ledger, fed[EXIT], [PRISON], CARE_ACK, care, "exit work started before release")

    items = overdue(prison)
    mine = [i for i in items if i["case_ref"] in (late_case, early_case)]
    assert [(i["pid"], i["node"], i["case_ref"]) for i in mine] == [(late, PROBATION, late_case)]
    (item,) = mine
    assert item["expected"] == [CONDITION_UPDATE]
    assert item["deadline"] == date_ms(day(7)) - DEADLINE_DAYS * DAY_MS
    assert item["overdue_days"] == 7
    assert expectations(prison, late_case)[(late, PROBATION)]["state"] == "overdue"
    assert expectations(prison, early_case)[(early, PROBATION)]["state"] == "open"
    listed = {c["case_ref"]: c for c in prison.api("GET", "/api/v1/cases")[1]["items"]}
    assert listed[late_case]["overdue"] is True and listed[early_case]["overdue"] is False
    # The expectation is the sender's to chase; the recipient lists nothing.
    assert overdue_in(probation, late_case) == set()

    out = run_cli(
        "cases", "overdue", "--dir", str(prison.dir), "--token", prison.tokens["caseworker"]
    )
    by_cli = json.loads(out.stdout)["items"]
    assert [i for i in by_cli if i["case_ref"] in (late_case, early_case)] == mine
    assert metric(prison, "handover_overdue_expectations") == len(items) >= 1
    assert metric(probation, "handover_overdue_expectations") == len(overdue(probation))


def test_a_rectified_release_date_moves_the_continuity_deadline(fed: Federation) -> None:
    prison = fed[PRISON]
    ledger: Ledger = {node: set() for node in NODES}
    case = new_case()
    why = "release planning for the shared case"
    body = release_notice(case, day(7))
    pid = send_one(ledger, prison, [PROBATION], RELEASE_NOTICE, body, why)
    assert (pid, PROBATION) in overdue_in(prison, case)

    # The release moves 60 days out: the answer is no longer late.
    corrected = {**body, "expected_release_date": day(60)}
    if "confirmed_release_date" in corrected:
        corrected["confirmed_release_date"] = day(60)
    status, answer = prison.api(
        "POST",
        f"/api/v1/packets/{pid}/rectify",
        {
            "action": "RECTIFY",
            "reason": "INACCURATE",
            "corrected_body": corrected,
            "justification": "the release date was moved by the parole board",
        },
    )
    assert status == 202, answer
    assert (pid, PROBATION) not in overdue_in(prison, case)
    state = expectations(prison, case)[(pid, PROBATION)]
    assert state["state"] == "open"
    assert state["deadline"] == date_ms(day(60)) - DEADLINE_DAYS * DAY_MS
