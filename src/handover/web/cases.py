"""Case routes of the local API: list, timeline, local ids, overdue items,
acknowledging a responsibility agreement."""

from __future__ import annotations

from aiohttp import web

from handover.node.consultation import COMBINATION
from handover.web.consult import (
    break_glass,
    check_case,
    checked_justification,
    consulted,
    visible_items,
)
from handover.web.edge import NODE_KEY, json_body, operator_of, page_args, requires
from handover.web.errors import json_response
from handover.workflow.errors import ErrorCode, RequestRefused


@requires("read")
async def list_cases(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    limit, before = page_args(request)
    why = checked_justification(request)
    items = await node.cases.list_cases(limit=limit, before=before)
    next_before = items[-1]["updated_at"] if len(items) == limit else None
    items = await visible_items(request, items)
    await consulted(
        request,
        "case_list",
        why=why,
        count=len(items),
        fields=sorted(items[0]) if items else None,
        cases=[i["case_ref"] for i in items],
    )
    return json_response({"items": items, "next_before": next_before})


@requires("read")
async def show_case(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    why = checked_justification(request)
    shown = await node.cases.show(request.match_info["ref"])
    broke = await check_case(request, shown["case_ref"])
    await consulted(
        request,
        "case_view",
        why=break_glass(request) if broke else why,
        break_glass=broke,
        case_ref=shown["case_ref"],
        fields=sorted(shown),
        count=len(shown.get("timeline", [])),
    )
    return json_response(shown)


@requires("send")
async def set_local_id(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    data = await json_body(request)
    if set(data) != {"local_id"}:
        raise RequestRefused(
            ErrorCode.BAD_REQUEST, 'the body is {"local_id": ID} (null to clear it)'
        )
    why = checked_justification(request)
    if node.assignments.limited(operator_of(request)):
        await check_case(request, await node.cases.resolve(request.match_info["ref"]))
    result = await node.cases.set_local_id(request.match_info["ref"], data["local_id"])
    # Linking the shared case to the agency's own records is a combination (Art 25).
    await consulted(
        request,
        "local_id_cleared" if data["local_id"] is None else "local_id_set",
        op=COMBINATION,
        why=why,
        case_ref=result["case_ref"],
    )
    return json_response(result)


@requires("read")
async def overdue(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    why = checked_justification(request)
    items = await visible_items(request, await node.cases.overdue())
    await consulted(
        request,
        "overdue_list",
        why=why,
        count=len(items),
        fields=sorted(items[0]) if items else None,
        cases=[i["case_ref"] for i in items],
    )
    return json_response({"items": items})


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
