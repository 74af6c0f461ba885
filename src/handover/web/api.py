"""The local API for case management systems: packets, inbox and audit log
(bearer token of an operator; roles in `web/edge.py`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from handover.node.runtime import Node
from handover.protocol.packet import MAX_REQUEST_BYTES
from handover.web.consult import (
    break_glass,
    check_case,
    checked_justification,
    consulted,
    visible_items,
)
from handover.web.edge import (
    LOCAL_INTAKE,
    NODE_KEY,
    json_object,
    operator_of,
    page_args,
    requires,
)
from handover.web.errors import json_response
from handover.workflow.access import Operator
from handover.workflow.errors import ErrorCode, RequestRefused

SUBMISSION_MEMBERS = frozenset({"to", "schema", "body", "justification", "minimise", "attachments"})


async def submit_one(node: Node, operator: Operator, data: dict[str, Any]) -> dict[str, Any]:
    """One submission (`POST /api/v1/packets`, or one item of a batch): its 202 answer.

    Raises:
        RequestRefused: as :meth:`Sender.submit`, or `bad_request` for unknown members.
    """
    unknown = set(data) - SUBMISSION_MEMBERS
    if unknown:
        raise RequestRefused(
            ErrorCode.BAD_REQUEST, f"unknown members: {', '.join(sorted(unknown))}"
        )
    packets = await node.sender.submit(
        operator,
        to=data.get("to"),
        schema_id=data.get("schema"),
        body=data.get("body"),
        justification=data.get("justification"),
        minimise=data.get("minimise", False),
        attachments=data.get("attachments"),
    )
    return {"packets": packets}


@requires("send")
async def submit_packet(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    # The body's bytes stay reserved in the local budget while it is sealed.
    async with request.app[LOCAL_INTAKE].body(request, MAX_REQUEST_BYTES) as raw:
        answer = await submit_one(node, operator_of(request), json_object(raw))
    return json_response(answer, status=202)


@requires("read")
async def get_packet(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    status = await node.sender.packet_status(request.match_info["pid"])
    # Delivery state of one's own submission, polled by clients: limited by case
    # assignment, and logged only when read by breaking the glass (the answer holds
    # no body, and one entry per poll would drown the consultations that matter).
    if await check_case(request, status["case_ref"]):
        await consulted(
            request,
            "packet_status",
            why=break_glass(request),
            break_glass=True,
            pid=status["pid"],
            case_ref=status["case_ref"],
            fields=sorted(status),
        )
    return json_response(status)


@requires("read")
async def list_inbox(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    limit, before = page_args(request)
    why = checked_justification(request)
    case_ref = request.query.get("case")
    items = await node.inbox.list(limit=limit, before=before, case_ref=case_ref)
    next_before = items[-1]["received_at"] if len(items) == limit else None
    items = await visible_items(request, items)
    await consulted(
        request,
        "inbox_list",
        why=why,
        case_ref=case_ref,
        count=len(items),
        fields=sorted(items[0]) if items else None,
        cases=[i["case_ref"] for i in items],
    )
    return json_response({"items": items, "next_before": next_before})


@requires("read")
async def read_inbox(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    justification = request.query.get("justification") or request.headers.get(
        "Handover-Justification"
    )
    if not justification:
        raise RequestRefused(
            ErrorCode.JUSTIFICATION_REQUIRED,
            "reading a body needs a justification: query parameter 'justification'"
            " or header 'Handover-Justification'",
        )
    pid = request.match_info["pid"]
    broke = await node.assignments.check_packet(operator_of(request), pid, break_glass(request))
    opened = await node.inbox.read(operator_of(request), pid, justification, break_glass=broke)
    listed = await node.attachment_access.listing(pid, sent=False)
    if listed:
        opened["attachments"] = listed
    return json_response(opened)


@requires("audit")
async def verify_audit(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    peers = request.query.get("peers") in ("1", "true", "yes")
    report = await node.audit.verify(peers=peers)
    return json_response(report, status=200 if report["ok"] else 409)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/packets", submit_packet)
    app.router.add_get("/api/v1/packets/{pid}", get_packet)
    app.router.add_get("/api/v1/inbox", list_inbox)
    app.router.add_get("/api/v1/inbox/{pid}", read_inbox)
    app.router.add_post("/api/v1/audit/verify", verify_audit)
