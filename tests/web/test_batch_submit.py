"""`POST /api/v1/packets:batch` (issue 14): every item is answered exactly as
`POST /api/v1/packets` answers it alone, in order; at most 256 items."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from handover.node.runtime import Node
from handover.web.batch import MAX_SUBMISSIONS
from inproc import (
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    Cluster,
    app_client,
    audit_entries,
    body,
    release_notice,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CONDITION_UPDATE = "handover/condition-update/1"
BATCH = "/api/v1/packets:batch"


@dataclass
class Api:
    client: TestClient  # type: ignore[type-arg]
    tokens: dict[str, str]

    async def post(self, path: str, payload: Any, role: str = "caseworker") -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        response = await self.client.post(path, data=data, headers=headers)
        return response.status, json.loads(await response.read())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(cluster: Cluster) -> AsyncIterator[Api]:
    node = cluster[PROBATION]
    tokens = {
        role: await cluster.operator(node, f"batch-{role}", role)
        for role in ("caseworker", "auditor")
    }
    async with app_client(node) as client:
        yield Api(client, tokens)


def good() -> dict[str, Any]:
    return {
        "to": [PRISON],
        "schema": CONDITION_UPDATE,
        "body": body(CONDITION_UPDATE),
        "justification": "licence conditions",
    }


# Refused submissions, each a different way: (name, item).
BAD: list[tuple[str, Any]] = [
    ("unknown member", {**good(), "extra": 1}),
    ("not an object", [1, 2]),
    ("string item", "a packet"),
    ("unknown schema", {**good(), "schema": "x/y/1", "body": {}}),
    ("schema invalid", {**good(), "body": {}}),
    ("no justification", {**good(), "justification": ""}),
    ("bad to", {**good(), "to": "prison"}),
    ("unknown recipient", {**good(), "to": ["nobody.test"]}),
    (
        "policy refusal",
        {
            "to": [PRISON],
            "schema": RELEASE_NOTICE,
            "body": release_notice(),
            "justification": "release planning",
        },
    ),
]


async def audit_head(node: Node) -> int:
    """The sequence number of the node's newest audit entry."""
    seq = 0
    while page := await node.audit.entries(after=seq, limit=500, case_ref=None, pid=None):
        seq = page[-1]["seq"]
    return seq


def without_pids(answer: dict[str, Any]) -> dict[str, Any]:
    out = dict(answer)
    if "packets" in out:
        out["packets"] = [{**p, "pid": "PID"} for p in out["packets"]]
    return out


async def test_each_item_is_answered_as_if_posted_alone(api: Api, cluster: Cluster) -> None:
    items = [good(), *(item for _, item in BAD), good()]
    alone = []
    for item in items:
        # A good item alone gets a fresh case of its own; its batch twin another.
        single = {**item, "body": body(CONDITION_UPDATE)} if item in (items[0], items[-1]) else item
        alone.append(await api.post("/api/v1/packets", single))
    status, answer = await api.post(BATCH, {"submissions": items})
    assert status == 200, answer
    results = answer["results"]
    assert len(results) == len(items)
    for (single_status, single_answer), result in zip(alone, results, strict=True):
        assert result["status"] == single_status
        rest = {k: v for k, v in result.items() if k != "status"}
        assert without_pids(rest) == without_pids(single_answer)
    assert [r["status"] for r in results] == [202, 400, 400, 400, 422, 422, 400, 400, 422, 422, 202]
    # The good items were sealed, queued and logged like single submissions.
    node = cluster[PROBATION]
    for result in (results[0], results[-1]):
        (packet,) = result["packets"]
        response = await api.client.get(
            f"/api/v1/packets/{packet['pid']}",
            headers={"Authorization": f"Bearer {api.tokens['caseworker']}"},
        )
        assert response.status == 200
        state = json.loads(await response.read())
        assert [d["node"] for d in state["deliveries"]] == [PRISON]
        ops = [e["op"] for e in await audit_entries(node, pid=packet["pid"])]
        assert ops[:1] == ["disclosure"]
    assert results[0]["packets"][0]["pid"] != results[-1]["packets"][0]["pid"]


async def test_256_items_are_taken_and_257_refused_whole(api: Api, cluster: Cluster) -> None:
    node = cluster[PROBATION]
    before = await audit_head(node)
    status, answer = await api.post(BATCH, {"submissions": [good()] * (MAX_SUBMISSIONS + 1)})
    assert status == 413 and answer["error"] == "too_large", answer
    assert "at most 256" in answer["message"]
    assert await audit_head(node) == before  # nothing queued, nothing logged

    items = [good() for _ in range(MAX_SUBMISSIONS)]
    status, answer = await api.post(BATCH, {"submissions": items})
    assert status == 200, answer
    assert [r["status"] for r in answer["results"]] == [202] * MAX_SUBMISSIONS
    pids = {r["packets"][0]["pid"] for r in answer["results"]}
    assert len(pids) == MAX_SUBMISSIONS


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        [good()],
        {},
        {"submissions": []},
        {"submissions": good()},
        {"submissions": [good()], "extra": 1},
    ],
)
async def test_a_malformed_batch_is_refused_whole(api: Api, payload: Any) -> None:
    status, answer = await api.post(BATCH, payload)
    assert status == 400 and answer["error"] == "bad_request", answer


async def test_an_auditor_may_not_submit_a_batch(api: Api) -> None:
    status, answer = await api.post(BATCH, {"submissions": [good()]}, role="auditor")
    assert status == 403 and answer["error"] == "forbidden"
