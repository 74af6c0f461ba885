"""Case routes of the local API: list, timeline, local ids, overdue items,
acknowledging a responsibility agreement."""

from __future__ import annotations

from aiohttp import web

from handover.web.edge import NODE_KEY, json_body, operator_of, page_args, requires
from handover.web.errors import json_response
from handover.workflow.errors import ErrorCode, RequestRefused


@requires("read")
async def list_cases(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    limit, before = page_args(request)
    items = await node.cases.list_cases(limit=limit, before=before)
    next_before = items[-1]["updated_at"] if len(items) == limit else None
    return json_response({"items": items, "next_before": next_before})


@requires("read")
async def show_case(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return json_response(await node.cases.show(request.match_info["ref"]))


@requires("send")
async def set_local_id(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    data = await json_body(request)
    if set(data) != {"local_id"}:
        raise RequestRefused(
            ErrorCode.BAD_REQUEST, 'the body is {"local_id": ID} (null to clear it)'
        )
    return json_response(await node.cases.set_local_id(request.match_info["ref"], data["local_id"]))


@requires("read")
async def overdue(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return json_response({"items": await node.cases.overdue()})


@requires("send")
async def acknowledge_agreement(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    data = await json_body(request)
    packets = await node.cases.acknowledge_agreement(
        operator_of(request),
        request.match_info["ref"],
        request.match_info["agreement_id"],
        data.get("justification"),
    )
    return json_response({"packets": packets}, status=202)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/cases", list_cases)
    app.router.add_get("/api/v1/cases/{ref}", show_case)
    app.router.add_put("/api/v1/cases/{ref}/local-id", set_local_id)
    app.router.add_get("/api/v1/overdue", overdue)
    app.router.add_post(
        "/api/v1/cases/{ref}/agreements/{agreement_id}/acknowledge", acknowledge_agreement
    )
