"""The web interface for caseworkers, auditors, DPOs and administrators, on the
local listener only: server-rendered pages under `/ui/` (Jinja2, autoescaped),
one stylesheet, no script needed. Every action goes through the same node and
workflow calls as the local API, so the same roles, rules and audit entries apply.
"""

from __future__ import annotations

from aiohttp import web

from handover.web.ui import admin, compose, inbox, login, records
from handover.web.ui.base import HERE, on_prepare


def add_routes(app: web.Application) -> None:
    login.add_routes(app)
    inbox.add_routes(app)
    compose.add_routes(app)
    records.add_routes(app)
    admin.add_routes(app)
    app.router.add_static("/ui/static", HERE / "static", append_version=False)
    app.on_response_prepare.append(on_prepare)
