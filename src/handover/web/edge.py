"""The edge of the local API: authentication, roles and request parsing.

An aiohttp handler authenticates here, parses, calls the node and turns the
result into a response; inner code never re-reads headers. Roles: `admin`
(operators, peers, keys, and everything a caseworker and an auditor may do),
`caseworker` (send, read the inbox and cases), `auditor` (read and verify the
audit log; never bodies), `system` (a case management system: what a
caseworker may do, reading bodies and sending only with a
`Handover-On-Behalf-Of: STAFF-ID` header, recorded in the audit entries).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from handover.node.auth import Refusal
from handover.node.runtime import Node
from handover.web.intake import Intake
from handover.workflow.access import SYSTEM, Operator, staff_id
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
    "system": frozenset({"send", "read"}),
}
ON_BEHALF_OF = "Handover-On-Behalf-Of"


_TOKEN_REFUSED = {
    "unknown": "the bearer token is not valid",
    "disabled": "the operator of this bearer token is disabled (`handover operators enable`)",
    "expired": "the bearer token expired: an admin issues a new one with"
    " `handover operators token NAME`",
}


def _route(request: web.Request) -> str:
    """The route's pattern (`/api/v1/packets/{pid}`), for the log: no ids, no query."""
    resource = request.match_info.route.resource
    return request.path if resource is None else resource.canonical


def _refuse(
    request: web.Request, code: ErrorCode, reason: str, message: str, operator: str | None = None
) -> RequestRefused:
    """Count and log a refusal at the edge; the error to raise."""
    request.app[NODE_KEY].note_refused_access(code.value, reason, _route(request), operator)
    return RequestRefused(code, message)


def requires(permission: str | None) -> Callable[[Handler], Handler]:
    """Authenticate the bearer token at the edge and check the role's permission
    (None: any operator).
    Refusals (401, 403) are counted in the metrics and logged with the route and
    the operator when known (node `note_refused_access`)."""

    def decorate(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            node = request.app[NODE_KEY]
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if not header.strip():
                raise _refuse(
                    request,
                    ErrorCode.UNAUTHORIZED,
                    "missing",
                    "a bearer token is required: header 'Authorization: Bearer TOKEN'",
                )
            if scheme.lower() != "bearer":
                raise _refuse(
                    request,
                    ErrorCode.UNAUTHORIZED,
                    "missing",
                    "the Authorization header must be 'Bearer ' followed by the token"
                    " (the 'Bearer ' prefix is missing)",
                )
            if not token.strip():
                raise _refuse(
                    request,
                    ErrorCode.UNAUTHORIZED,
                    "missing",
                    "a bearer token is required after 'Bearer '",
                )
            operator = await node.check_token(token.strip())
            if isinstance(operator, Refusal):
                raise _refuse(
                    request,
                    ErrorCode.UNAUTHORIZED,
                    operator.reason,
                    _TOKEN_REFUSED.get(operator.reason, _TOKEN_REFUSED["unknown"]),
                    operator.operator,
                )
            if permission is not None and permission not in PERMISSIONS.get(
                operator.role, frozenset()
            ):
                raise _refuse(
                    request,
                    ErrorCode.FORBIDDEN,
                    "role",
                    f"role {operator.role} may not {permission}",
                    operator.name,
                )
            staff = request.headers.get(ON_BEHALF_OF)
            if staff is not None and operator.role == SYSTEM:
                operator = dataclasses.replace(operator, on_behalf_of=staff_id(staff.strip()))
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
