"""Signing in and out of the web interface, and where `/ui/` leads."""

from __future__ import annotations

from aiohttp import web

from handover.node.sessions import SignInRefused
from handover.protocol.canonical import b64u_encode
from handover.protocol.crypto import constant_time_equal, random_bytes
from handover.web.edge import NODE_KEY, PERMISSIONS
from handover.web.ui.base import (
    COOKIE,
    form_size_ok,
    form_text,
    page,
    redirect,
    render,
    session_cookie,
)

PRE_COOKIE = "handover_signin"


def home_of(role: str) -> str:
    perms = PERMISSIONS.get(role, frozenset())
    return "/ui/inbox" if "read" in perms else "/ui/audit"


async def index(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    cookie = request.cookies.get(COOKIE, "")
    session = await node.web_sessions.lookup(cookie) if cookie else None
    return redirect(home_of(session.operator.role) if session else "/ui/login")


def _login_page(
    request: web.Request, *, status: int = 200, error: str | None = None, operator: str = ""
) -> web.Response:
    """The sign-in form with a CSRF token that is also in a short cookie (double
    submit), so another site cannot sign a browser in to someone else's account."""
    token = request.cookies.get(PRE_COOKIE, "")
    if len(token) != 32:
        token = b64u_encode(random_bytes(24))
    response = render(
        request, "login.html", status=status, error=error, operator=operator, login_csrf=token
    )
    response.set_cookie(
        PRE_COOKIE, token, httponly=True, samesite="Strict", secure=request.secure, path="/ui"
    )
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    return _login_page(request)


async def login(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    if not form_size_ok(request):
        return _login_page(request, status=413, error="The sign-in form was too large.")
    form = await request.post()
    expected = request.cookies.get(PRE_COOKIE, "")
    offered = form_text(form, "csrf_token", 64)
    if not expected or not constant_time_equal(expected.encode(), offered.encode()):
        return _login_page(
            request, status=403, error="The sign-in form had expired: please try again."
        )
    name = form_text(form, "operator", 200).strip()
    password = form_text(form, "password", 1024)
    code = form_text(form, "code", 16)
    address = request.remote or "unknown"
    try:
        session_id, _ = await node.web_sessions.sign_in(name, password, code, address)
    except SignInRefused as exc:
        message = (
            "Too many failed attempts: wait a few minutes before trying again."
            if exc.limited
            else "Sign-in failed: the operator name, password or code is not right."
        )
        return _login_page(request, status=401, error=message, operator=name)
    found = await node.web_sessions.lookup(session_id)
    response = redirect(home_of(found.operator.role) if found else "/ui/login")
    session_cookie(request, response, session_id)
    return response


@page(None)
async def logout(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    await node.web_sessions.sign_out(request.cookies.get(COOKIE, ""))
    response = redirect("/ui/login")
    response.del_cookie(COOKIE, path="/ui")
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui", index)
    app.router.add_get("/ui/", index)
    app.router.add_get("/ui/login", login_form)
    app.router.add_post("/ui/login", login)
    app.router.add_post("/ui/logout", logout)
