"""Local API listings for integrators: sent packets with filters, the answers
this node owes, audit queries, and the OpenAPI document itself."""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web

from handover.node.queries import Queries, limit_of, time_of
from handover.web.consult import checked_justification, consulted, visible_items
from handover.web.edge import NODE_KEY, requires
from handover.web.errors import json_response
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.schemas import schema_dir

AUDIT_FILTERS = frozenset(
    {
        "operator",
        "op",
        "since",
        "until",
        "case",
        "pid",
        "purpose",
        "after",
        "limit",
        "justification",
    }
)
PACKET_FILTERS = frozenset({"status", "case", "after", "limit", "justification"})


def _queries(request: web.Request) -> Queries:
    node = request.app[NODE_KEY]
    return Queries(node.db, node.clock)


def _only(request: web.Request, allowed: frozenset[str]) -> None:
    unknown = set(request.query) - allowed
    if unknown:
        raise RequestRefused(
            ErrorCode.BAD_REQUEST,
            f"unknown query parameters: {', '.join(sorted(unknown))[:200]}"
            f" (this route takes {', '.join(sorted(allowed))})",
        )


@requires("read")
async def list_packets(request: web.Request) -> web.Response:
    _only(request, PACKET_FILTERS)
    q = request.query
    why = checked_justification(request)
    page = await _queries(request).sent(
        status=q.get("status"),
        case_ref=q.get("case"),
        after=q.get("after"),
        limit=limit_of(q.get("limit")),
    )
    # Art 25 and least privilege as for every listing of case data (web/consult.py).
    page["items"] = await visible_items(request, page["items"])
    await consulted(
        request,
        "sent_list",
        why=why,
        count=len(page["items"]),
        fields=sorted(page["items"][0]) if page["items"] else None,
        cases=[i["case_ref"] for i in page["items"]],
    )
    return json_response(page)


@requires("read")
async def list_owed(request: web.Request) -> web.Response:
    _only(request, frozenset({"limit", "justification"}))
    why = checked_justification(request)
    page = await _queries(request).owed(limit=limit_of(request.query.get("limit")))
    page["items"] = await visible_items(request, page["items"])
    await consulted(
        request,
        "owed_list",
        why=why,
        count=len(page["items"]),
        fields=sorted(page["items"][0]) if page["items"] else None,
        cases=[i["case_ref"] for i in page["items"]],
    )
    return json_response(page)


@requires("audit")
async def list_audit(request: web.Request) -> web.Response:
    _only(request, AUDIT_FILTERS)
    q = request.query
    try:
        after = int(q.get("after", "0"))
        if not 0 <= after < 2**53:
            raise ValueError
    except ValueError:
        raise RequestRefused(ErrorCode.BAD_REQUEST, "after must be an integer (a seq)") from None
    why = checked_justification(request)
    filters: dict[str, Any] = {
        "purpose": q.get("purpose") or None,
        "operator": q.get("operator") or None,
        "op": q.get("op") or None,
        "case_ref": q.get("case") or None,
        "pid": q.get("pid") or None,
        "since": time_of("since", q.get("since")),
        "until": time_of("until", q.get("until")),
    }
    for name in ("operator", "op", "case_ref", "pid", "purpose"):
        if filters[name] is not None and len(filters[name]) > 128:
            raise RequestRefused(ErrorCode.BAD_REQUEST, f"{name} is at most 128 characters")
    page = await _queries(request).audit(
        after=after, limit=limit_of(q.get("limit")), filters=filters
    )
    # Reading the audit log is itself logged (after the page is read, so the
    # entry is not in its own page).
    await consulted(
        request,
        "audit_read",
        why=why,
        case_ref=filters["case_ref"],
        pid=filters["pid"],
        count=len(page["entries"]),
    )
    return json_response(page)


@functools.cache
def _openapi() -> bytes:
    return (schema_dir() / "openapi.yaml").read_bytes()


@requires(None)
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=_openapi(), content_type="application/yaml")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/packets", list_packets)
    app.router.add_get("/api/v1/owed", list_owed)
    app.router.add_get("/api/v1/audit", list_audit)
    app.router.add_get("/api/v1/openapi.yaml", openapi_document)
