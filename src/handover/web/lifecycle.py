"""Lifecycle routes of the local API: retention reviews and their outcomes (LED
Art 5), lifting a restriction, and rectification of sent packets (Art 7, 16)."""

from __future__ import annotations

from aiohttp import web

from handover.web.consult import checked_justification, consulted
from handover.web.edge import MAX_PAGE, NODE_KEY, json_body, operator_of, requires
from handover.web.errors import json_response
from handover.workflow.errors import ErrorCode, RequestRefused

DECISION_MEMBERS = frozenset(
    {"outcome", "justification", "review_at", "reason", "direction", "sender"}
)
LIFT_MEMBERS = frozenset({"justification", "direction", "sender"})
RECTIFY_MEMBERS = frozenset(
    {"action", "reason", "explanation", "corrected_body", "quality", "justification", "attachments"}
)


def _only(data: dict[str, object], allowed: frozenset[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise RequestRefused(
            ErrorCode.BAD_REQUEST, f"unknown members: {', '.join(sorted(unknown))}"
        )


@requires("read")
async def list_reviews(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    try:
        limit = max(1, min(int(request.query.get("limit", str(MAX_PAGE))), MAX_PAGE))
    except ValueError as exc:
        raise RequestRefused(ErrorCode.BAD_REQUEST, "limit must be an integer") from exc
    why = checked_justification(request)
    items = await node.retention.reviews(limit=limit)
    await consulted(
        request,
        "review_list",
        why=why,
        count=len(items),
        fields=sorted(items[0]) if items else None,
        cases=[i.get("case_ref") for i in items],
    )
    return json_response({"items": items, "truncated": len(items) == limit})


@requires("send")
async def decide_review(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    data = await json_body(request)
    _only(data, DECISION_MEMBERS)
    state = await node.retention.decide(
        operator_of(request),
        request.match_info["pid"],
        outcome=data.get("outcome"),
        justification=data.get("justification"),
        new_date=data.get("review_at"),
        reason=data.get("reason"),
        direction=data.get("direction"),
        sender=data.get("sender"),
    )
    return json_response(state)


@requires("admin")
async def lift_restriction(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    data = await json_body(request)
    _only(data, LIFT_MEMBERS)
    state = await node.retention.lift(
        operator_of(request),
        request.match_info["pid"],
        data.get("justification"),
        direction=data.get("direction"),
        sender=data.get("sender"),
    )
    return json_response(state)


@requires("send")
async def rectify_packet(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    data = await json_body(request)
    _only(data, RECTIFY_MEMBERS)
    result = await node.rectification.rectify(
        operator_of(request),
        request.match_info["pid"],
        action=data.get("action"),
        reason=data.get("reason"),
        justification=data.get("justification"),
        explanation=data.get("explanation"),
        corrected_body=data.get("corrected_body"),
        quality=data.get("quality"),
        attachments=data.get("attachments"),
    )
    return json_response(result, status=202)


@requires("read")
async def list_rectifications(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    why = checked_justification(request)
    status = await node.rectification.status(request.match_info["pid"])
    await consulted(
        request,
        "rectification_list",
        why=why,
        pid=request.match_info["pid"],
        fields=sorted(status),
    )
    return json_response(status)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/reviews", list_reviews)
    app.router.add_post("/api/v1/reviews/{pid}", decide_review)
    app.router.add_post("/api/v1/packets/{pid}/restriction/lift", lift_restriction)
    app.router.add_post("/api/v1/packets/{pid}/rectify", rectify_packet)
    app.router.add_get("/api/v1/packets/{pid}/rectifications", list_rectifications)
