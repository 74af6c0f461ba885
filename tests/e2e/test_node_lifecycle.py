"""Retention reviews (LED Art 5) and rectification (Art 7, 16) across real nodes.

Three `handover serve` processes (prison, probation, exit organisation), each
with a policy override whose retention rules are zero months (anchored on the
supervision end, falling back to when the packet was stored), so every packet
is due for review as soon as it is stored unless its case has a later
supervision end.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from federation import Federation, NodeProcess, example, run_cli
from handover.workflow.engine import date_ms
from handover.workflow.policy import default_policy_path
from test_openapi import check_answer

PRISON, PROBATION, EXIT = "prison.example", "probation.example", "exit.example"
RELEASE_NOTICE = "handover/release-notice/1"
SUPERVISION_END = "handover/supervision-end/1"
RECTIFICATION = "handover/rectification-notice/1"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
WHY = "retention review of the shared case"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(
        tmp_path_factory.mktemp("lifecycle"),
        [(PRISON, "prison"), (PROBATION, "probation"), (EXIT, "exit")],
    )
    policy = json.loads(default_policy_path().read_text("utf-8"))
    policy["retention"] = {
        "default": {"anchor": "supervision_end", "months": 0},
        "fallback": {"anchor": "stored", "months": 0},
        "schemas": {},
        # Reviews fall due at once; an EXTEND may still reach 2100 (the cap, issue 16).
        "extend_months": 1200,
    }
    for node in federation.nodes.values():
        (node.dir / "policy.json").write_text(json.dumps(policy), "utf-8")
        with open(node.dir / "handover.toml", "a", encoding="utf-8") as toml:
            toml.write('policy_file = "policy.json"\n')
    federation.start()
    yield federation
    federation.stop()


# --- helpers ------------------------------------------------------------------------------


def new_case() -> str:
    return "HC-" + "".join(secrets.choice(CROCKFORD) for _ in range(26))


def release_notice(case: str) -> dict[str, Any]:
    body = example(RELEASE_NOTICE)
    del body["supersedes"]
    return {**body, "case_ref": case}


def supervision_end(case: str, end_date: str = "2030-01-31") -> dict[str, Any]:
    return {
        **example(SUPERVISION_END),
        "case_ref": case,
        "end_date": end_date,
        "quality": {"as_of": end_date, "source_system": "nDelius", "basis": "FACT"},
    }


def delivered(sender: NodeProcess, pid: str) -> dict[str, Any]:
    packet = sender.wait_delivered(pid)
    assert {d["status"] for d in packet["deliveries"]} == {"delivered"}, packet
    return packet


def due(node: NodeProcess) -> dict[tuple[str, str], dict[str, Any]]:
    status, page = node.api("GET", "/api/v1/reviews")
    check_answer("GET", "/api/v1/reviews", status, page)
    assert status == 200, page
    return {(item["pid"], item["direction"]): item for item in page["items"]}


def decide(node: NodeProcess, pid: str, role: str = "caseworker", **payload: Any) -> Any:
    answer = node.api("POST", f"/api/v1/reviews/{pid}", payload, role=role)
    check_answer("POST", "/api/v1/reviews/{pid}", *answer)
    return answer


def read(node: NodeProcess, pid: str) -> tuple[int, Any]:
    answer = node.api("GET", f"/api/v1/inbox/{pid}?justification=check+the+shared+case")
    check_answer("GET", "/api/v1/inbox/{pid}", *answer)
    return answer


def rectify(node: NodeProcess, pid: str, **payload: Any) -> tuple[int, Any]:
    answer = node.api("POST", f"/api/v1/packets/{pid}/rectify", payload)
    check_answer("POST", "/api/v1/packets/{pid}/rectify", *answer)
    return answer


def rectifications(node: NodeProcess, pid: str) -> dict[str, Any]:
    status, answer = node.api("GET", f"/api/v1/packets/{pid}/rectifications")
    check_answer("GET", "/api/v1/packets/{pid}/rectifications", status, answer)
    assert status == 200, answer
    result: dict[str, Any] = answer
    return result


def audit(node: NodeProcess, pid: str, op: str) -> list[dict[str, Any]]:
    rows = node.sql("SELECT entry FROM audit_log WHERE pid = $1 AND op = $2 ORDER BY seq", pid, op)
    return [json.loads(r["entry"]) for r in rows]


def cli_api(node: NodeProcess, *args: str, pid: str | None = None) -> Any:
    """`handover ARGS` against the node's API; a pid goes last, after `--`, because a
    base64url pid may start with `-`."""
    tail = ["--", pid] if pid is not None else []
    out = run_cli(*args, "--dir", str(node.dir), "--token", node.tokens["caseworker"], *tail)
    return json.loads(out.stdout)


# --- retention reviews ---------------------------------------------------------------------


def test_reviews_fall_due_and_extend_moves_one_out_of_the_list(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    case = new_case()
    pid = prison.send([PROBATION], body=release_notice(case))
    delivered(prison, pid)

    # No supervision end known: the fallback (stored + 0 months) makes both copies due.
    item = due(probation)[(pid, "received")]
    assert item["sender"] == PRISON and item["counterparts"] == [PRISON]
    assert item["schema"] == RELEASE_NOTICE and item["case_ref"] == case
    assert item["restricted"] is None and item["erased"] is False
    assert due(prison)[(pid, "sent")]["counterparts"] == [PROBATION]
    listed = cli_api(probation, "reviews", "list")
    assert pid in [i["pid"] for i in listed["items"]]

    # Refusals: a past date, no justification, an unknown outcome, the auditor role.
    status, answer = decide(
        probation, pid, outcome="EXTEND", review_at="2020-01-01", justification=WHY
    )
    assert status == 400 and "future" in answer["message"]
    assert decide(probation, pid, outcome="EXTEND", review_at="2099-01-01")[0] == 400
    assert decide(probation, pid, outcome="KEEP", justification=WHY)[0] == 400
    assert decide(probation, pid, role="auditor", outcome="ERASE", justification=WHY)[0] == 403
    assert decide(probation, "B" * 22, outcome="ERASE", justification=WHY)[0] == 404

    state = cli_api(
        probation,
        "reviews",
        "decide",
        "--outcome",
        "EXTEND",
        "--review-at",
        "2099-01-01",
        "--justification",
        "supervision plan still relies on it",
        pid=pid,
    )
    assert state["review_at"] == date_ms("2099-01-01")
    assert (pid, "received") not in due(probation)
    assert (pid, "sent") in due(prison)  # the sender's own review is its own
    (row,) = probation.sql("SELECT review_at, review_extended FROM received WHERE pid = $1", pid)
    assert row["review_at"] == row["review_extended"] == date_ms("2099-01-01")
    (entry,) = audit(probation, pid, "alteration")
    assert entry["outcome"] == "EXTEND" and entry["operator"] == "caseworker-1"
    assert entry["justification"] == "supervision plan still relies on it"


def test_a_supervision_end_moves_the_reviews_of_the_whole_case(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    case = new_case()
    notice = prison.send([PROBATION], body=release_notice(case))
    delivered(prison, notice)
    assert (notice, "received") in due(probation) and (notice, "sent") in due(prison)
    # The prison keeps its copy longer than the supervision end will say: that decision holds.
    status, _ = decide(
        prison, notice, outcome="EXTEND", review_at="2100-01-01", justification="appeal pending"
    )
    assert status == 200

    end = probation.send([PRISON], SUPERVISION_END, supervision_end(case, "2099-06-30"))
    delivered(probation, end)
    # Now anchored on the supervision end (+ 0 months) on both nodes, both directions.
    for node, pid, direction in (
        (probation, notice, "received"),
        (probation, end, "sent"),
        (prison, notice, "sent"),
        (prison, end, "received"),
    ):
        assert (pid, direction) not in due(node), (node.node, direction)
    (row,) = probation.sql("SELECT review_at FROM received WHERE pid = $1", notice)
    assert row["review_at"] == date_ms("2099-06-30")
    (row,) = prison.sql("SELECT review_at FROM received WHERE pid = $1", end)
    assert row["review_at"] == date_ms("2099-06-30")
    (row,) = prison.sql("SELECT review_at FROM outbox WHERE pid = $1", notice)
    assert row["review_at"] == date_ms("2100-01-01")


def test_restrict_hides_the_body_until_an_admin_lifts_it(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    pid = prison.send([PROBATION], body=release_notice(new_case()))
    delivered(prison, pid)
    assert read(probation, pid)[0] == 200

    status, answer = decide(probation, pid, outcome="RESTRICT", justification=WHY)
    assert status == 400 and answer["error"] == "reason_required"
    status, state = decide(
        probation,
        pid,
        outcome="RESTRICT",
        reason="accuracy disputed by the person",
        review_at="2099-01-01",
        justification=WHY,
    )
    assert status == 200 and state["restricted"] == "accuracy disputed by the person"
    status, answer = read(probation, pid)
    assert status == 403 and answer["error"] == "restricted"
    assert (pid, "received") not in due(probation)
    inbox = {i["pid"]: i for i in probation.api("GET", "/api/v1/inbox?limit=500")[1]["items"]}
    assert inbox[pid]["restricted"] is True

    lift = f"/api/v1/packets/{pid}/restriction/lift"
    for role in ("caseworker", "auditor"):
        answer = probation.api("POST", lift, {"justification": "court order"}, role=role)
        check_answer("POST", "/api/v1/packets/{pid}/restriction/lift", *answer)
        assert answer[0] == 403
    status, answer = decide(probation, pid, outcome="LIFT", justification="court order")
    assert status == 403 and "admin" in answer["message"]
    assert read(probation, pid)[0] == 403
    answer = probation.api("POST", lift, {}, role="admin")
    check_answer("POST", "/api/v1/packets/{pid}/restriction/lift", *answer)
    assert answer[0] == 400 and answer[1]["error"] == "justification_required"

    status, state = probation.api("POST", lift, {"justification": "court order"}, role="admin")
    check_answer("POST", "/api/v1/packets/{pid}/restriction/lift", status, state)
    assert status == 200 and state["restricted"] is None
    status, opened = read(probation, pid)
    assert status == 200 and opened["body"]["prison_id"] == "NFI"
    inbox = {i["pid"]: i for i in probation.api("GET", "/api/v1/inbox?limit=500")[1]["items"]}
    assert inbox[pid]["restricted"] is False
    status, answer = probation.api(
        "POST", lift, {"justification": "lifting it once more"}, role="admin"
    )
    assert status == 409 and answer["error"] == "not_restricted"
    entries = audit(probation, pid, "alteration")
    assert [(e["outcome"], e["operator"]) for e in entries] == [
        ("RESTRICT", "caseworker-1"),
        ("LIFT", "admin-1"),
    ]
    assert all("accuracy disputed" not in json.dumps(e) for e in entries)


def test_erase_removes_the_content_keeps_the_replay_record_and_the_chain(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    case = new_case()
    pid = prison.send([PROBATION], body=release_notice(case))
    delivered(prison, pid)
    (sent,) = prison.sql("SELECT wire FROM outbox WHERE pid = $1", pid)
    wire = bytes(sent["wire"])
    (before,) = probation.sql("SELECT pd, receipt FROM received WHERE pid = $1", pid)

    # Before the review is due, a caseworker may not erase: that is an admin's decision.
    status, answer = decide(probation, pid, outcome="ERASE", justification="retention ended")
    assert (status, answer["error"]) == (403, "forbidden")
    (row,) = probation.sql("SELECT body_box FROM received WHERE pid = $1", pid)
    assert row["body_box"] is not None
    # An admin proposes it with a reason code; a second admin approves (issue 16).
    status, answer = decide(
        probation, pid, role="admin", outcome="ERASE", justification="retention ended"
    )
    assert (status, answer["error"]) == (400, "reason_required")
    status, state = decide(
        probation,
        pid,
        role="admin",
        outcome="ERASE",
        reason_code="SUBJECT_REQUEST",
        justification="retention ended",
    )
    assert status == 202 and state["state"] == "pending_approval" and state["erased"] is False
    assert read(probation, pid)[0] == 200
    answer = probation.api("GET", "/api/v1/reviews/proposals", role="admin")
    check_answer("GET", "/api/v1/reviews/proposals", *answer)
    (waiting,) = [p for p in answer[1]["items"] if p["pid"] == pid]
    assert (waiting["outcome"], waiting["reason_code"]) == ("ERASE", "SUBJECT_REQUEST")
    assert "justification" not in waiting
    approve = f"/api/v1/reviews/{pid}/approve"
    answer = probation.api("POST", approve, {"justification": "checked it"}, role="admin")
    check_answer("POST", "/api/v1/reviews/{pid}/approve", *answer)
    assert (answer[0], answer[1]["error"]) == (403, "second_admin_required")
    first = probation.tokens["admin"]
    second = probation.tokens.get("admin-2") or probation.add_operator("admin-2", "admin")
    probation.tokens["admin"], probation.tokens["admin-2"] = first, second
    status, state = probation.api("POST", approve, {"justification": "checked it"}, token=second)
    check_answer("POST", "/api/v1/reviews/{pid}/approve", status, state)
    assert status == 200 and state["state"] == "approved"
    assert state["erased"] is True and state["review_at"] is None
    (row,) = probation.sql(
        "SELECT sender, pd, receipt, exp, wire, body_box, erased_at, schema_id, case_ref"
        " FROM received WHERE pid = $1",
        pid,
    )
    assert row["wire"] is None and row["body_box"] is None and row["erased_at"] is not None
    assert row["sender"] == PRISON and row["exp"] > 0 and row["case_ref"] == case
    assert bytes(row["pd"]) == bytes(before["pd"])
    assert bytes(row["receipt"]) == bytes(before["receipt"])
    assert read(probation, pid)[0] == 410
    assert (pid, "received") not in due(probation)
    assert (
        decide(probation, pid, role="admin", outcome="ERASE", justification="erasing it once more")[
            0
        ]
        == 410
    )

    # The replay record survives: a retry of the packet gets the identical stored receipt.
    headers = {"Content-Type": "application/vnd.handover.packet+json"}
    status, raw = probation.request("POST", "/federation/v1/packets", wire, headers)
    assert status == 200 and raw == bytes(before["receipt"])
    (row,) = probation.sql("SELECT wire, body_box FROM received WHERE pid = $1", pid)
    assert row["wire"] is None and row["body_box"] is None

    # The sender erases its own copy as well, once its review is due (the list dates it).
    assert (pid, "sent") in due(prison)
    status, state = decide(prison, pid, outcome="ERASE", justification="retention ended")
    assert status == 200 and state["direction"] == "sent" and state["erased"] is True
    # ... and the node that holds it is told (it had erased its copy already).
    assert [n["to"] for n in state["rectification"]["packets"]] == [[PROBATION]]
    (row,) = prison.sql("SELECT wire, body_box, erased_at, pd FROM outbox WHERE pid = $1", pid)
    assert row["wire"] is None and row["body_box"] is None and row["erased_at"] is not None

    for node in (prison, probation):
        (entry,) = audit(node, pid, "erasure")
        assert entry["justification"] == "retention ended" and entry["case"] == case
        assert "prison_id" in entry["fields"] and "identifiers" in entry["fields"]
        entries = json.dumps([r["entry"].decode() for r in node.sql("SELECT entry FROM audit_log")])
        assert "A4821DZ" not in entries and "Elm Lodge" not in entries  # names, never values
        out = run_cli("audit", "verify", "--dir", str(node.dir))
        assert json.loads(out.stdout)["ok"] is True


# --- rectification -------------------------------------------------------------------------


def test_rectify_reaches_every_recipient_and_each_applies_it(fed: Federation) -> None:
    probation, prison, exit_org = fed[PROBATION], fed[PRISON], fed[EXIT]
    case = new_case()
    body = supervision_end(case, "2030-01-31")
    pid = probation.send([PRISON, EXIT], SUPERVISION_END, body)
    assert len(delivered(probation, pid)["deliveries"]) == 2

    corrected = supervision_end(case, "2030-02-28")
    status, answer = rectify(probation, pid, action="RECTIFY", reason="INACCURATE")
    assert status == 400  # no corrected body, no justification
    status, answer = rectify(
        probation,
        pid,
        action="RECTIFY",
        reason="INACCURATE",
        corrected_body={**corrected, "end_date": "someday"},
        justification="wrong end date",
    )
    assert status == 422 and answer["error"] == "schema_invalid"
    status, answer = rectify(
        probation,
        pid,
        action="RECTIFY",
        reason="INACCURATE",
        explanation="Supervision ended at the end of February.",
        corrected_body=corrected,
        justification="wrong end date in the supervision-end notice",
    )
    assert status == 202, answer
    ((notice, to),) = [(p["pid"], sorted(p["to"])) for p in answer["packets"]]
    assert to == [EXIT, PRISON]
    delivered(probation, notice)

    status = rectifications(probation, pid)
    assert status["acknowledged"] is True
    (item,) = status["rectifications"]
    assert item["action"] == "RECTIFY" and item["reason"] == "INACCURATE"
    assert [(r["node"], r["notice_pid"], r["status"]) for r in item["recipients"]] == [
        (EXIT, notice, "delivered"),
        (PRISON, notice, "delivered"),
    ]
    assert all(r["acknowledged"] and r["receipt"] for r in item["recipients"])
    cli = cli_api(probation, "rectifications", pid=pid)
    assert cli["acknowledged"] is True

    for node in (prison, exit_org):
        status, opened = read(node, pid)
        assert status == 200 and opened["body"]["end_date"] == "2030-02-28", node.node
        (row,) = node.sql("SELECT rectified_by FROM received WHERE pid = $1", pid)
        assert row["rectified_by"] == notice
        (entry,) = audit(node, pid, "alteration")
        assert entry["action"] == "RECTIFY" and entry["notice"] == notice
        assert entry["fields"] == ["end_date", "quality"]
        # The corrected supervision end moves the case's reviews there too.
        (case_row,) = node.sql("SELECT supervision_end FROM cases WHERE case_ref = $1", case)
        assert case_row["supervision_end"] == "2030-02-28"
        # The rectification clears the case's review dates; the sweep dates them again.
        deadline = time.monotonic() + 20
        while True:
            (row,) = node.sql("SELECT review_at FROM received WHERE pid = $1", pid)
            if row["review_at"] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert row["review_at"] == date_ms("2030-02-28")
    (entry,) = audit(probation, pid, "alteration")
    assert entry["action"] == "RECTIFY" and entry["direction"] == "sent"
    assert entry["justification"] == "wrong end date in the supervision-end notice"


@pytest.mark.parametrize("action", ["ERASE", "RESTRICT"])
def test_erase_and_restrict_notices_are_applied_by_every_recipient(
    fed: Federation, action: str
) -> None:
    probation, prison, exit_org = fed[PROBATION], fed[PRISON], fed[EXIT]
    pid = probation.send([PRISON, EXIT], SUPERVISION_END, supervision_end(new_case()))
    delivered(probation, pid)
    status, answer = rectify(
        probation,
        pid,
        action=action,
        reason="UNLAWFULLY_PROCESSED",
        corrected_body=supervision_end(new_case()),
        justification="sent in error",
    )
    assert status == 400  # a corrected body only goes with RECTIFY
    result = cli_api(
        probation,
        "rectify",
        "--action",
        action,
        "--reason",
        "UNLAWFULLY_PROCESSED" if action == "ERASE" else "ACCURACY_CONTESTED",
        "--justification",
        "sent in error",
        pid=pid,
    )
    (packet,) = result["packets"]
    delivered(probation, packet["pid"])
    (item,) = rectifications(probation, pid)["rectifications"]
    assert {r["node"]: r["acknowledged"] for r in item["recipients"]} == {
        PRISON: True,
        EXIT: True,
    }

    for node in (prison, exit_org):
        status, answer = read(node, pid)
        (row,) = node.sql(
            "SELECT wire, body_box, erased_at, restricted, pd FROM received WHERE pid = $1", pid
        )
        if action == "ERASE":
            assert status == 410, node.node
            assert row["wire"] is None and row["body_box"] is None and row["erased_at"]
            assert audit(node, pid, "erasure")
        else:
            assert status == 403 and answer["error"] == "restricted", node.node
            assert row["restricted"].startswith("ACCURACY_CONTESTED") and row["body_box"]
    (own,) = probation.sql("SELECT wire, body_box, restricted FROM outbox WHERE pid = $1", pid)
    if action == "ERASE":
        assert own["wire"] is None and own["body_box"] is None
    else:
        assert own["restricted"].startswith("ACCURACY_CONTESTED") and own["body_box"]
    if action == "ERASE":
        again = rectify(
            probation,
            pid,
            action="ERASE",
            reason="INACCURATE",
            justification="wrong data sent twice",
        )
        assert again[0] == 410 and again[1]["error"] == "erased"


def test_rectify_reduces_the_corrected_body_to_the_recipients_view(fed: Federation) -> None:
    prison, exit_org = fed[PRISON], fed[EXIT]
    case = new_case()
    status, answer = prison.api(
        "POST",
        "/api/v1/packets",
        {
            "to": [EXIT],
            "schema": RELEASE_NOTICE,
            "body": release_notice(case),
            "justification": "continuity of care",
            "minimise": True,
        },
    )
    assert status == 202, answer
    pid = answer["packets"][0]["pid"]
    delivered(prison, pid)

    corrected = copy.deepcopy(release_notice(case))
    corrected["expected_release_date"] = corrected["confirmed_release_date"] = "2025-05-02"
    status, answer = rectify(
        prison,
        pid,
        action="RECTIFY",
        reason="INACCURATE",
        corrected_body=corrected,
        justification="the release date moved",
    )
    assert status == 202, answer
    (packet,) = answer["packets"]
    assert {"identifiers", "police_national_id", "release_address"} <= set(packet["removed"])
    delivered(prison, packet["pid"])
    status, opened = read(exit_org, pid)
    assert status == 200 and opened["body"]["expected_release_date"] == "2025-05-02"
    assert not {"identifiers", "police_national_id", "confirmed_release_date"} & set(opened["body"])
    # The notice itself (held as a received packet) carries only that view too.
    status, held_notice = read(exit_org, packet["pid"])
    assert status == 200 and "identifiers" not in held_notice["body"]["corrected_body"]


def test_a_notice_from_a_node_that_did_not_send_the_packet_is_not_applied(
    fed: Federation,
) -> None:
    probation, prison, exit_org = fed[PROBATION], fed[PRISON], fed[EXIT]
    case = new_case()
    pid = probation.send([PRISON], SUPERVISION_END, supervision_end(case))
    delivered(probation, pid)

    # Only the sender can rectify through the API ...
    assert (
        rectify(
            exit_org,
            pid,
            action="ERASE",
            reason="INACCURATE",
            justification="wrong data sent twice",
        )[0]
        == 404
    )
    # ... and a notice another node crafts is refused by the receiver, with a signed rejection.
    forged = {
        "case_ref": case,
        "quality": {"as_of": "2026-01-01", "source_system": "exit-casework", "basis": "FACT"},
        "target_pid": pid,
        "target_schema": SUPERVISION_END,
        "action": "ERASE",
        "reason": "UNLAWFULLY_PROCESSED",
    }
    notice = exit_org.send(
        [PRISON], RECTIFICATION, forged, justification="a forged rectification notice"
    )
    (delivery,) = exit_org.wait_delivered(notice)["deliveries"]
    assert delivery["status"] == "rejected" and delivery["reason"] == "not_permitted"

    status, opened = read(prison, pid)
    assert status == 200 and opened["body"]["end_date"] == "2030-01-31"
    (row,) = prison.sql("SELECT erased_at, restricted FROM received WHERE pid = $1", pid)
    assert row["erased_at"] is None and row["restricted"] is None
    assert not audit(prison, pid, "erasure")
    (rejection,) = audit(prison, notice, "rejection")
    assert rejection["counterpart"] == EXIT and rejection["reason"] == "not_permitted"
    assert "rectification_refused" in prison.log()
