"""Role `system` (a case management system) through the local API of a real node:
reading a body and sending need `Handover-On-Behalf-Of: STAFF-ID`, and the audit
entry then names both the system and the member of staff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from handover.node.runtime import Node
from handover.web.errors import STATUS
from handover.workflow.errors import ErrorCode
from inproc import (
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    WHY,
    Cluster,
    app_client,
    audit_entries,
    audit_seq,
    body,
    release_notice,
    send_delivered,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CONDITION_UPDATE = "handover/condition-update/1"
SYSTEM = "cms-north"
STAFF = "cw-0042"


class Api:
    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:  # type: ignore[type-arg]
        self.client = client
        self.tokens = tokens

    async def call(
        self, method: str, path: str, *, role: str = "system", staff: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        if staff is not None:
            headers["Handover-On-Behalf-Of"] = staff
        response = await self.client.request(method, path, headers=headers, **kw)
        return response.status, await response.json()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(cluster: Cluster) -> AsyncIterator[Api]:
    node = cluster[PROBATION]
    tokens = {
        "system": await cluster.operator(node, SYSTEM, "system"),
        "caseworker": await cluster.operator(node, "obo-caseworker", "caseworker"),
    }
    async with app_client(node) as client:
        yield Api(client, tokens)


def refused(status: int, answer: Any, code: ErrorCode) -> str:
    assert (status, answer["error"]) == (STATUS[code], code.value), answer
    message: str = answer["message"]
    return message


async def test_reading_a_body_needs_a_staff_id_which_the_audit_entry_records(
    api: Api, prison: Node, probation: Node
) -> None:
    pid = await send_delivered(prison, [PROBATION], RELEASE_NOTICE, release_notice())
    path = f"/api/v1/inbox/{pid}"
    query = {"justification": WHY}

    status, answer = await api.call("GET", path, params=query)
    assert "Handover-On-Behalf-Of" in refused(status, answer, ErrorCode.ON_BEHALF_OF_REQUIRED)
    for bad in ("Jane Doe", "-x", "x" * 65, "a/b"):
        status, answer = await api.call("GET", path, staff=bad, params=query)
        refused(status, answer, ErrorCode.ON_BEHALF_OF_INVALID)
    assert not [e for e in await audit_entries(probation, pid=pid) if e["op"] == "consultation"]

    status, opened = await api.call("GET", path, staff=STAFF, params=query)
    assert status == 200 and opened["pid"] == pid
    (entry,) = [e for e in await audit_entries(probation, pid=pid) if e["op"] == "consultation"]
    assert (entry["operator"], entry["on_behalf_of"]) == (SYSTEM, STAFF)

    # Listing (no body values) and the event feed need no staff id.
    status, _page = await api.call("GET", "/api/v1/inbox")
    assert status == 200
    status, _events = await api.call("GET", "/api/v1/events", params={"limit": "1"})
    assert status == 200


async def test_sending_needs_a_staff_id_which_the_disclosure_entry_records(
    api: Api, probation: Node
) -> None:
    update = body(CONDITION_UPDATE)
    request = {"to": [PRISON], "schema": CONDITION_UPDATE, "body": update, "justification": WHY}

    status, answer = await api.call("POST", "/api/v1/packets", json=request)
    refused(status, answer, ErrorCode.ON_BEHALF_OF_REQUIRED)

    status, answer = await api.call("POST", "/api/v1/packets", staff=STAFF, json=request)
    assert status == 202, answer
    (packet,) = answer["packets"]
    (entry,) = [
        e for e in await audit_entries(probation, pid=packet["pid"]) if e["op"] == "disclosure"
    ]
    assert (entry["operator"], entry["on_behalf_of"]) == (SYSTEM, STAFF)


async def test_other_roles_do_not_need_or_record_the_header(api: Api, probation: Node) -> None:
    update = body(CONDITION_UPDATE)
    request = {"to": [PRISON], "schema": CONDITION_UPDATE, "body": update, "justification": WHY}
    status, answer = await api.call(
        "POST", "/api/v1/packets", role="caseworker", staff=STAFF, json=request
    )
    assert status == 202, answer
    (packet,) = answer["packets"]
    (entry,) = [
        e for e in await audit_entries(probation, pid=packet["pid"]) if e["op"] == "disclosure"
    ]
    assert entry["operator"] == "obo-caseworker" and "on_behalf_of" not in entry


async def test_a_subject_access_export_needs_a_staff_id_too(
    api: Api, prison: Node, probation: Node
) -> None:
    notice = release_notice()
    await send_delivered(prison, [PROBATION], RELEASE_NOTICE, notice)
    path = f"/api/v1/cases/{notice['case_ref']}/export"
    query = {"justification": "subject access request of the person"}
    status, answer = await api.call("GET", path, params=query)
    refused(status, answer, ErrorCode.ON_BEHALF_OF_REQUIRED)
    status, _export = await api.call("GET", path, staff=STAFF, params=query)
    assert status == 200
    entries = await audit_entries(probation, after=await audit_seq(probation) - 5)
    (entry,) = [
        e for e in entries if e["op"] == "consultation" and e.get("case") == notice["case_ref"]
    ]
    assert (entry["operator"], entry["on_behalf_of"]) == (SYSTEM, STAFF)
