"""The local API for case management systems (bearer token of an operator).

Roles: `admin` (operators, peers, keys, and everything a caseworker and an
auditor may do), `caseworker` (send, read the inbox and cases), `auditor`
(read and verify the audit log; never bodies).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from handover.errors import ApiError
from handover.packet import MAX_REQUEST_BYTES
from handover.service import Operator
from handover.web.app import NODE_KEY, json_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPERATOR_KEY = "handover.operator"
MAX_PAGE = 500

PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"send", "read", "audit", "admin"}),
    "caseworker": frozenset({"send", "read"}),
    "auditor": frozenset({"audit"}),
}


def requires(permission: str) -> Callable[[Handler], Handler]:
    """Authenticate the bearer token at the edge and check the role's permission."""

    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            node = request.app[NODE_KEY]
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "unauthorized", "a bearer token is required")
            operator = await node.authenticate(token.strip())
            if operator is None:
                raise ApiError(401, "unauthorized", "the bearer token is not valid")
            if permission not in PERMISSIONS.get(operator.role, frozenset()):
                raise ApiError(403, "forbidden", f"role {operator.role} may not {permission}")
            request[OPERATOR_KEY] = operator
            return await handler(request)

        return wrapped

    return decorate


def _operator(request: web.Request) -> Operator:
    operator: Operator = request[OPERATOR_KEY]
    return operator


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_request", "the request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the request body must be a JSON object")
    return data


def _page_args(request: web.Request) -> tuple[int, int | None]:
    try:
        limit = int(request.query.get("limit", "100"))
        before = request.query.get("before")
        return max(1, min(limit, MAX_PAGE)), None if before is None else int(before)
    except ValueError as exc:
        raise ApiError(400, "bad_request", "limit and before must be integers") from exc


@requires("send")
async def submit_packet(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    # A body is held in several forms while it is sealed: admit by size.
    async with node.budget.take(request.content_length or MAX_REQUEST_BYTES):
        data = await _json_body(request)
        unknown = set(data) - {"to", "schema", "body", "justification", "minimise"}
        if unknown:
            raise ApiError(400, "bad_request", f"unknown members: {', '.join(sorted(unknown))}")
        packets = await node.service.submit(
            _operator(request),
            to=data.get("to"),
            schema_id=data.get("schema"),
            body=data.get("body"),
            justification=data.get("justification"),
            minimise=data.get("minimise", False),
        )
    return json_response({"packets": packets}, status=202)


@requires("read")
async def get_packet(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return json_response(await node.service.packet_status(request.match_info["pid"]))


@requires("read")
async def list_inbox(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    limit, before = _page_args(request)
    items = await node.service.inbox(limit=limit, before=before, case_ref=request.query.get("case"))
    next_before = items[-1]["received_at"] if len(items) == limit else None
    return json_response({"items": items, "next_before": next_before})


@requires("read")
async def read_inbox(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    justification = request.query.get("justification") or request.headers.get(
        "Handover-Justification"
    )
    if not justification:
        raise ApiError(
            400,
            "justification_required",
            "reading a body needs a justification: query parameter 'justification'"
            " or header 'Handover-Justification'",
        )
    opened = await node.service.read_inbox(
        _operator(request), request.match_info["pid"], justification
    )
    return json_response(opened)


@requires("audit")
async def list_audit(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    try:
        after = int(request.query.get("after", "0"))
        limit = max(1, min(int(request.query.get("limit", "100")), MAX_PAGE))
    except ValueError as exc:
        raise ApiError(400, "bad_request", "after and limit must be integers") from exc
    entries = await node.audit_entries(
        after=after, limit=limit, case_ref=request.query.get("case"), pid=request.query.get("pid")
    )
    next_after = entries[-1]["seq"] if len(entries) == limit else None
    return json_response({"entries": entries, "next_after": next_after})


@requires("audit")
async def verify_audit(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    peers = request.query.get("peers") in ("1", "true", "yes")
    report = await node.verify_audit(peers=peers)
    return json_response(report, status=200 if report["ok"] else 409)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/packets", submit_packet)
    app.router.add_get("/api/v1/packets/{pid}", get_packet)
    app.router.add_get("/api/v1/inbox", list_inbox)
    app.router.add_get("/api/v1/inbox/{pid}", read_inbox)
    app.router.add_get("/api/v1/audit", list_audit)
    app.router.add_post("/api/v1/audit/verify", verify_audit)
