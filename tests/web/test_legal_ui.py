"""Issue 16 in the web interface: the same justification rule, one
`consultation` entry per page of case-linked data, a `combination` entry for a
local id, and case assignment (findings 4 and 9)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from handover.node.runtime import Node
from handover.web.ui.base import COOKIE
from inproc import (
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    Cluster,
    app_client,
    audit_entries,
    audit_seq,
    release_notice,
    send_delivered,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
PASSWORD = "a long enough password"


class Ui:
    def __init__(self, client: TestClient, node: Node, cookie: str, csrf: str) -> None:  # type: ignore[type-arg]
        self.client, self.node, self.cookie, self.csrf = client, node, cookie, csrf

    async def get(self, path: str) -> tuple[int, str]:
        response = await self.client.get(path, headers={"Cookie": f"{COOKIE}={self.cookie}"})
        return response.status, await response.text()

    async def post(self, path: str, form: dict[str, str]) -> tuple[int, str]:
        response = await self.client.post(
            path,
            data={**form, "csrf_token": self.csrf},
            headers={"Cookie": f"{COOKIE}={self.cookie}"},
            allow_redirects=False,
        )
        return response.status, await response.text()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ui(cluster: Cluster) -> AsyncIterator[Ui]:
    node = cluster[PROBATION]
    await node.web_sessions.add_operator("ui-legal", "caseworker", PASSWORD, by="test")
    cookie, csrf = await node.web_sessions.sign_in("ui-legal", PASSWORD, "", "10.9.9.9")
    async with app_client(node) as client:
        yield Ui(client, node, cookie, csrf)


async def _case(cluster: Cluster) -> tuple[str, str]:
    notice = release_notice()
    pid = await send_delivered(cluster[PRISON], [PROBATION], RELEASE_NOTICE, notice)
    return pid, notice["case_ref"]


async def test_a_weak_justification_is_refused_in_the_form(ui: Ui, cluster: Cluster) -> None:
    pid, _ = await _case(cluster)
    status, text = await ui.post(f"/ui/inbox/{pid}", {"justification": "x"})
    assert status == 400 and "10 characters" in text


async def test_ui_pages_of_case_data_are_logged(ui: Ui, cluster: Cluster) -> None:
    _, case_ref = await _case(cluster)
    for path, shown in (
        ("/ui/cases", "ui_case_list"),
        (f"/ui/cases/{quote(case_ref)}", "ui_case_view"),
        ("/ui/inbox", "ui_inbox_list"),
        ("/ui/overdue", "ui_overdue_list"),
    ):
        before = await audit_seq(ui.node)
        status, _ = await ui.get(path)
        assert status == 200, path
        entries = [e for e in await audit_entries(ui.node, after=before) if e.get("shown") == shown]
        assert len(entries) == 1 and entries[0]["operator"] == "ui-legal", (path, entries)
    before = await audit_seq(ui.node)
    status, _ = await ui.post(f"/ui/cases/{quote(case_ref)}/local-id", {"local_id": "UI-7"})
    assert status in (302, 303)
    (entry,) = [e for e in await audit_entries(ui.node, after=before) if e["op"] == "combination"]
    assert entry["case"] == case_ref


async def test_an_unassigned_case_is_refused_in_the_ui_when_assignment_is_required(
    ui: Ui, cluster: Cluster
) -> None:
    _, case_ref = await _case(cluster)
    ui.node.assignments.required = True
    try:
        status, _ = await ui.get(f"/ui/cases/{quote(case_ref)}")
        assert status == 403
        status, text = await ui.get("/ui/cases")
        assert status == 200 and case_ref not in text
    finally:
        ui.node.assignments.required = False
