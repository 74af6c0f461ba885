"""Lifecycle routes of the local API: retention reviews and their outcomes (LED
Art 5), lifting a restriction, and rectification of sent packets (Art 7, 16)."""

from __future__ import annotations

from aiohttp import web

from handover.web.consult import checked_justification, consulted
from handover.web.edge import MAX_PAGE, NODE_KEY, json_body, operator_of, requires
from handover.web.errors import json_response
from handover.workflow.errors import ErrorCode, RequestRefused

DECISION_MEMBERS = frozenset(
    {"outcome", "justification", "review_at", "reason", "reason_code", "direction", "sender"}
)
APPROVE_MEMBERS = frozenset({"justification", "direction", "sender"})
LIFT_MEMBERS = frozenset({"justification", "direction", "sender"})
RECTIFY_MEMBERS = frozenset(
    {
        "action",
        "reason",
        "explanation",
        "corrected_body",
        "quality",
        "justification",
        "answers",
        "attachments",
    }
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
    state = await node.reviews.decide(
        operator_of(request),
        request.match_info["pid"],
        outcome=data.get("outcome"),
        justification=data.get("justification"),
        new_date=data.get("review_at"),
        reason=data.get("reason"),
        reason_code=data.get("reason_code"),
        direction=data.get("direction"),
        sender=data.get("sender"),
    )
    # A proposal waits for a second admin: accepted, nothing changed yet.
    return json_response(state, status=202 if state["state"] == "pending_approval" else 200)


@requires("admin")
async def list_proposals(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    try:
        limit = max(1, min(int(request.query.get("limit", str(MAX_PAGE))), MAX_PAGE))
    except ValueError as exc:
        raise RequestRefused(ErrorCode.BAD_REQUEST, "limit must be an integer") from exc
    items = await node.reviews.proposals(limit)
    return json_response({"items": items, "truncated": len(items) == limit})


@requires("admin")
async def approve_review(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    data = await json_body(request)
    _only(data, APPROVE_MEMBERS)
    state = await node.reviews.approve(
        operator_of(request),
        request.match_info["pid"],
        justification=data.get("justification"),
        direction=data.get("direction"),
        sender=data.get("sender"),
    )
    return json_response(state)


@requires("admin")
async def lift_restriction(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    data = await json_body(request)
    _only(data, LIFT_MEMBERS)
    state = await node.reviews.lift(
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
        answers=data.get("answers"),
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
    app.router.add_get("/api/v1/reviews/proposals", list_proposals)
    app.router.add_post("/api/v1/reviews/{pid}", decide_review)
    app.router.add_post("/api/v1/reviews/{pid}/approve", approve_review)
    app.router.add_post("/api/v1/packets/{pid}/restriction/lift", lift_restriction)
    app.router.add_post("/api/v1/packets/{pid}/rectify", rectify_packet)
    app.router.add_get("/api/v1/packets/{pid}/rectifications", list_rectifications)
