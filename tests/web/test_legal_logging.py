"""Issue 16, finding 4 (LED Art 25): justifications that mean something, a
purpose code recorded as its own searchable field, and a `consultation` entry
for every local API read of case-linked data (one per request), a
`combination` entry for a local id, and an entry for reading the audit log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from handover.node.runtime import Node
from inproc import (
    PRISON,
    PROBATION,
    Cluster,
    app_client,
    audit_entries,
    audit_seq,
    release_notice,
    send_delivered,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


@dataclass
class Api:
    client: TestClient  # type: ignore[type-arg]
    tokens: dict[str, str]
    node: Node

    async def call(
        self, method: str, path: str, *, role: str = "admin", json_body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        response = await self.client.request(method, path, json=json_body, headers=headers)
        raw = await response.read()
        return response.status, json.loads(raw) if raw else None


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(cluster: Cluster) -> AsyncIterator[Api]:
    """probation.test's app, with an admin, a caseworker and an auditor."""
    node = cluster[PROBATION]
    roles = ("admin", "caseworker", "auditor")
    tokens = {role: await cluster.operator(node, f"legal-{role}", role) for role in roles}
    async with app_client(node) as client:
        yield Api(client, tokens, node)


async def _received_pid(cluster: Cluster) -> tuple[str, str]:
    notice = release_notice()
    pid = await send_delivered(cluster[PRISON], [PROBATION], "handover/release-notice/1", notice)
    return pid, notice["case_ref"]


async def _new_entries(node: Node, after: int) -> list[dict[str, Any]]:
    return await audit_entries(node, after=after)


async def test_a_one_letter_justification_is_refused_naming_the_rule(
    api: Api, cluster: Cluster
) -> None:
    pid, _ = await _received_pid(cluster)
    status, answer = await api.call("GET", f"/api/v1/inbox/{pid}?justification=x")
    assert status == 400, answer
    assert answer["error"] == "justification_too_weak"
    assert "10 characters" in answer["message"] and "2 words" in answer["message"]
    status, answer = await api.call("GET", f"/api/v1/inbox/{pid}?justification=supervision")
    assert (status, answer["error"]) == (400, "justification_too_weak")


async def test_an_unknown_purpose_code_is_refused_naming_the_allowed_codes(
    api: Api, cluster: Cluster
) -> None:
    pid, _ = await _received_pid(cluster)
    why = quote("GOSSIP: curious about the release date")
    status, answer = await api.call("GET", f"/api/v1/inbox/{pid}?justification={why}")
    assert (status, answer["error"]) == (400, "unknown_purpose"), answer
    assert "SUPERVISION" in answer["message"] and "GOSSIP" in answer["message"]


async def test_a_purpose_code_is_its_own_searchable_field(api: Api, cluster: Cluster) -> None:
    pid, case_ref = await _received_pid(cluster)
    why = quote("SUPERVISION: preparing the licence conditions")
    status, answer = await api.call("GET", f"/api/v1/inbox/{pid}?justification={why}")
    assert status == 200, answer
    status, page = await api.call(
        "GET", f"/api/v1/audit?purpose=SUPERVISION&case={case_ref}", role="auditor"
    )
    assert status == 200, page
    (item,) = [e for e in page["entries"] if e["entry"]["op"] == "consultation"]
    assert item["entry"]["purpose"] == "SUPERVISION"
    assert item["entry"]["pid"] == pid
    # Only entries with that purpose come back.
    _, everything = await api.call("GET", "/api/v1/audit?purpose=SUPERVISION", role="auditor")
    assert {e["entry"]["purpose"] for e in everything["entries"]} == {"SUPERVISION"}


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/api/v1/cases", "case_list"),
        ("/api/v1/cases/{case}", "case_view"),
        ("/api/v1/inbox", "inbox_list"),
        ("/api/v1/overdue", "overdue_list"),
        ("/api/v1/reviews", "review_list"),
    ],
)
async def test_every_read_of_case_linked_data_writes_one_consultation(
    api: Api, cluster: Cluster, path: str, shown: str
) -> None:
    _, case_ref = await _received_pid(cluster)
    before = await audit_seq(api.node)
    status, answer = await api.call("GET", path.format(case=case_ref), role="caseworker")
    assert status == 200, answer
    entries = await _new_entries(api.node, before)
    consultations = [e for e in entries if e["op"] == "consultation" and e["shown"] == shown]
    assert len(consultations) == 1, entries
    (entry,) = consultations
    assert entry["operator"] == "legal-caseworker"
    # What was shown is named by field names and counts, never by values.
    assert "release_date" not in json.dumps({k: v for k, v in entry.items() if k != "fields"})
    if shown == "case_view":
        assert entry["case"] == case_ref and "timeline" in entry["fields"]
    if shown in ("case_list", "inbox_list"):
        assert entry["count"] >= 1


async def test_a_justification_on_a_listing_is_checked_and_its_purpose_kept(api: Api) -> None:
    status, answer = await api.call("GET", "/api/v1/cases?justification=x", role="caseworker")
    assert (status, answer["error"]) == (400, "justification_too_weak")
    before = await audit_seq(api.node)
    why = quote("RELEASE_PLANNING: weekly release board")
    status, _ = await api.call("GET", f"/api/v1/cases?justification={why}", role="caseworker")
    assert status == 200
    (entry,) = [e for e in await _new_entries(api.node, before) if e["op"] == "consultation"]
    assert entry["purpose"] == "RELEASE_PLANNING"


async def test_setting_a_local_id_writes_a_combination_entry(api: Api, cluster: Cluster) -> None:
    _, case_ref = await _received_pid(cluster)
    before = await audit_seq(api.node)
    status, answer = await api.call(
        "PUT",
        f"/api/v1/cases/{case_ref}/local-id",
        role="caseworker",
        json_body={"local_id": f"CRN-{case_ref[-8:]}"},
    )
    assert status == 200, answer
    (entry,) = [e for e in await _new_entries(api.node, before) if e["op"] == "combination"]
    assert entry["case"] == case_ref and entry["operator"] == "legal-caseworker"
    # The local id itself (the agency's own record key) is not copied into the log.
    assert f"CRN-{case_ref[-8:]}" not in json.dumps(entry)


async def test_reading_the_audit_log_is_logged(api: Api) -> None:
    before = await audit_seq(api.node)
    status, _ = await api.call("GET", f"/api/v1/audit?after={before}", role="auditor")
    assert status == 200
    entries = await _new_entries(api.node, before)
    reads = [e for e in entries if e["op"] == "consultation" and e["shown"] == "audit_read"]
    assert len(reads) == 1 and reads[0]["operator"] == "legal-auditor"


async def test_an_admin_records_an_art_15_withholding_through_the_api(
    api: Api, cluster: Cluster
) -> None:
    pid, case_ref = await _received_pid(cluster)
    decision = {
        "pid": pid,
        "what": "item",
        "ground": "RIGHTS_OF_OTHERS",
        "review_on": "2099-01-01",
        "justification": "SUBJECT_ACCESS: the letter names a third party",
    }
    path = f"/api/v1/cases/{case_ref}/withholdings"
    status, answer = await api.call("POST", path, role="caseworker", json_body=decision)
    assert (status, answer["error"]) == (403, "forbidden")
    status, answer = await api.call("POST", path, json_body=decision)
    assert status == 201 and answer["ground"] == "RIGHTS_OF_OTHERS", answer
    status, listing = await api.call("GET", path)
    assert status == 200
    assert [(i["pid"], i["review_due"]) for i in listing["items"]] == [(pid, False)]
    why = quote("SUBJECT_ACCESS: request received by letter")
    status, export = await api.call(
        "GET", f"/api/v1/cases/{case_ref}/export?justification={why}", role="caseworker"
    )
    assert status == 200 and pid not in json.dumps(export)
