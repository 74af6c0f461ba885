"""The integrator's listings through the local API of in-process nodes:
sent packets with filters and a cursor (GET /api/v1/packets), the answers a
node owes (GET /api/v1/owed), audit queries (GET /api/v1/audit), the
document itself (GET /api/v1/openapi.yaml), and refusals that say what to do
(a recipient that is yourself, one that is not pinned)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from handover.node.runtime import Node
from handover.store import listings
from handover.web.app import create_app
from inproc import (
    CASEWORKER,
    EXIT,
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    Cluster,
    body,
    deliver,
    release_notice,
    send,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CARE_ACK = "handover/care-acknowledgement/1"
OPENAPI = Path(__file__).resolve().parents[2] / "schemas" / "openapi.yaml"


class Client:
    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:  # type: ignore[type-arg]
        self.client = client
        self.tokens = tokens

    async def call(
        self, method: str, path: str, *, role: str = "admin", json_body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        response = await self.client.request(method, path, json=json_body, headers=headers)
        raw = await response.read()
        return response.status, json.loads(raw) if raw else None


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def clients(cluster: Cluster) -> AsyncIterator[dict[str, Client]]:
    made: dict[str, Client] = {}
    try:
        for name in (PRISON, EXIT):
            node = cluster[name]
            tokens = {
                role: await cluster.operator(node, f"list-{role}", role)
                for role in ("admin", "caseworker", "auditor")
            }
            client = TestClient(TestServer(create_app(node)))
            await client.start_server()
            made[name] = Client(client, tokens)
        yield made
    finally:
        for c in made.values():
            await c.client.close()


# --- item 2: sent packets ----------------------------------------------------------------


async def test_sent_packets_are_listed_with_filters_and_a_cursor(
    prison: Node, clients: dict[str, Client]
) -> None:
    api = clients[PRISON]
    notices = [release_notice() for _ in range(3)]
    pids = [(await send(prison, [PROBATION], RELEASE_NOTICE, n))[0]["pid"] for n in notices]

    status, page = await api.call("GET", "/api/v1/packets?status=pending&limit=2")
    assert status == 200, page
    assert [i["pid"] for i in page["items"]] == pids[::-1][:2]
    assert page["items"][0]["deliveries"][0]["status"] == "pending"
    assert page["next_after"] and pids[1] not in page["next_after"]  # opaque
    after = page["next_after"]
    status, rest = await api.call("GET", f"/api/v1/packets?status=pending&after={after}")
    assert status == 200
    assert pids[0] in [i["pid"] for i in rest["items"]]
    assert not {i["pid"] for i in rest["items"]} & {pids[2], pids[1]}

    status, one = await api.call("GET", f"/api/v1/packets?case={notices[1]['case_ref']}")
    assert [i["pid"] for i in one["items"]] == [pids[1]] and one["next_after"] is None

    await deliver(prison, *pids)
    status, delivered = await api.call("GET", "/api/v1/packets?status=delivered&limit=500")
    assert set(pids) <= {i["pid"] for i in delivered["items"]}
    status, pending = await api.call("GET", "/api/v1/packets?status=pending&limit=500")
    assert not set(pids) & {i["pid"] for i in pending["items"]}


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("status=lost", "status must be one of pending, delivered, rejected, expired"),
        ("after=not-a-cursor", "after is not a cursor this node gave"),
        ("limit=many", "limit must be an integer"),
        ("stauts=pending", "unknown query parameters: stauts"),
    ],
)
async def test_a_bad_listing_query_says_what_is_wrong(
    clients: dict[str, Client], query: str, words: str
) -> None:
    status, answer = await clients[PRISON].call("GET", f"/api/v1/packets?{query}")
    assert (status, answer["error"]) == (400, "bad_request")
    assert words in answer["message"]


async def test_the_page_size_is_bounded(prison: Node, clients: dict[str, Client]) -> None:
    status, page = await clients[PRISON].call("GET", "/api/v1/packets?limit=100000")
    assert status == 200 and len(page["items"]) <= 500


# --- item 7: recipients --------------------------------------------------------------------


async def test_yourself_and_an_unknown_agency_are_different_errors(
    clients: dict[str, Client],
) -> None:
    payload = {
        "schema": RELEASE_NOTICE,
        "body": release_notice(),
        "justification": "release planning for the case",
    }
    status, answer = await clients[PRISON].call(
        "POST", "/api/v1/packets", json_body={**payload, "to": [PRISON]}
    )
    assert (status, answer["error"]) == (422, "recipient_is_self")
    assert f"{PRISON} is this node" in answer["message"]
    status, answer = await clients[PRISON].call(
        "POST", "/api/v1/packets", json_body={**payload, "to": ["nobody.example"]}
    )
    assert (status, answer["error"]) == (422, "unknown_recipient")
    assert "nobody.example is not a pinned peer" in answer["message"]
    assert "kind" not in answer["message"]


# --- item 12: what a node owes ---------------------------------------------------------------


async def test_the_receiving_side_lists_the_answer_it_owes_until_it_is_sent(
    prison: Node, exit_org: Node, clients: dict[str, Client]
) -> None:
    release = (dt.date.today() + dt.timedelta(days=60)).isoformat()
    notice = release_notice(expected_release_date=release, confirmed_release_date=release)
    case = notice["case_ref"]
    packets = await send(prison, [EXIT], RELEASE_NOTICE, notice, minimise=True)
    (packet,) = packets
    await deliver(prison, packet["pid"])

    status, owed = await clients[EXIT].call("GET", "/api/v1/owed", role="caseworker")
    assert status == 200
    mine = [i for i in owed["items"] if i["case_ref"] == case]
    assert [(i["to"], i["pid"], i["schemas"], i["overdue"]) for i in mine] == [
        (PRISON, packet["pid"], [CARE_ACK], False)
    ]
    deadline = dt.datetime.fromisoformat(release).replace(tzinfo=dt.UTC) - dt.timedelta(days=14)
    assert mine[0]["deadline"] == int(deadline.timestamp() * 1000)
    # The sender's node holds the same item as an expectation.
    (expected,) = (await prison.cases.show(case))["expectations"]
    assert (expected["node"], expected["deadline"]) == (EXIT, mine[0]["deadline"])

    answer = body(CARE_ACK, 1, case_ref=case, in_reply_to=packet["pid"])
    (sent,) = await send(exit_org, [PRISON], CARE_ACK, answer)
    status, owed = await clients[EXIT].call("GET", "/api/v1/owed", role="caseworker")
    assert not [i for i in owed["items"] if i["case_ref"] == case]
    await deliver(exit_org, sent["pid"])


def due(release: str) -> int:
    day = dt.datetime.fromisoformat(release).replace(tzinfo=dt.UTC) - dt.timedelta(days=14)
    return int(day.timestamp() * 1000)


async def test_a_corrected_release_date_moves_what_is_owed(
    prison: Node, clients: dict[str, Client]
) -> None:
    first = (dt.date.today() + dt.timedelta(days=60)).isoformat()
    later = (dt.date.today() + dt.timedelta(days=90)).isoformat()
    notice = release_notice(expected_release_date=first, confirmed_release_date=first)
    (packet,) = await send(prison, [EXIT], RELEASE_NOTICE, notice, minimise=True)
    await deliver(prison, packet["pid"])

    async def owed_deadline() -> int:
        _, owed = await clients[EXIT].call("GET", "/api/v1/owed?limit=500")
        (item,) = [i for i in owed["items"] if i["pid"] == packet["pid"]]
        deadline: int = item["deadline"]
        return deadline

    assert await owed_deadline() == due(first)
    corrected = {**notice, "expected_release_date": later, "confirmed_release_date": later}
    result = await prison.rectification.rectify(
        CASEWORKER,
        packet["pid"],
        action="RECTIFY",
        reason="INACCURATE",
        justification="the release date moved",
        corrected_body=corrected,
    )
    await deliver(prison, *[p["pid"] for p in result["packets"]])
    assert await owed_deadline() == due(later)


# --- item 11: audit queries -------------------------------------------------------------------


async def test_audit_entries_are_filtered_by_operator_op_case_and_time(
    prison: Node, clients: dict[str, Client]
) -> None:
    api = clients[PRISON]
    notice = release_notice()
    status, answer = await api.call(
        "POST",
        "/api/v1/packets",
        role="caseworker",
        json_body={
            "to": [PROBATION],
            "schema": RELEASE_NOTICE,
            "body": notice,
            "justification": "release planning for the case",
        },
    )
    assert status == 202, answer
    pid = answer["packets"][0]["pid"]
    await deliver(prison, pid)

    status, page = await api.call(
        "GET", "/api/v1/audit?operator=list-caseworker&op=disclosure&limit=500", role="auditor"
    )
    assert status == 200, page
    assert pid in [e["entry"]["pid"] for e in page["entries"]]
    assert {(e["entry"]["op"], e["entry"]["operator"]) for e in page["entries"]} == {
        ("disclosure", "list-caseworker")
    }
    case = notice["case_ref"]
    status, page = await api.call("GET", f"/api/v1/audit?case={case}", role="auditor")
    assert [(e["entry"]["op"], e["entry"]["pid"]) for e in page["entries"]] == [("disclosure", pid)]
    status, page = await api.call("GET", f"/api/v1/audit?pid={pid}", role="auditor")
    assert [e["entry"]["op"] for e in page["entries"]] == ["disclosure", "delivery"]
    status, page = await api.call("GET", f"/api/v1/audit?pid={pid}&op=delivery", role="auditor")
    assert [e["entry"]["op"] for e in page["entries"]] == ["delivery"]
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    status, page = await api.call(
        "GET", f"/api/v1/audit?case={case}&op=disclosure&since={tomorrow}", role="auditor"
    )
    assert (status, page["entries"]) == (200, [])
    status, page = await api.call(
        "GET",
        f"/api/v1/audit?case={case}&op=disclosure&until={tomorrow}T00:00:00Z",
        role="auditor",
    )
    assert len(page["entries"]) == 1
    status, answer = await api.call("GET", "/api/v1/audit?since=10/12/2026", role="auditor")
    assert status == 400 and "since must be YYYY-MM-DD" in answer["message"]


async def test_an_audit_page_scans_a_bounded_number_of_entries(
    prison: Node, clients: dict[str, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listings, "AUDIT_SCAN", 2)
    api = clients[PRISON]
    status, page = await api.call("GET", "/api/v1/audit?op=nothing-like-this", role="auditor")
    assert status == 200
    assert page["entries"] == [] and page["next_after"] == 2
    status, page = await api.call("GET", "/api/v1/audit?after=2&limit=500", role="auditor")
    assert [e["seq"] for e in page["entries"]] == [3, 4]


# --- item 1: the document is served ---------------------------------------------------------------


async def test_the_openapi_document_is_served_to_any_operator(clients: dict[str, Client]) -> None:
    client = clients[EXIT].client
    for role in ("admin", "caseworker", "auditor"):
        headers = {"Authorization": f"Bearer {clients[EXIT].tokens[role]}"}
        response = await client.get("/api/v1/openapi.yaml", headers=headers)
        assert response.status == 200
        assert response.content_type == "application/yaml"
        assert await response.read() == OPENAPI.read_bytes()
    response = await client.get("/api/v1/openapi.yaml")
    assert response.status == 401
