"""Subject access (LED Art 14) against real nodes: `GET /api/v1/cases/{ref}/export`
and `handover export subject`, plus the Markdown report on its own.

A prison sends a release-notice to probation and probation answers with a
condition-update on the same case; each node's export must list what it holds,
the purposes and recipients from its audit log, origin and retention, withhold
restricted content, mark erased items, and log the export as a consultation.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from federation import RELEASE_NOTICE, Federation, NodeProcess, cli_env, example, run_cli
from handover.protocol.timeutil import now_ms
from handover.workflow.subject_report import render_markdown
from handover.workflow.subject_rules import SubjectSettings, shown_body
from test_openapi import check_answer

PRISON, PROBATION = "prison.example", "probation.example"
CONDITION_UPDATE = "handover/condition-update/1"
EXPORT = "/api/v1/cases/{ref}/export"
WHY_RELEASE = "release planning for the shared case"
WHY_CONDITIONS = "licence conditions for the release"
WHY_READ = "preparing the supervision plan"
WHY_EXPORT = "subject access request SAR-2025-017 received by letter"
PRISON_NUMBER = "A4821DZ"  # a value of the release-notice example
CONDITION_TEXT = "Do not access extremist material online."  # of the condition-update example


def case_ref(n: int) -> str:
    """A distinct shared case reference per test (the schemas' `HC-` + ULID form)."""
    return f"HC-01JC3862PZ6820J8YY0J464B{n:02d}"


@dataclass(frozen=True)
class Handover:
    case_ref: str
    release: dict[str, Any]
    conditions: dict[str, Any]
    release_pid: str
    conditions_pid: str


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(
        tmp_path_factory.mktemp("sar"), [(PRISON, "prison"), (PROBATION, "probation")]
    )
    federation.start()
    yield federation
    federation.stop()


def hand_over(fed: Federation, case_ref: str) -> Handover:
    """prison -> probation release-notice, probation -> prison condition-update."""
    prison, probation = fed[PRISON], fed[PROBATION]
    release = {**example(RELEASE_NOTICE), "case_ref": case_ref}
    conditions = {**example(CONDITION_UPDATE), "case_ref": case_ref}
    release_pid = prison.send([PROBATION], RELEASE_NOTICE, release, WHY_RELEASE)
    assert prison.wait_delivered(release_pid)["deliveries"][0]["status"] == "delivered"
    conditions_pid = probation.send([PRISON], CONDITION_UPDATE, conditions, WHY_CONDITIONS)
    assert probation.wait_delivered(conditions_pid)["deliveries"][0]["status"] == "delivered"
    return Handover(case_ref, release, conditions, release_pid, conditions_pid)


def export_path(ref: str, justification: str | None = WHY_EXPORT, form: str | None = None) -> str:
    query = {}
    if justification is not None:
        query["justification"] = justification
    if form is not None:
        query["format"] = form
    path = EXPORT.format(ref=urllib.parse.quote(ref, safe=""))
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def export(node: NodeProcess, ref: str) -> dict[str, Any]:
    status, answer = node.api("GET", export_path(ref))
    assert status == 200, (status, answer)
    check_answer("GET", EXPORT, status, answer)
    result: dict[str, Any] = answer
    return result


def markdown(node: NodeProcess, ref: str) -> str:
    req = urllib.request.Request(
        node.url + export_path(ref, form="markdown"),
        headers={"Authorization": f"Bearer {node.tokens['caseworker']}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/markdown")
        assert resp.headers["Cache-Control"] == "no-store"
        text: str = resp.read().decode("utf-8")
        return text


def disclosures(node: NodeProcess, case_ref: str) -> list[dict[str, Any]]:
    rows = node.sql(
        "SELECT seq, entry FROM audit_log WHERE case_ref = $1 AND op = 'disclosure' ORDER BY seq",
        case_ref,
    )
    return [json.loads(r["entry"]) for r in rows]


def deliveries(node: NodeProcess, case_ref: str) -> set[tuple[str, str]]:
    rows = node.sql(
        "SELECT d.pid, d.node FROM deliveries d JOIN outbox o USING (pid) WHERE o.case_ref = $1",
        case_ref,
    )
    return {(r["pid"], r["node"]) for r in rows}


# --- what each node holds ------------------------------------------------------------------


def test_each_nodes_export_lists_data_origin_purposes_recipients_and_retention(
    fed: Federation,
) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    case = hand_over(fed, case_ref(1))
    status, opened = probation.api(
        "GET", f"/api/v1/inbox/{case.release_pid}?justification={urllib.parse.quote(WHY_READ)}"
    )
    assert status == 200, opened

    for node, sent_pid, sent_body, received_pid, received_body, sender, why_sent in (
        (prison, case.release_pid, case.release, case.conditions_pid, case.conditions,
         probation, WHY_RELEASE),
        (probation, case.conditions_pid, case.conditions, case.release_pid, case.release,
         prison, WHY_CONDITIONS),
    ):  # fmt: skip
        held = export(node, case.case_ref)
        assert held["node"] == node.node and held["agency_kind"] == node.kind
        assert held["case"]["case_ref"] == case.case_ref
        assert held["case"]["release_date"] == "2025-04-17"

        # The packet received: origin, dates, retention, and the body as held.
        (received,) = held["received"]
        assert received["pid"] == received_pid
        assert received["origin"] == {"node": sender.node, "kind": sender.kind}
        assert received["received_at"] <= now_ms()
        assert "review_at" in received
        assert received["retention_rule"]["anchor"] == "supervision_end"
        assert received["retention_rule"]["months"] == 24
        assert received["erased"] is False and received["restricted"] is False
        # Third-party fields (exclusion zones, addresses) are summarised, not quoted.
        assert received["body"] == shown_body(received_body, SubjectSettings())

        # The packet sent: recipients with delivery state, fields, consent, the sent view.
        (sent,) = held["sent"]
        assert sent["pid"] == sent_pid
        assert [(r["node"], r["kind"], r["status"]) for r in sent["recipients"]] == [
            (sender.node, sender.kind, "delivered")
        ]
        assert sent["fields"] == sorted(sent_body) and sent["withheld"] == []
        assert sent["consents"] == []
        assert sent["body"] == shown_body(sent_body, SubjectSettings())
        assert "review_at" in sent and sent["retention_rule"]["months"] == 24

        # Recipients and purposes come from the audit log and match the deliveries.
        logged = disclosures(node, case.case_ref)
        assert {(r["pid"], r["node"]) for r in held["recipients"]} == deliveries(
            node, case.case_ref
        )
        assert {(r["pid"], r["node"]) for r in held["recipients"]} == {
            (e["pid"], to) for e in logged for to in e["to"]
        }
        (recipient,) = held["recipients"]
        assert recipient["fields"] == sorted(sent_body)
        assert recipient["justification"] == why_sent and recipient["status"] == "delivered"
        # Staff are named by role in what goes to the data subject (issue 12 item 14).
        assert recipient["operator"] == "a caseworker"
        purposes = {(p["op"], p["justification"]) for p in held["purposes"]}
        assert ("disclosure", why_sent) in purposes
        assert held["consents"] == []

    # Probation read the release notice: that consultation is a purpose too.
    held = export(probation, case.case_ref)
    assert ("consultation", WHY_READ) in {(p["op"], p["justification"]) for p in held["purposes"]}
    # ... and so is the first export, with its subject access purpose.
    assert any(
        p["op"] == "consultation" and p["purpose"] == "subject access request"
        for p in held["purposes"]
    )


def test_markdown_report_names_the_case_and_every_packet(fed: Federation) -> None:
    prison = fed[PRISON]
    case = hand_over(fed, case_ref(2))
    report = markdown(prison, case.case_ref)
    assert report.startswith(f"# What {PRISON} holds about case {case.case_ref}\n")
    for heading in (
        "## The case",
        "## Information held",
        "## Why the information was used",
        "## Who it was shared with",
        "## How long it is kept",
        "## Restrictions and erasure",
        "## Consent",
        "## The law and your rights",
    ):
        assert f"\n{heading}\n" in report, heading
    plain = report.replace("\\", "")  # pids may hold a Markdown-escaped `_`
    assert f"Item id: {case.release_pid}" in plain
    assert f"Item id: {case.conditions_pid}" in plain
    assert f"### 1. Release notice, sent to {PROBATION} (probation service)\n" in report
    assert f"### 2. Condition update, received from {PROBATION} (probation service)\n" in report
    # Addresses are other people's data too: summarised, not quoted (issue 16 finding 7).
    assert "  - release address: held: address" in report
    assert "APPROVED_PREMISES" not in report
    assert PRISON_NUMBER in report and CONDITION_TEXT in report
    assert WHY_RELEASE in report
    assert "review date not yet set" in report
    # Dates are days in UTC, never raw milliseconds.
    assert str(now_ms())[:6] not in report


# --- restricted and erased items -------------------------------------------------------------


def test_restricted_items_are_listed_without_content_and_erased_items_as_erased(
    fed: Federation,
) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    case = hand_over(fed, case_ref(3))
    probation.sql(
        "UPDATE received SET restricted = 'contested accuracy' WHERE pid = $1", case.release_pid
    )
    prison.sql(
        "UPDATE received SET body_box = NULL, erased_at = $2 WHERE pid = $1",
        case.conditions_pid,
        now_ms(),
    )
    prison.sql("UPDATE outbox SET restricted = 'under review' WHERE pid = $1", case.release_pid)

    held = export(probation, case.case_ref)
    (received,) = held["received"]
    assert received["pid"] == case.release_pid
    assert received["restricted"] is True
    # The reason is never shown: it could tip the subject off (issue 16 finding 7).
    assert "restriction_reason" not in received
    assert "contested accuracy" not in json.dumps(held)
    assert "body" not in received
    assert PRISON_NUMBER not in json.dumps(held)
    report = markdown(probation, case.case_ref)
    assert "contested accuracy" not in report and "content is not shown" in report
    assert PRISON_NUMBER not in report
    # What probation itself sent is still shown.
    assert held["sent"][0]["body"] == case.conditions and CONDITION_TEXT in report

    held = export(prison, case.case_ref)
    (received,) = held["received"]
    assert received["erased"] is True and received["erased_at"] is not None
    assert "body" not in received
    (sent,) = held["sent"]
    assert sent["restricted"] is True and "under review" not in json.dumps(held)
    assert "body" not in sent
    # The recipients ledger still names who received the restricted item.
    assert {(r["pid"], r["node"]) for r in held["recipients"]} == {(case.release_pid, PROBATION)}
    text = json.dumps(held)
    assert PRISON_NUMBER not in text and CONDITION_TEXT not in text
    (logged,) = prison.sql(
        "SELECT entry FROM audit_log WHERE seq = $1", held["export"]["audit_seq"]
    )
    entry = json.loads(logged["entry"])
    assert "shown" not in entry
    assert sorted(entry["withheld"]) == sorted([case.release_pid, case.conditions_pid])
    report = markdown(prison, case.case_ref)
    assert "Condition update: erased on " in report and "under review" not in report
    assert PRISON_NUMBER not in report and CONDITION_TEXT not in report


# --- the export is logged, needs a justification and a role that may read ---------------------


def test_the_export_is_a_logged_consultation(fed: Federation) -> None:
    prison = fed[PRISON]
    case = hand_over(fed, case_ref(4))
    held = export(prison, case.case_ref)
    rows = prison.sql(
        "SELECT seq, op, pid, entry FROM audit_log WHERE seq = $1", held["export"]["audit_seq"]
    )
    (row,) = rows
    entry = json.loads(row["entry"])
    assert row["op"] == "consultation" and row["pid"] is None
    assert entry["case"] == case.case_ref
    assert entry["purpose"] == "subject access request"
    assert entry["justification"] == WHY_EXPORT
    assert entry["operator"] == "caseworker-1"
    # The names of the fields shown, per packet (Art 25), never their values.
    assert entry["shown"] == {
        case.release_pid: sorted(case.release),
        case.conditions_pid: sorted(case.conditions),
    }
    assert "withheld" not in entry
    # Identifiers only: no value of the held bodies is in the log entry.
    assert PRISON_NUMBER not in row["entry"].decode() and CONDITION_TEXT not in str(entry)
    assert held["export"] == {
        "at": held["export"]["at"],
        "operator": "a caseworker",
        "purpose": "subject access request",
        "justification": WHY_EXPORT,
        "audit_seq": row["seq"],
    }
    out = run_cli("audit", "verify", "--dir", str(prison.dir))
    assert json.loads(out.stdout)["ok"] is True


def test_an_export_needs_a_justification_a_known_case_and_a_reading_role(
    fed: Federation,
) -> None:
    prison = fed[PRISON]
    case = hand_over(fed, case_ref(5))
    before = prison.sql("SELECT count(*) AS n FROM audit_log")[0]["n"]
    ref, why_missing, long = case.case_ref, "justification_required", "justification_too_long"
    for path, role, status, code in (
        (export_path(ref, justification=None), "caseworker", 400, why_missing),
        (export_path(ref, justification=" "), "caseworker", 400, why_missing),
        (export_path(ref, justification="x" * 1001), "caseworker", 400, long),
        (export_path(ref, form="pdf"), "caseworker", 400, "bad_request"),
        (export_path(case_ref(99)), "caseworker", 404, "not_found"),
        (export_path(ref), "auditor", 403, "forbidden"),
    ):  # fmt: skip
        answer_status, answer = prison.api("GET", path, role=role)
        assert (answer_status, answer["error"]) == (status, code), (path, role, answer)
        check_answer("GET", EXPORT, answer_status, answer)
    answer_status, answer = prison.api("GET", export_path(case.case_ref), token="")
    assert answer_status == 401
    check_answer("GET", EXPORT, answer_status, answer)
    # Nothing refused was logged as a consultation.
    assert prison.sql("SELECT count(*) AS n FROM audit_log")[0]["n"] == before

    # The justification may come as a header; an admin may export; a local id resolves.
    assert (
        prison.api("PUT", f"/api/v1/cases/{case.case_ref}/local-id", {"local_id": "P-77"})[0] == 200
    )
    req = urllib.request.Request(
        prison.url + EXPORT.format(ref="P-77"),
        headers={
            "Authorization": f"Bearer {prison.tokens['admin']}",
            "Handover-Justification": WHY_EXPORT,
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        held = json.loads(resp.read())
    assert held["case"]["case_ref"] == case.case_ref and held["case"]["local_id"] == "P-77"
    assert held["export"]["operator"] == "an administrator"


# --- the command line ----------------------------------------------------------------------------


def test_cli_writes_json_and_markdown_through_the_local_api(
    fed: Federation, tmp_path: Path
) -> None:
    probation = fed[PROBATION]
    case = hand_over(fed, case_ref(6))
    args = [
        sys.executable, "-m", "handover.cli", "export", "subject",
        "--dir", str(probation.dir), "--token", probation.tokens["caseworker"],
        "--case", case.case_ref, "--justification", WHY_EXPORT,
    ]  # fmt: skip
    proc = subprocess.run(
        args, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    paths = json.loads(proc.stdout)
    assert paths == {
        "json": str(tmp_path / f"subject-{case.case_ref}.json"),
        "markdown": str(tmp_path / f"subject-{case.case_ref}.md"),
    }
    held = json.loads(Path(paths["json"]).read_text("utf-8"))
    assert held["case"]["case_ref"] == case.case_ref
    assert [p["pid"] for p in held["received"]] == [case.release_pid]
    assert [p["pid"] for p in held["sent"]] == [case.conditions_pid]
    report = Path(paths["markdown"]).read_text("utf-8")
    assert report == render_markdown(held)
    for path in paths.values():
        assert Path(path).stat().st_mode & 0o777 == 0o600, path
    # One export, one consultation, whatever the number of files.
    logged = probation.sql(
        "SELECT entry FROM audit_log WHERE case_ref = $1 AND op = 'consultation'", case.case_ref
    )
    # (Other reads of the case log their own entries, without this purpose.)
    purposes = [json.loads(r["entry"]).get("purpose") for r in logged]
    assert purposes.count("subject access request") == 1

    prefix = tmp_path / "out" / "report"
    prefix.parent.mkdir()
    out = run_cli(
        "export", "subject", "--dir", str(probation.dir),
        "--token", probation.tokens["caseworker"], "--case", case.case_ref,
        "--justification", WHY_EXPORT, "--out", str(prefix),
    )  # fmt: skip
    assert json.loads(out.stdout) == {
        "json": str(prefix) + ".json",
        "markdown": str(prefix) + ".md",
    }

    refused = run_cli(
        "export", "subject", "--dir", str(probation.dir),
        "--token", probation.tokens["auditor"], "--case", case.case_ref,
        "--justification", WHY_EXPORT, "--out", str(tmp_path / "refused"),
        check=False,
    )  # fmt: skip
    assert refused.returncode == 1 and "403" in refused.stderr
    assert not (tmp_path / "refused.json").exists()

    # A symbolic link where the export goes is not followed (it could point at
    # any file the operator may write): the command fails and the target is intact.
    target = tmp_path / "elsewhere.txt"
    target.write_text("not to be overwritten\n")
    linked = tmp_path / "linked"
    (tmp_path / "linked.json").symlink_to(target)
    out = run_cli(
        "export", "subject", "--dir", str(probation.dir),
        "--token", probation.tokens["caseworker"], "--case", case.case_ref,
        "--justification", WHY_EXPORT, "--out", str(linked),
        check=False,
    )  # fmt: skip
    assert out.returncode == 1 and "symbolic link" in out.stderr
    assert target.read_text() == "not to be overwritten\n"


# --- the report on its own -----------------------------------------------------------------


def test_render_markdown_of_a_small_export() -> None:
    day = 1_744_848_000_000  # 2025-04-17T00:00:00Z
    export_doc = {
        "format": "handover/subject-export/1",
        "node": "probation.example",
        "agency_kind": "probation",
        "case": {
            "case_ref": "HC-1",
            "local_id": None,
            "created_at": day,
            "updated_at": day + 86_400_000 - 1,
            "release_date": "2025-04-17",
            "supervision_end": None,
        },
        "received": [
            {
                "pid": "A" * 22,
                "schema": "handover/release-notice/1",
                "origin": {"node": "prison.example", "kind": "prison"},
                "issued_at": day,
                "received_at": day,
                "review_at": day + 2 * 86_400_000,
                "retention_rule": {
                    "anchor": "supervision_end",
                    "months": 24,
                    "fallback": {"anchor": "stored", "months": 72},
                },
                "rectified_by": None,
                "erased": False,
                "erased_at": None,
                "restricted": False,
                "restriction_reason": None,
                "body": {
                    "case_ref": "HC-1",
                    "identifiers": {"prison_number": "A4821DZ"},
                    "risk": {"overall_level": "HIGH", "at_risk": ["PUBLIC", "STAFF"]},
                    "conditions": [{"code": "STD-1", "exit_related": False}],
                    "notes": "line one\n- not a list *or* <b>markup</b>",
                },
            },
            {
                "pid": "B" * 22,
                "schema": "handover/progress-summary/1",
                "origin": {"node": "exit.example", "kind": "exit"},
                "issued_at": day,
                "received_at": day + 1,
                "review_at": None,
                "retention_rule": {"anchor": "supervision_end", "months": 12},
                "rectified_by": None,
                "erased": False,
                "erased_at": None,
                "restricted": True,
                "restriction_reason": "contested accuracy",
            },
        ],
        "sent": [],
        "purposes": [
            {
                "op": "consultation",
                "at": day,
                "justification": "supervision plan",
                "pid": "A" * 22,
                "schema": "handover/release-notice/1",
                "operator": "caseworker-1",
                "audit_seq": 4,
            }
        ],
        "recipients": [],
        "consents": [
            {
                "scope": "SHARE_PROGRESS",
                "state": "GIVEN",
                "consent_id": "c-1",
                "basis": "VOLUNTARY",
                "pid": "C" * 22,
                "author": "exit.example",
                "recorded_at": day,
            }
        ],
        "export": {
            "at": day,
            "operator": "caseworker-1",
            "purpose": "subject access request",
            "justification": "SUBJECT_ACCESS: request SAR-1 received",
            "audit_seq": 9,
        },
    }
    report = render_markdown(export_doc)
    lines = report.splitlines()
    assert lines[0] == "# What probation.example holds about case HC-1"
    assert "It was produced on 2025-04-17 by caseworker-1" in report
    assert "- Last changed: 2025-04-17" in lines  # the last millisecond of the day, UTC
    assert "### 1. Release notice, received from prison.example (prison)" in lines
    assert "- Received on: 2025-04-17" in lines
    # Fields as `name: value` lines; nested values indented under their parent.
    assert "  - case ref: HC-1" in lines
    assert "  - identifiers:" in lines and "    - prison number: A4821DZ" in lines
    assert "    - at risk: PUBLIC, STAFF" in lines
    assert "  - conditions:" in lines and "    - conditions 1:" in lines
    assert "      - exit related: no" in lines
    # Held text renders as written, never as markup.
    assert "  - notes: line one" in lines
    assert "    \\- not a list \\*or\\* \\<b\\>markup\\</b\\>" in lines
    # The restricted item is listed without its reason and without content.
    assert "### 2. Progress summary, received from exit.example (exit organisation)" in lines
    assert "- 2. Progress summary: restricted; its content is not shown in this report." in lines
    assert "contested accuracy" not in report
    assert "- 1. Release notice: review due on 2025-04-19; the rule is a review 24 months" in (
        report
    )
    assert "- 2. Progress summary: review date not yet set" in report
    assert (
        "- 2025-04-17: looked at (Release notice) by caseworker-1, because: supervision plan"
        in (lines)
    )
    assert "This agency has not shared information about this case." in lines
    assert "- 2025-04-17: SHARE PROGRESS given (VOLUNTARY, recorded by exit.example)" in lines
    assert report.endswith("\n") and "1744848000000" not in report
