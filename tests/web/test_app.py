"""The aiohttp application of an in-process node (`create_app`), through aiohttp's
test client: roles at the edge, one error body shape with the status of
`web/errors.py` STATUS, and the federation answers of docs/protocol.md section 6."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from handover.node.runtime import Node
from handover.protocol.canonical import b64u_decode, cj_dumps
from handover.protocol.packet import MEDIA_TYPE
from handover.store.errors import StoreError
from handover.web.errors import STATUS
from handover.workflow.errors import ErrorCode
from inproc import (
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    Cluster,
    app_client,
    body,
    check_receipt,
    release_notice,
    seal_from,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROLES = ("admin", "caseworker", "auditor")
CONDITION_UPDATE = "handover/condition-update/1"


@dataclass
class Api:
    client: TestClient  # type: ignore[type-arg]
    tokens: dict[str, str]

    async def call(
        self,
        method: str,
        path: str,
        *,
        role: str | None = "admin",
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request as an operator of `role` (None: no token); status and decoded JSON."""
        sent = dict(headers or {})
        if role is not None:
            sent.setdefault("Authorization", f"Bearer {self.tokens.get(role, role)}")
        response = await self.client.request(method, path, json=json_body, data=data, headers=sent)
        raw = await response.read()
        return response.status, json.loads(raw) if raw else None


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(cluster: Cluster) -> AsyncIterator[Api]:
    """probation.test's app on a test server, with an operator of each role."""
    node = cluster[PROBATION]
    tokens = {role: await cluster.operator(node, f"web-{role}", role) for role in ROLES}
    async with app_client(node) as client:
        yield Api(client, tokens)


def assert_error(status: int, answer: Any, code: ErrorCode, *, message: bool = True) -> str:
    """The one error shape: `{"error": code, "message": ...}` with STATUS[code]."""
    assert status == STATUS[code], (status, answer)
    assert answer["error"] == code.value
    assert set(answer) == ({"error", "message"} if message else {"error"})
    text: str = answer.get("message", "")
    return text


# --- roles -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "role", "words"),
    [
        ("GET", "/api/v1/inbox", "auditor", "role auditor may not read"),
        ("POST", "/api/v1/packets", "auditor", "role auditor may not send"),
        ("GET", "/api/v1/audit", "caseworker", "role caseworker may not audit"),
        ("POST", "/api/v1/audit/verify", "caseworker", "role caseworker may not audit"),
        ("POST", "/api/v1/packets/x/restriction/lift", "caseworker", "may not admin"),
        ("GET", "/api/v1/cases", "auditor", "may not read"),
    ],
)
async def test_a_role_without_the_permission_is_forbidden(
    api: Api, method: str, path: str, role: str, words: str
) -> None:
    status, answer = await api.call(method, path, role=role, json_body={})
    assert words in assert_error(status, answer, ErrorCode.FORBIDDEN)


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, "a bearer token is required"),
        ({"Authorization": "Basic d2ViOndlYg=="}, "the 'Bearer ' prefix is missing"),
        ({"Authorization": "hov_not-a-token"}, "the 'Bearer ' prefix is missing"),
        ({"Authorization": "Bearer "}, "a bearer token is required"),
        ({"Authorization": "Bearer hov_not-a-token"}, "the bearer token is not valid"),
    ],
)
async def test_without_a_valid_token_the_local_api_answers_401(
    api: Api, headers: dict[str, str], words: str
) -> None:
    status, answer = await api.call("GET", "/api/v1/inbox", role=None, headers=headers)
    assert words in assert_error(status, answer, ErrorCode.UNAUTHORIZED)


@pytest.mark.parametrize(
    ("path", "roles"),
    [
        ("/api/v1/inbox", ("admin", "caseworker")),
        ("/api/v1/cases", ("admin", "caseworker")),
        ("/api/v1/audit", ("admin", "auditor")),
    ],
)
async def test_each_role_reaches_what_it_may(api: Api, path: str, roles: tuple[str, ...]) -> None:
    for role in roles:
        status, answer = await api.call("GET", path, role=role)
        assert status == 200, (role, answer)


async def test_federation_and_health_routes_need_no_token(api: Api, probation: Node) -> None:
    response = await api.client.get("/.well-known/handover/keyset")
    assert response.status == 200
    assert await response.read() == probation.keyset_wire()
    status, answer = await api.call("GET", "/healthz", role=None)
    assert (status, answer) == (200, {"status": "ok"})


# --- error bodies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "payload", "code"),
    [
        ("POST", "/api/v1/packets", b"{not json", ErrorCode.BAD_REQUEST),
        ("POST", "/api/v1/packets", [1, 2], ErrorCode.BAD_REQUEST),
        ("POST", "/api/v1/packets", {"to": [PRISON], "extra": 1}, ErrorCode.BAD_REQUEST),
        (
            "POST",
            "/api/v1/packets",
            {
                "to": [PRISON],
                "schema": "x/y/1",
                "body": {},
                "justification": "checking the error answers",
            },
            ErrorCode.UNKNOWN_SCHEMA,
        ),
        (
            "POST",
            "/api/v1/packets",
            {
                "to": [PRISON],
                "schema": RELEASE_NOTICE,
                "body": {},
                "justification": "checking the error answers",
            },
            ErrorCode.SCHEMA_INVALID,
        ),
        (
            "POST",
            "/api/v1/packets",
            {"to": [PRISON], "schema": CONDITION_UPDATE, "body": {}, "justification": ""},
            ErrorCode.JUSTIFICATION_REQUIRED,
        ),
        (
            "GET",
            "/api/v1/inbox/AAAAAAAAAAAAAAAAAAAAAA?justification=reading+a+packet",
            None,
            ErrorCode.NOT_FOUND,
        ),
        ("GET", "/api/v1/inbox/AAAAAAAAAAAAAAAAAAAAAA", None, ErrorCode.JUSTIFICATION_REQUIRED),
        ("GET", "/api/v1/inbox?limit=many", None, ErrorCode.BAD_REQUEST),
        ("GET", "/api/v1/packets/AAAAAAAAAAAAAAAAAAAAAA", None, ErrorCode.NOT_FOUND),
        ("GET", "/api/v1/cases/HC-UNKNOWN", None, ErrorCode.NOT_FOUND),
        (
            "POST",
            "/api/v1/reviews/AAAAAAAAAAAAAAAAAAAAAA",
            {"outcome": "ERASE"},
            ErrorCode.JUSTIFICATION_REQUIRED,
        ),
        (
            "POST",
            "/api/v1/reviews/AAAAAAAAAAAAAAAAAAAAAA",
            {"outcome": "ERASE", "justification": "checking the error answers"},
            ErrorCode.NOT_FOUND,
        ),
        ("PUT", "/api/v1/cases/HC-UNKNOWN/local-id", {"id": 1}, ErrorCode.BAD_REQUEST),
    ],
)
async def test_refusals_are_one_json_shape_with_the_status_of_their_code(
    api: Api, method: str, path: str, payload: Any, code: ErrorCode
) -> None:
    if isinstance(payload, bytes):
        status, answer = await api.call(method, path, data=payload)
    else:
        status, answer = await api.call(method, path, json_body=payload)
    assert assert_error(status, answer, code)


async def test_a_policy_refusal_names_the_recipient(api: Api) -> None:
    status, answer = await api.call(
        "POST",
        "/api/v1/packets",
        json_body={
            "to": [PRISON],
            "schema": RELEASE_NOTICE,
            "body": release_notice(),
            "justification": "checking the error answers",
        },
    )
    message = assert_error(status, answer, ErrorCode.NOT_PERMITTED)
    assert PRISON in message and "probation" in message


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/api/v1/nothing-here", ErrorCode.NOT_FOUND),
        ("DELETE", "/api/v1/inbox", ErrorCode.METHOD_NOT_ALLOWED),
    ],
)
async def test_routing_refusals_have_the_same_shape(
    api: Api, method: str, path: str, code: ErrorCode
) -> None:
    status, answer = await api.call(method, path)
    assert_error(status, answer, code, message=False)


async def test_a_body_that_cannot_be_decrypted_is_body_unavailable_naming_the_packet(
    api: Api, prison: Node, probation: Node
) -> None:
    packet = seal_from(prison, probation, RELEASE_NOTICE, release_notice())
    await probation.receiver.receive_many([packet.wire])
    async with probation.db.connection() as conn:
        await conn.execute(
            "UPDATE received SET body_box = $1 WHERE pid = $2", bytes(range(64)), packet.pid
        )
    status, answer = await api.call(
        "GET",
        f"/api/v1/inbox/{packet.pid}",
        headers={"Handover-Justification": "checking the stored body"},
    )
    assert packet.pid in assert_error(status, answer, ErrorCode.BODY_UNAVAILABLE)


async def test_an_unexpected_error_is_a_plain_500_without_its_detail(
    api: Api, probation: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(**kwargs: Any) -> list[dict[str, Any]]:
        raise RuntimeError("detail that must stay in the log")

    monkeypatch.setattr(probation.inbox, "list", broken)
    status, answer = await api.call("GET", "/api/v1/inbox")
    assert_error(status, answer, ErrorCode.INTERNAL_ERROR, message=False)


async def test_a_database_failure_is_503_unavailable(
    api: Api, probation: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(**kwargs: Any) -> list[dict[str, Any]]:
        raise StoreError("connection refused by 10.0.0.7")

    monkeypatch.setattr(probation.inbox, "list", down)
    status, answer = await api.call("GET", "/api/v1/inbox")
    assert "10.0.0.7" not in assert_error(status, answer, ErrorCode.UNAVAILABLE)


# --- the local API at work ------------------------------------------------------------------


async def test_a_submission_is_accepted_and_its_status_readable(api: Api) -> None:
    update = body(CONDITION_UPDATE)
    status, answer = await api.call(
        "POST",
        "/api/v1/packets",
        role="caseworker",
        json_body={
            "to": [PRISON],
            "schema": CONDITION_UPDATE,
            "body": update,
            "justification": "licence conditions",
        },
    )
    assert status == 202, answer
    (packet,) = answer["packets"]
    assert (packet["to"], packet["removed"]) == ([PRISON], [])
    status, answer = await api.call("GET", f"/api/v1/packets/{packet['pid']}", role="caseworker")
    assert status == 200
    assert (answer["pid"], answer["case_ref"]) == (packet["pid"], update["case_ref"])
    assert answer["deliveries"][0]["node"] == PRISON


async def test_a_received_body_is_read_with_a_justification(
    api: Api, prison: Node, probation: Node
) -> None:
    notice = release_notice()
    packet = seal_from(prison, probation, RELEASE_NOTICE, notice)
    await probation.receiver.receive_many([packet.wire])
    status, answer = await api.call(
        "GET",
        f"/api/v1/inbox/{packet.pid}?justification=supervision+plan+review",
        role="caseworker",
    )
    assert status == 200
    assert (answer["body"], answer["sender"]) == (notice, PRISON)
    status, answer = await api.call("GET", f"/api/v1/audit?pid={packet.pid}", role="auditor")
    assert [e["entry"]["op"] for e in answer["entries"]] == ["collection", "consultation"]
    assert answer["entries"][1]["entry"]["justification"] == "supervision plan review"


# --- federation -----------------------------------------------------------------------------


async def post_packet(api: Api, wire: bytes, content_type: str = MEDIA_TYPE) -> tuple[int, bytes]:
    response = await api.client.post(
        "/federation/v1/packets", data=wire, headers={"Content-Type": content_type}
    )
    return response.status, await response.read()


async def test_an_invalid_packet_is_400_invalid_packet(api: Api) -> None:
    status, raw = await post_packet(api, b'{"hp1":"not a packet"}')
    assert_error(status, json.loads(raw), ErrorCode.INVALID_PACKET, message=False)


async def test_an_accepted_packet_is_200_with_its_receipt(
    api: Api, prison: Node, probation: Node
) -> None:
    packet = seal_from(prison, probation, RELEASE_NOTICE, release_notice())
    status, raw = await post_packet(api, packet.wire)
    assert status == 200
    receipt = check_receipt(prison, packet, raw)
    assert (receipt.status, receipt.signer) == ("accepted", PROBATION)
    assert await post_packet(api, packet.wire) == (200, raw)  # a retry: the same receipt


async def test_a_policy_rejection_is_422_with_a_signed_rejected_receipt(
    api: Api, prison: Node, probation: Node
) -> None:
    packet = seal_from(prison, probation, CONDITION_UPDATE, body(CONDITION_UPDATE))
    status, raw = await post_packet(api, packet.wire)
    assert status == 422
    receipt = check_receipt(prison, packet, raw)
    assert (receipt.status, receipt.reason and receipt.reason.value) == (
        "rejected",
        "not_permitted",
    )


async def test_a_packet_of_another_media_type_is_415(
    api: Api, prison: Node, probation: Node
) -> None:
    notice = release_notice()
    packet = seal_from(prison, probation, RELEASE_NOTICE, notice)
    status, raw = await post_packet(api, packet.wire, "text/plain")
    assert_error(status, json.loads(raw), ErrorCode.UNSUPPORTED_MEDIA_TYPE, message=False)
    assert await probation.inbox.list(limit=5, before=None, case_ref=notice["case_ref"]) == []


async def test_a_batch_is_answered_packet_by_packet(
    api: Api, prison: Node, probation: Node
) -> None:
    packet = seal_from(prison, probation, RELEASE_NOTICE, release_notice())
    batch = {"packets": [json.loads(packet.wire), {"hp1": "not a packet"}]}
    response = await api.client.post("/federation/v1/packets:batch", json=batch)
    assert response.status == 200
    first, second = (await response.json())["results"]
    assert (first["status"], second) == (200, {"receipt": None, "status": 400})
    assert check_receipt(prison, packet, cj_dumps(first["receipt"])).status == "accepted"


@pytest.mark.parametrize("raw", [b"[]", b'{"packets": []}', b'{"packets": [1], "x": 2}', b"{"])
async def test_a_malformed_batch_is_400_invalid_batch(api: Api, raw: bytes) -> None:
    response = await api.client.post(
        "/federation/v1/packets:batch", data=raw, headers={"Content-Type": "application/json"}
    )
    assert_error(response.status, await response.json(), ErrorCode.INVALID_BATCH, message=False)


async def test_log_digests_are_served_within_their_limits(api: Api, probation: Node) -> None:
    status, answer = await api.call("GET", "/federation/v1/log/digests?after=0&limit=2", role=None)
    assert status == 200 and answer["after"] == 0
    assert [b64u_decode(d) for d in answer["digests"]] == await probation.entry_digests(0, 2)
    status, answer = await api.call("GET", "/federation/v1/log/digests?limit=0", role=None)
    assert_error(status, answer, ErrorCode.BAD_REQUEST)
