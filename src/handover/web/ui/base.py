"""What every page of the web interface shares: templates, the session
cookie, roles (the same table as the API's, `web/edge.py`), CSRF checks,
security headers and errors rendered as pages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from handover.node.sessions import Session
from handover.protocol.crypto import constant_time_equal
from handover.web.edge import NODE_KEY, PERMISSIONS
from handover.web.errors import STATUS
from handover.workflow.errors import ErrorCode, RequestRefused

COOKIE = "handover_session"
MAX_FORM_BYTES = 1024 * 1024
HERE = Path(__file__).resolve().parent
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'"
SESSION_KEY: web.RequestKey[Session] = web.RequestKey("ui_session")
UiHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _when(ms: object) -> str:
    if not isinstance(ms, int):
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["when"] = _when


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    session = request.get(SESSION_KEY)
    node = request.app[NODE_KEY]
    perms = PERMISSIONS.get(session.operator.role, frozenset()) if session else frozenset()
    html = ENV.get_template(template).render(
        session=session,
        perms=perms,
        csrf=session.csrf_token if session else "",
        node_id=node.config.node,
        path=request.path,
        **context,
    )
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)


def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    if not request.path.startswith("/ui/static/"):
        response.headers["Cache-Control"] = "no-store"


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/ui" or request.path.startswith("/ui/"):
        secure_headers(request, response)


def session_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/ui",
    )


def status_of(exc: RequestRefused) -> int:
    return STATUS.get(exc.code, 400)


def error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return render(request, "error.html", status=status, title=title, message=message)


def page(permission: str | None) -> Callable[[UiHandler], UiHandler]:
    """A page for a signed-in operator whose role has `permission` (None: any role).

    No live session: redirect to the sign-in page. A POST must carry the
    session's `csrf_token` (403 otherwise, nothing changed). A refusal from the
    node becomes an error page with its status.
    """

    def decorate(handler: UiHandler) -> UiHandler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            node = request.app[NODE_KEY]
            cookie = request.cookies.get(COOKIE, "")
            session = await node.web_sessions.lookup(cookie) if cookie else None
            if session is None:
                if request.method == "POST":
                    return error_page(
                        request, 403, "Signed out", "Your session has ended: sign in again."
                    )
                return redirect("/ui/login")
            request[SESSION_KEY] = session
            if request.method == "POST":
                if not form_size_ok(request):
                    return error_page(
                        request, 413, "Too large", "A form is at most 1 MiB: nothing was changed."
                    )
                form = await request.post()
                token = form.get("csrf_token")
                if not isinstance(token, str) or not constant_time_equal(
                    token.encode(), session.csrf_token.encode()
                ):
                    return error_page(
                        request,
                        403,
                        "Form expired",
                        "This form is not valid any more (missing or wrong csrf_token):"
                        " nothing was changed. Go back, reload the page and try again.",
                    )
            if permission is not None and permission not in PERMISSIONS.get(
                session.operator.role, frozenset()
            ):
                return error_page(
                    request,
                    403,
                    "Not allowed",
                    f"The role {session.operator.role} may not {permission}.",
                )
            try:
                return await handler(request)
            except RequestRefused as exc:
                return error_page(request, status_of(exc), "Refused", exc.message)

        return wrapped

    return decorate


def form_size_ok(request: web.Request) -> bool:
    """Whether a posted form declares its length and is at most MAX_FORM_BYTES
    (checked before it is read, so a large body costs nothing)."""
    size = request.content_length
    return size is not None and size <= MAX_FORM_BYTES


def redirect(location: str) -> web.Response:
    """303 See Other (returned, not raised: the error middleware answers raised ones in JSON)."""
    return web.Response(status=303, headers={"Location": location})


def form_text(form: Any, name: str, limit: int = 4000) -> str:
    value = form.get(name, "")
    return value[:limit] if isinstance(value, str) else ""


__all__ = ["ErrorCode", "RequestRefused"]
