"""The inbox pages: what arrived, and reading one packet with a justification
(through the same `Inbox.read` as `GET /api/v1/inbox/{pid}`, so the same
`consultation` audit entry is written before the body is shown)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from handover.protocol.timeutil import DAY_MS
from handover.store import inbox_view
from handover.store import received as received_store
from handover.web.attachments import stream_download
from handover.web.consult import check_case, consulted, visible_items
from handover.web.edge import NODE_KEY
from handover.web.ui import forms
from handover.web.ui.base import SESSION_KEY, form_text, page, render
from handover.workflow.access import JUSTIFICATION_ERRORS
from handover.workflow.engine import date_ms
from handover.workflow.errors import ErrorCode, RequestRefused

INBOX_PAGE = 100


def answers_for(request: web.Request, schema: str | None) -> list[str]:
    """The packet types this node is expected to answer a packet of `schema` with."""
    node = request.app[NODE_KEY]
    if schema is None:
        return []
    return list(node.policy.expectations(schema, node.config.kind))


def answer_link(schema: str, item: dict[str, Any]) -> str:
    query = {"schema": schema, "in_reply_to": item["pid"], "in_reply_to_schema": item["schema"]}
    if item.get("case_ref"):
        query["case_ref"] = item["case_ref"]
    return "/ui/compose?" + urlencode(query)


async def annotated(request: web.Request) -> list[dict[str, Any]]:
    """The latest received packets, each marked read or not and whether this node
    still owes an answer to it (the continuity expectations of the policy), owed first."""
    node = request.app[NODE_KEY]
    items = await node.inbox.list(limit=INBOX_PAGE, before=None, case_ref=None)
    now = node.clock()
    async with node.db.connection() as conn:
        read = await inbox_view.consulted(conn, [i["pid"] for i in items])
        releases = await inbox_view.release_dates(
            conn, sorted({i["case_ref"] for i in items if i["case_ref"]})
        )
        for item in items:
            item["read"] = item["pid"] in read
            expected = answers_for(request, item["schema"])
            item["answers"] = [(s, answer_link(s, item)) for s in expected]
            item["owed"] = bool(expected) and not (
                item["case_ref"]
                and await inbox_view.answered(conn, item["case_ref"], expected, item["received_at"])
            )
            # Due by the policy's days before the case's release date, as the sender expects.
            release = date_ms(releases.get(item["case_ref"] or ""))
            item["due"] = (
                release - node.policy.deadline_days * DAY_MS
                if item["owed"] and release is not None
                else None
            )
            item["overdue"] = item["due"] is not None and item["due"] < now
    items.sort(key=lambda i: (not i["overdue"], not i["owed"], i["due"] or 0, -i["received_at"]))
    return items


async def owed_items(request: web.Request) -> list[dict[str, Any]]:
    return [i for i in await annotated(request) if i["owed"]]


@page("read")
async def inbox(request: web.Request) -> web.StreamResponse:
    operator = request[SESSION_KEY].operator
    items = await visible_items(request, await annotated(request), operator)
    await consulted(
        request,
        "ui_inbox_list",
        operator=operator,
        count=len(items),
        cases=[i.get("case_ref") for i in items],
    )
    return render(request, "inbox.html", items=items)


async def _item(request: web.Request, pid: str) -> dict[str, Any]:
    node = request.app[NODE_KEY]
    async with node.db.connection() as conn:
        row = await received_store.get(conn, pid)
    if row is None or row.status != "accepted":
        raise RequestRefused(ErrorCode.NOT_FOUND, "no received packet with that pid")
    return {
        "pid": row.pid,
        "sender": row.sender,
        "schema": row.schema_id,
        "case_ref": row.case_ref,
        "received_at": row.received_at,
    }


@page("read")
async def packet_form(request: web.Request) -> web.StreamResponse:
    item = await _item(request, request.match_info["pid"])
    return render(request, "read.html", item=item, fields=None, error=None, answers=[])


@page("read")
async def packet_read(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    pid = request.match_info["pid"]
    item = await _item(request, pid)
    await check_case(request, item["case_ref"], request[SESSION_KEY].operator)
    form = await request.post()
    justification = form_text(form, "justification", 1001)
    try:
        opened = await node.inbox.read(request[SESSION_KEY].operator, pid, justification)
    except RequestRefused as exc:
        if exc.code not in JUSTIFICATION_ERRORS:
            raise
        return render(
            request, "read.html", status=400, item=item, fields=None, error=exc.message, answers=[]
        )
    doc = node.registry.document(opened["schema"])
    fields = [
        {
            "pointer": pointer,
            "label": forms.label_of(doc, pointer),
            "value": "yes" if value is True else "no" if value is False else value,
            "sensitivity": forms.sensitivity_at(doc, pointer),
        }
        for pointer, value in forms.flatten(opened["body"], doc=doc)
    ]
    answers = [(s, answer_link(s, item)) for s in answers_for(request, opened["schema"])]
    return render(
        request,
        "read.html",
        item=item,
        fields=fields,
        error=None,
        answers=answers,
        title=doc.get("title", opened["schema"]),
        attachments=await node.attachment_access.listing(pid, sent=False),
        justification=justification,
    )


@page("read")
async def attachment_download(request: web.Request) -> web.StreamResponse:
    """One attachment of a received packet, with the reason given for reading it
    (recorded again, as a `consultation` of that attachment, before any byte)."""
    node = request.app[NODE_KEY]
    form = await request.post()
    download = await node.attachment_access.download(
        request[SESSION_KEY].operator,
        request.match_info["pid"],
        request.match_info["aid"],
        form_text(form, "justification", 1001),
        sent=False,
    )
    return await stream_download(request, download)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui/inbox", inbox)
    app.router.add_get("/ui/inbox/{pid}", packet_form)
    app.router.add_post("/ui/inbox/{pid}", packet_read)
    app.router.add_post("/ui/inbox/{pid}/attachments/{aid}", attachment_download)
