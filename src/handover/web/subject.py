"""Subject access route of the local API (LED Art 14): export what this node
holds for one case, as JSON or as a readable Markdown report."""

from __future__ import annotations

from aiohttp import web

from handover.web.consult import break_glass, check_case, consulted
from handover.web.edge import NODE_KEY, json_body, operator_of, requires
from handover.web.errors import json_response
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.subject_report import render_markdown

FORMATS = ("json", "markdown")


@requires("read")
async def export_case(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    form = request.query.get("format", "json")
    if form not in FORMATS:
        raise RequestRefused(ErrorCode.BAD_REQUEST, "format is 'json' (the default) or 'markdown'")
    justification = request.query.get("justification") or request.headers.get(
        "Handover-Justification"
    )
    if not justification:
        raise RequestRefused(
            ErrorCode.JUSTIFICATION_REQUIRED,
            "a subject access export needs a justification: query parameter"
            " 'justification' or header 'Handover-Justification'",
        )
    if node.assignments.limited(operator_of(request)):
        case_ref = await node.cases.resolve(request.match_info["ref"])
        if await check_case(request, case_ref):
            # The export logs its own consultation; this one marks the broken glass.
            await consulted(
                request,
                "subject_export",
                why=break_glass(request),
                break_glass=True,
                case_ref=case_ref,
            )
    export = await node.subject_access.export(
        operator_of(request), request.match_info["ref"], justification
    )
    if form == "markdown":
        response = web.Response(
            text=render_markdown(export), content_type="text/markdown", charset="utf-8"
        )
    else:
        response = json_response(export)
    response.headers["Cache-Control"] = "no-store"  # personal data: never cached
    return response


WITHHOLD_MEMBERS = frozenset({"pid", "what", "ground", "review_on", "justification"})


@requires("admin")
async def withhold(request: web.Request) -> web.Response:
    """Art 15: an admin records a decision to leave an item out of subject access."""
    node = request.app[NODE_KEY]
    data = await json_body(request)
    unknown = set(data) - WITHHOLD_MEMBERS
    if unknown:
        raise RequestRefused(
            ErrorCode.BAD_REQUEST, f"unknown members: {', '.join(sorted(unknown))}"
        )
    decision = await node.subject_access.withhold(
        operator_of(request),
        request.match_info["ref"],
        pid=data.get("pid"),
        what=data.get("what"),
        ground=data.get("ground"),
        review_on=data.get("review_on"),
        justification=data.get("justification"),
    )
    return json_response(decision, status=201)


@requires("admin")
async def list_withholdings(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    items = await node.subject_access.withholdings(request.match_info["ref"])
    await consulted(
        request, "withholding_list", case_ref=request.match_info["ref"], count=len(items)
    )
    return json_response({"items": items})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/cases/{ref}/export", export_case)
    app.router.add_post("/api/v1/cases/{ref}/withholdings", withhold)
    app.router.add_get("/api/v1/cases/{ref}/withholdings", list_withholdings)
