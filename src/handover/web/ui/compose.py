"""Composing a packet: a form generated from its schema, a preview of what each
recipient gets under the sharing policy (`Sender.preview`, nothing sealed or
logged), then sending through the same `Sender.submit` as `POST /api/v1/packets`
(minimised, as the preview showed), and the sent packet's page."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from handover.protocol.canonical import b64u_decode
from handover.protocol.errors import SchemaInvalid
from handover.web.edge import NODE_KEY
from handover.web.ui import forms
from handover.web.ui.base import SESSION_KEY, form_text, page, redirect, render
from handover.workflow.access import require_justification
from handover.workflow.errors import ErrorCode, RequestRefused

PID = re.compile(r"[A-Za-z0-9_-]{22}")
# Query parameters that fill a field when an answer is composed.
PREFILL = ("case_ref", "in_reply_to", "in_reply_to_schema")


def _schemas(request: web.Request) -> list[tuple[str, str]]:
    node = request.app[NODE_KEY]
    return [(s, node.registry.document(s).get("title", s)) for s in node.registry.ids()]


def _recipients(request: web.Request, schema: str) -> list[dict[str, Any]]:
    node = request.app[NODE_KEY]
    own = node.config.kind
    return [
        {"node": p.node, "kind": p.kind}
        for p in sorted(node.directory.peers.values(), key=lambda p: p.node)
        if p.kind is not None and node.policy.may_send(schema, own, p.kind)
    ]


def _doc(request: web.Request, schema: str) -> dict[str, Any]:
    node = request.app[NODE_KEY]
    if schema not in node.registry.ids():
        raise RequestRefused(ErrorCode.UNKNOWN_SCHEMA, "unknown schema id")
    return node.registry.document(schema)


def _form_page(
    request: web.Request,
    schema: str,
    draft: dict[str, Any],
    *,
    to: list[str],
    justification: str,
    errors: dict[str, str] | None = None,
    summary: str | None = None,
    status: int = 200,
) -> web.Response:
    doc = _doc(request, schema)
    root = forms.build(doc, draft)
    marked = forms.attach(root, {p: e for p, e in (errors or {}).items() if p != "justification"})
    return render(
        request,
        "compose.html",
        status=status,
        schema=schema,
        title=doc.get("title", schema),
        root=root,
        marked=marked,
        recipients=_recipients(request, schema),
        to=to,
        justification=justification,
        justification_error=(errors or {}).get("justification"),
        summary=summary,
    )


@page("send")
async def compose(request: web.Request) -> web.StreamResponse:
    schema = request.query.get("schema")
    if not schema:
        return render(request, "choose.html", schemas=_schemas(request))
    doc = _doc(request, schema)
    draft: dict[str, Any] = {}
    props = doc.get("properties", {})
    for name in PREFILL:
        value = request.query.get(name)
        if value and name in props:
            draft[name] = value[:200]
    return _form_page(request, schema, draft, to=[], justification="")


@page("send")
async def compose_post(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    form = await request.post()
    schema = form_text(form, "schema", 200)
    doc = _doc(request, schema)
    draft = forms.draft_of(doc, ((k, v) for k, v in form.items() if isinstance(v, str)))
    to = [v for v in form.getall("to", []) if isinstance(v, str)][:64]
    justification = form_text(form, "justification", 1001)
    action = form_text(form, "_action", 300)
    if action.startswith(("add:", "remove:")) or action == "edit":
        if action != "edit":
            forms.change(draft, action)
        return _form_page(request, schema, draft, to=to, justification=justification)
    body = forms.body_of(doc, draft) or {}
    errors: dict[str, str] = {}
    try:
        require_justification(justification)
    except RequestRefused as exc:
        errors["justification"] = exc.message.capitalize() + " (why you share this, in a sentence)."
    summary = None
    try:
        # Field errors first, whether or not recipients are chosen yet.
        node.registry.validate(schema, body)
    except SchemaInvalid as exc:
        errors.update(forms.field_errors(doc, str(exc)))
    if not to:
        summary = "Choose at least one recipient."
    if errors or summary:
        return _form_page(
            request, schema, draft, to=to, justification=justification,
            errors=errors, summary=summary, status=422,
        )  # fmt: skip
    try:
        views = await node.sender.preview(to=to, schema_id=schema, body=body)
    except RequestRefused as exc:
        if exc.code == ErrorCode.SCHEMA_INVALID:
            errors.update(forms.field_errors(doc, exc.message))
        else:
            summary = exc.message
        return _form_page(
            request, schema, draft, to=to, justification=justification,
            errors=errors, summary=summary, status=422,
        )  # fmt: skip
    if errors:
        return _form_page(
            request, schema, draft, to=to, justification=justification, errors=errors, status=422
        )
    if action == "send":
        packets = await node.sender.submit(
            request[SESSION_KEY].operator,
            to=to,
            schema_id=schema,
            body=body,
            justification=justification,
            minimise=True,
        )
        location = f"/ui/packets/{packets[0]['pid']}"
        if len(packets) > 1:
            location += "?" + urlencode({"also": ",".join(p["pid"] for p in packets[1:])})
        return redirect(location)
    shown = [
        {
            "node": v["node"],
            "kind": v["kind"],
            "fields": [
                (forms.label_of(doc, p), value) for p, value in forms.flatten(v["body"], doc=doc)
            ],
            "removed": [forms.label_of(doc, "/" + name) for name in v["removed"]],
        }
        for v in views
    ]
    hidden = [(p, v) for p, v in forms.flatten(draft) if isinstance(v, str)]
    return render(
        request,
        "preview.html",
        schema=schema,
        title=doc.get("title", schema),
        views=shown,
        hidden=hidden,
        to=to,
        justification=justification,
    )


def _receipt(receipt: dict[str, Any] | None) -> dict[str, Any] | None:
    if receipt is None:
        return None
    try:
        data: dict[str, Any] = json.loads(b64u_decode(receipt["hp1r"]))
    except (ValueError, KeyError, TypeError):
        return None
    return {"rid": data.get("rid"), "status": data.get("status"), "at": data.get("iat")}


@page("read")
async def packet_page(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    status = await node.sender.packet_status(request.match_info["pid"])
    for d in status["deliveries"]:
        d["receipt_view"] = _receipt(d["receipt"])
    also = [p for p in request.query.get("also", "").split(",") if PID.fullmatch(p)][:64]
    pending = any(d["status"] == "pending" for d in status["deliveries"])
    return render(request, "packet.html", packet=status, also=also, pending=pending)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui/compose", compose)
    app.router.add_post("/ui/compose", compose_post)
    app.router.add_get("/ui/packets/{pid}", packet_page)
