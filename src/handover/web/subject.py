"""Subject access route of the local API (LED Art 14): export what this node
holds for one case, as JSON or as a readable Markdown report."""

from __future__ import annotations

from aiohttp import web

from handover.web.edge import NODE_KEY, operator_of, requires
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


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/cases/{ref}/export", export_case)
