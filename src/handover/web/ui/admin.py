"""Administrators' pages: partner nodes (pins, keys, deliveries) and operators
(add with a password, disable or enable, reset a password, change a role).
Each change writes the same `key` audit entry as `handover operators ...`."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from handover.store import inbox_view
from handover.store.errors import Conflict
from handover.web.edge import NODE_KEY, PERMISSIONS
from handover.web.ui.base import SESSION_KEY, form_text, page, redirect, render
from handover.workflow.errors import ErrorCode, RequestRefused

MIN_PASSWORD = 10
NAME_MAX = 64
PAST = {"disable": "disabled", "enable": "enabled", "password": "password set", "role": "role set"}


@page("admin")
async def peers(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    async with node.db.connection() as conn:
        last = await inbox_view.last_deliveries(conn)
    rows = [
        {
            "node": p.node,
            "kind": p.kind,
            "url": p.url,
            "fingerprint": p.fingerprint,
            "serial": None if p.keyset is None else p.keyset.serial,
            "key_status": (
                "no keyset"
                if p.keyset is None
                else "expired"
                if p.keyset.exp < node.clock()
                else "valid"
            ),
            "expires": None if p.keyset is None else p.keyset.exp,
            "last_delivery": last.get(p.node, (None, None))[0],
            "last_error": p.last_error or last.get(p.node, (None, None))[1],
        }
        for p in sorted(node.directory.peers.values(), key=lambda p: p.node)
    ]
    return render(request, "peers.html", peers=rows)


async def _operators_page(
    request: web.Request, *, status: int = 200, message: str | None = None,
    error: str | None = None, token: str | None = None,
) -> web.Response:  # fmt: skip
    node = request.app[NODE_KEY]
    rows = await node.web_sessions.operators()
    return render(
        request,
        "operators.html",
        status=status,
        operators=rows,
        roles=sorted(PERMISSIONS),
        message=message,
        error=error,
        token=token,
    )


@page("admin")
async def operators(request: web.Request) -> web.StreamResponse:
    done = request.query.get("done", "")[:80]
    return await _operators_page(request, message=done or None)


def _password(form: object) -> str:
    password = form_text(form, "password", 1025)
    if not MIN_PASSWORD <= len(password) <= 1024:
        raise RequestRefused(
            ErrorCode.BAD_REQUEST, f"a password is {MIN_PASSWORD} to 1024 characters"
        )
    return password


@page("admin")
async def add_operator(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    form = await request.post()
    name = form_text(form, "name", NAME_MAX + 1).strip()
    role = form_text(form, "role", 20)
    try:
        if not name or len(name) > NAME_MAX or not name.replace("-", "").replace(".", "").isalnum():
            raise RequestRefused(
                ErrorCode.BAD_REQUEST, "a name is 1 to 64 letters, digits, dots and hyphens"
            )
        if role not in PERMISSIONS:
            raise RequestRefused(ErrorCode.BAD_REQUEST, "choose a role")
        token = await node.web_sessions.add_operator(
            name, role, _password(form), by=request[SESSION_KEY].operator.name
        )
    except RequestRefused as exc:
        return await _operators_page(request, status=400, error=exc.message)
    except Conflict:
        return await _operators_page(
            request, status=409, error=f"an operator named {name} exists already"
        )
    return await _operators_page(request, message=f"operator {name} added", token=token)


@page("admin")
async def change_operator(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    form = await request.post()
    name = request.match_info["name"]
    action = request.match_info["action"]
    by = request[SESSION_KEY].operator.name
    sessions = node.web_sessions
    try:
        if action == "disable" and name == by:
            raise RequestRefused(ErrorCode.BAD_REQUEST, "you cannot disable yourself")
        if action in ("disable", "enable"):
            done = await sessions.set_disabled(name, action == "disable", by=by)
        elif action == "password":
            done = await sessions.set_password(name, _password(form), by=by)
        elif action == "role":
            role = form_text(form, "role", 20)
            if role not in PERMISSIONS:
                raise RequestRefused(ErrorCode.BAD_REQUEST, "choose a role")
            done = await sessions.set_role(name, role, by=by)
        else:
            raise RequestRefused(ErrorCode.NOT_FOUND, "no such change")
    except RequestRefused as exc:
        return await _operators_page(request, status=400, error=exc.message)
    if not done:
        return await _operators_page(request, status=404, error=f"no operator named {name}")
    done_text = f"operator {name}: {PAST[action]}"
    return redirect("/ui/admin/operators?" + urlencode({"done": done_text}))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui/admin/peers", peers)
    app.router.add_get("/ui/admin/operators", operators)
    app.router.add_post("/ui/admin/operators", add_operator)
    app.router.add_post("/ui/admin/operators/{name}/{action}", change_operator)
