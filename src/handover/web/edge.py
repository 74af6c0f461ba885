"""The edge of the local API: authentication, roles and request parsing.

An aiohttp handler authenticates here, parses, calls the node and turns the
result into a response; inner code never re-reads headers. Roles: `admin`
(operators, peers, keys, and everything a caseworker and an auditor may do),
`caseworker` (send, read the inbox and cases), `auditor` (read and verify the
audit log; never bodies).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from handover.node.runtime import Node
from handover.web.intake import Intake
from handover.workflow.access import Operator
from handover.workflow.errors import ErrorCode, RequestRefused

NODE_KEY: web.AppKey[Node] = web.AppKey("node")
# Bodies from partner nodes and from local clients are read through separate
# intakes (web/intake.py) with separate byte budgets, so a flood on the
# federation port cannot starve caseworkers' submissions.
FEDERATION_INTAKE: web.AppKey[Intake] = web.AppKey("federation_intake")
LOCAL_INTAKE: web.AppKey[Intake] = web.AppKey("local_intake")
# Local API bodies other than packet submissions are small.
MAX_SMALL_BODY = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPERATOR_KEY: web.RequestKey[Operator] = web.RequestKey("operator")
MAX_PAGE = 500

PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"send", "read", "audit", "admin"}),
    "caseworker": frozenset({"send", "read"}),
    "auditor": frozenset({"audit"}),
}


def requires(permission: str | None) -> Callable[[Handler], Handler]:
    """Authenticate the bearer token at the edge and check the role's permission
    (None: any operator)."""

    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            node = request.app[NODE_KEY]
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if not header.strip():
                raise RequestRefused(
                    ErrorCode.UNAUTHORIZED,
                    "a bearer token is required: header 'Authorization: Bearer TOKEN'",
                )
            if scheme.lower() != "bearer":
                raise RequestRefused(
                    ErrorCode.UNAUTHORIZED,
                    "the Authorization header must be 'Bearer ' followed by the token"
                    " (the 'Bearer ' prefix is missing)",
                )
            if not token.strip():
                raise RequestRefused(
                    ErrorCode.UNAUTHORIZED, "a bearer token is required after 'Bearer '"
                )
            operator = await node.authenticate(token.strip())
            if operator is None:
                raise RequestRefused(ErrorCode.UNAUTHORIZED, "the bearer token is not valid")
            if permission is not None and permission not in PERMISSIONS.get(
                operator.role, frozenset()
            ):
                raise RequestRefused(
                    ErrorCode.FORBIDDEN, f"role {operator.role} may not {permission}"
                )
            request[OPERATOR_KEY] = operator
            return await handler(request)

        return wrapped

    return decorate


def operator_of(request: web.Request) -> Operator:
    return request[OPERATOR_KEY]


async def json_body(request: web.Request, limit: int = MAX_SMALL_BODY) -> dict[str, Any]:
    """The request's JSON object, read through the local intake."""
    async with request.app[LOCAL_INTAKE].body(request, limit) as raw:
        return json_object(raw)


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRefused(ErrorCode.BAD_REQUEST, "the request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise RequestRefused(ErrorCode.BAD_REQUEST, "the request body must be a JSON object")
    return data


def page_args(request: web.Request) -> tuple[int, int | None]:
    try:
        limit = int(request.query.get("limit", "100"))
        before = request.query.get("before")
        return max(1, min(limit, MAX_PAGE)), None if before is None else int(before)
    except ValueError as exc:
        raise RequestRefused(ErrorCode.BAD_REQUEST, "limit and before must be integers") from exc
