"""Case assignment routes of the local API (least privilege, LED Art 20, 29):
an admin names the operators and teams a case is assigned to."""

from __future__ import annotations

from aiohttp import web

from handover.web.consult import consulted
from handover.web.edge import NODE_KEY, json_body, operator_of, requires
from handover.web.errors import json_response
from handover.workflow.errors import ErrorCode, RequestRefused

MEMBERS = frozenset({"operators", "teams", "justification"})


@requires("admin")
async def put_assignment(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    data = await json_body(request)
    unknown = set(data) - MEMBERS
    if unknown:
        raise RequestRefused(
            ErrorCode.BAD_REQUEST, f"unknown members: {', '.join(sorted(unknown))}"
        )
    case_ref = await node.cases.resolve(request.match_info["ref"])
    result = await node.assignments.assign(
        operator_of(request),
        case_ref,
        operators=data.get("operators"),
        teams=data.get("teams"),
        justification=data.get("justification"),
    )
    return json_response(result)


@requires("admin")
async def get_assignment(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    case_ref = await node.cases.resolve(request.match_info["ref"])
    result = await node.assignments.assignment(case_ref)
    await consulted(
        request,
        "assignment_view",
        case_ref=case_ref,
        count=len(result["operators"]) + len(result["teams"]),
    )
    return json_response(result)


def add_routes(app: web.Application) -> None:
    app.router.add_put("/api/v1/cases/{ref}/assignment", put_assignment)
    app.router.add_get("/api/v1/cases/{ref}/assignment", get_assignment)
