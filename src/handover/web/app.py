"""The aiohttp application: every route of the node behind the one error middleware
(`web/errors.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from handover.protocol.packet import MAX_REQUEST_BYTES
from handover.web import api, cases, federation, lifecycle, ops, subject
from handover.web.edge import NODE_KEY
from handover.web.errors import error_middleware

if TYPE_CHECKING:
    from handover.node.runtime import Node


def create_app(node: Node) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware], client_max_size=MAX_REQUEST_BYTES + 64 * 1024
    )
    app[NODE_KEY] = node
    federation.add_routes(app)
    api.add_routes(app)
    cases.add_routes(app)
    subject.add_routes(app)
    lifecycle.add_routes(app)
    ops.add_routes(app)
    return app
