"""Issue 16, finding 9 (LED Art 20, 29): with `case_assignment = "required"`
a caseworker sees only the cases assigned to them or their team; a logged
break-glass read is possible for urgent risk-of-harm work; `handover packet
open --dir` writes a `consultation` entry in the node's audit log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from handover.node.runtime import Node
from handover.protocol.timeutil import now_ms
from inproc import (
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    WHY,
    Cluster,
    app_client,
    audit_entries,
    audit_seq,
    release_notice,
    run_cli,
    seal_from,
    send_delivered,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
READ = quote(WHY)


class Api:
    def __init__(self, client: TestClient, tokens: dict[str, str], node: Node) -> None:  # type: ignore[type-arg]
        self.client = client
        self.tokens = tokens
        self.node = node

    async def call(
        self,
        method: str,
        path: str,
        *,
        role: str = "caseworker",
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        sent = {"Authorization": f"Bearer {self.tokens[role]}", **(headers or {})}
        response = await self.client.request(method, path, json=json_body, headers=sent)
        raw = await response.read()
        return response.status, json.loads(raw) if raw else None


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(cluster: Cluster) -> AsyncIterator[Api]:
    """probation.test with case assignment required (as `handover init
    --case-assignment required` sets it), and operators of each role."""
    node = cluster[PROBATION]
    roles = {"admin": "admin", "caseworker": "caseworker", "colleague": "caseworker"}
    tokens = {key: await cluster.operator(node, f"lp-{key}", role) for key, role in roles.items()}
    async with app_client(node) as client:
        node.assignments.required = True
        try:
            yield Api(client, tokens, node)
        finally:
            node.assignments.required = False


async def _case(cluster: Cluster) -> tuple[str, str]:
    notice = release_notice()
    pid = await send_delivered(cluster[PRISON], [PROBATION], RELEASE_NOTICE, notice)
    return pid, notice["case_ref"]


async def test_a_caseworker_sees_only_assigned_cases(api: Api, cluster: Cluster) -> None:
    pid, case_ref = await _case(cluster)
    status, answer = await api.call("GET", f"/api/v1/cases/{case_ref}")
    assert (status, answer["error"]) == (403, "forbidden"), answer
    assert "Handover-Break-Glass" in answer["message"]
    assert (await api.call("GET", f"/api/v1/inbox/{pid}?justification={READ}"))[0] == 403
    _, listing = await api.call("GET", "/api/v1/cases?limit=500")
    assert case_ref not in {i["case_ref"] for i in listing["items"]}
    _, inbox = await api.call("GET", "/api/v1/inbox?limit=500")
    assert pid not in {i["pid"] for i in inbox["items"]}
    # An admin is not limited, and assigns the case.
    assert (await api.call("GET", f"/api/v1/cases/{case_ref}", role="admin"))[0] == 200
    status, answer = await api.call(
        "PUT",
        f"/api/v1/cases/{case_ref}/assignment",
        role="admin",
        json_body={"operators": ["lp-caseworker"], "justification": WHY},
    )
    assert status == 200 and answer["operators"] == ["lp-caseworker"], answer
    assert (await api.call("GET", f"/api/v1/cases/{case_ref}"))[0] == 200
    assert (await api.call("GET", f"/api/v1/inbox/{pid}?justification={READ}"))[0] == 200
    _, listing = await api.call("GET", "/api/v1/cases?limit=500")
    assert case_ref in {i["case_ref"] for i in listing["items"]}
    # ... and only to that caseworker.
    assert (await api.call("GET", f"/api/v1/cases/{case_ref}", role="colleague"))[0] == 403


async def test_a_team_assignment_covers_its_members(api: Api, cluster: Cluster) -> None:
    _, case_ref = await _case(cluster)
    await run_cli("teams", "set", "--dir", str(api.node.config.directory), "lp-colleague", "north")
    status, _ = await api.call(
        "PUT",
        f"/api/v1/cases/{case_ref}/assignment",
        role="admin",
        json_body={"teams": ["north"], "justification": WHY},
    )
    assert status == 200
    assert (await api.call("GET", f"/api/v1/cases/{case_ref}", role="colleague"))[0] == 200
    assert (await api.call("GET", f"/api/v1/cases/{case_ref}"))[0] == 403


async def test_a_break_glass_read_is_allowed_and_logged(api: Api, cluster: Cluster) -> None:
    _, case_ref = await _case(cluster)
    weak = {"Handover-Break-Glass": "x"}
    status, answer = await api.call("GET", f"/api/v1/cases/{case_ref}", headers=weak)
    assert (status, answer["error"]) == (400, "justification_too_weak")
    before = await audit_seq(api.node)
    why = "RISK_OF_HARM: threat to a named victim reported tonight"
    status, _ = await api.call(
        "GET", f"/api/v1/cases/{case_ref}", headers={"Handover-Break-Glass": why}
    )
    assert status == 200
    entries = [e for e in await audit_entries(api.node, after=before) if e["op"] == "consultation"]
    (entry,) = entries
    assert entry["break_glass"] is True and entry["purpose"] == "RISK_OF_HARM"
    assert entry["operator"] == "lp-caseworker" and entry["case"] == case_ref


async def test_packet_open_with_a_node_directory_is_logged(cluster: Cluster, tmp_path: Any) -> None:
    prison, probation = cluster[PRISON], cluster[PROBATION]
    # Sealed at the wall clock: the CLI checks times against it, not the cluster's clock.
    sealed = seal_from(prison, probation, RELEASE_NOTICE, release_notice(), now=now_ms())
    packet = tmp_path / "packet.json"
    packet.write_bytes(sealed.wire)
    keyset = prison.config.directory / "keys" / "keyset.json"
    directory = str(probation.config.directory)
    common = ["packet", "open", "--dir", directory, "--sender", str(keyset)]
    common += ["--fingerprint", cluster.fingerprints[PRISON]]
    before = await audit_seq(probation)
    out = await run_cli(*common, "--justification", WHY, str(packet))
    assert json.loads(out)["schema"] == RELEASE_NOTICE
    (entry,) = [e for e in await audit_entries(probation, after=before) if e.get("pid")]
    assert entry["op"] == "consultation" and entry["shown"] == "packet_open_offline"
    assert entry["pid"] == sealed.pid and entry["justification"] == WHY
    assert "case_ref" in entry["fields"]


async def test_a_subject_access_export_of_an_unassigned_case_needs_the_glass_broken(
    api: Api, cluster: Cluster
) -> None:
    _, case_ref = await _case(cluster)
    path = f"/api/v1/cases/{case_ref}/export?justification={READ}"
    assert (await api.call("GET", path))[0] == 403
    before = await audit_seq(api.node)
    why = "RISK_OF_HARM: police request about an imminent threat"
    status, export = await api.call("GET", path, headers={"Handover-Break-Glass": why})
    assert status == 200 and export["case"]["case_ref"] == case_ref
    flagged = [e for e in await audit_entries(api.node, after=before) if e.get("break_glass")]
    assert [e["shown"] for e in flagged] == ["subject_export"]
