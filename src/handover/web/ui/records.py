"""Cases, overdue answers, the audit log and the subject access export: the same
node calls as `web/cases.py`, `web/api.py` and `web/subject.py`."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from handover.node.consultation import COMBINATION
from handover.web.consult import check_case, consulted, visible_items
from handover.web.edge import MAX_PAGE, NODE_KEY
from handover.web.ui.base import SESSION_KEY, form_text, page, redirect, render
from handover.web.ui.inbox import owed_items
from handover.workflow.access import JUSTIFICATION_ERRORS
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.subject_report import render_markdown

AUDIT_SCAN = 5000  # entries read for one search of the audit page
AUDIT_SHOWN = 200
AUDIT_QUERY = ("case", "operator", "op", "from", "to")


@page("read")
async def cases(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    operator = request[SESSION_KEY].operator
    items = await node.cases.list_cases(limit=MAX_PAGE, before=None)
    items = await visible_items(request, items, operator)
    await consulted(
        request,
        "ui_case_list",
        operator=operator,
        count=len(items),
        cases=[i["case_ref"] for i in items],
    )
    return render(request, "cases.html", items=items)


@page("read")
async def case(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    operator = request[SESSION_KEY].operator
    shown = await node.cases.show(request.match_info["ref"])
    await check_case(request, shown["case_ref"], operator)
    await consulted(
        request,
        "ui_case_view",
        operator=operator,
        case_ref=shown["case_ref"],
        fields=sorted(shown),
        count=len(shown.get("timeline", [])),
    )
    done = request.query.get("done", "")[:80] or None
    return render(request, "case.html", case=shown, error=None, message=done)


@page("send")
async def set_local_id(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    form = await request.post()
    value = form_text(form, "local_id", 200).strip()
    operator = request[SESSION_KEY].operator
    await check_case(request, await node.cases.resolve(request.match_info["ref"]), operator)
    shown = await node.cases.set_local_id(request.match_info["ref"], value or None)
    await consulted(
        request,
        "local_id_set" if value else "local_id_cleared",
        op=COMBINATION,
        operator=operator,
        case_ref=shown["case_ref"],
    )
    return redirect(f"/ui/cases/{shown['case_ref']}?" + urlencode({"done": "local id saved"}))


@page("send")
async def acknowledge(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    form = await request.post()
    ref = request.match_info["ref"]
    await node.cases.acknowledge_agreement(
        request[SESSION_KEY].operator,
        ref,
        request.match_info["agreement_id"],
        form_text(form, "justification", 1001),
    )
    done = "agreement acknowledged; the acknowledgement is on its way to the other parties"
    return redirect(f"/ui/cases/{ref}?" + urlencode({"done": done}))


@page("read")
async def overdue(request: web.Request) -> web.StreamResponse:
    """What this node waits for (expectations of its sent packets past their
    deadline) and what it owes (received packets that expect an answer from it)."""
    node = request.app[NODE_KEY]
    operator = request[SESSION_KEY].operator
    waiting = await visible_items(request, await node.cases.overdue(), operator)
    owed = await visible_items(request, await owed_items(request), operator)
    await consulted(
        request,
        "ui_overdue_list",
        operator=operator,
        count=len(waiting) + len(owed),
        cases=[i.get("case_ref") for i in waiting + owed],
    )
    return render(request, "overdue.html", waiting=waiting, owed=owed)


@page("read")
async def export(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    form = await request.post()
    ref = request.match_info["ref"]
    fmt = form_text(form, "format", 20)
    if fmt not in ("json", "markdown"):
        raise RequestRefused(ErrorCode.BAD_REQUEST, "the format is json or markdown")
    justification = form_text(form, "justification", 1001)
    if node.assignments.limited(request[SESSION_KEY].operator):
        await check_case(request, await node.cases.resolve(ref), request[SESSION_KEY].operator)
    try:
        data = await node.subject_access.export(request[SESSION_KEY].operator, ref, justification)
    except RequestRefused as exc:
        if exc.code not in JUSTIFICATION_ERRORS:
            raise
        shown = await node.cases.show(ref)
        return render(request, "case.html", status=400, case=shown, error=exc.message, message=None)
    if fmt == "markdown":
        text, kind, ext = render_markdown(data), "text/markdown", "md"
    else:
        text, kind, ext = json.dumps(data, indent=2, ensure_ascii=False), "application/json", "json"
    response = web.Response(text=text, content_type=kind, charset="utf-8")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="subject-access-{data["case"]["case_ref"]}.{ext}"'
    )
    return response


def _ms(value: str, end: bool = False) -> int | None:
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return None
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return int(start.timestamp() * 1000) + (86_400_000 if end else 0)


@page("audit")
async def audit(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    q = {k: request.query.get(k, "")[:100].strip() for k in AUDIT_QUERY}
    scanned = await node.audit.entries(
        after=0, limit=AUDIT_SCAN, case_ref=q["case"] or None, pid=None
    )
    since, until = _ms(q["from"]), _ms(q["to"], end=True)
    found: list[dict[str, Any]] = []
    for row in scanned:
        entry = row["entry"]
        at = entry.get("at") if isinstance(entry.get("at"), int) else None
        if q["operator"] and entry.get("operator") != q["operator"]:
            continue
        if q["op"] and entry.get("op") != q["op"]:
            continue
        if since is not None and (at is None or at < since):
            continue
        if until is not None and (at is None or at >= until):
            continue
        to = entry.get("to")
        counterpart = ", ".join(to) if isinstance(to, list) else entry.get("counterpart", "")
        found.append({"seq": row["seq"], "at": at, "entry": entry, "with": counterpart})
    found = found[-AUDIT_SHOWN:][::-1]
    # Reading the audit log is itself logged (Art 25).
    await consulted(
        request,
        "ui_audit_read",
        operator=request[SESSION_KEY].operator,
        case_ref=q["case"] or None,
        count=len(found),
    )
    ops = sorted({str(r["entry"].get("op")) for r in scanned})
    return render(
        request,
        "audit.html",
        q=q,
        entries=found,
        ops=ops,
        truncated=len(scanned) == AUDIT_SCAN,
        report=None,
    )


@page("audit")
async def audit_verify(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    report = await node.audit.verify(peers=True)
    return render(
        request,
        "audit.html",
        q={"case": "", "operator": "", "op": "", "from": "", "to": ""},
        entries=[],
        ops=[],
        truncated=False,
        report=report,
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui/cases", cases)
    app.router.add_get("/ui/cases/{ref}", case)
    app.router.add_post("/ui/cases/{ref}/export", export)
    app.router.add_post("/ui/cases/{ref}/local-id", set_local_id)
    app.router.add_post("/ui/cases/{ref}/agreements/{agreement_id}/acknowledge", acknowledge)
    app.router.add_get("/ui/overdue", overdue)
    app.router.add_get("/ui/audit", audit)
    app.router.add_post("/ui/audit/verify", audit_verify)
