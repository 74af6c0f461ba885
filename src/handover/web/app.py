"""The aiohttp application: every route of the node behind the one error middleware
(`web/errors.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from handover.protocol.packet import MAX_REQUEST_BYTES
from handover.web import api, cases, federation, lifecycle, ops, subject
from handover.web.edge import FEDERATION_INTAKE, LOCAL_INTAKE, NODE_KEY
from handover.web.errors import error_middleware
from handover.web.intake import Intake

if TYPE_CHECKING:
    from handover.node.runtime import Node


def create_app(node: Node) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware], client_max_size=MAX_REQUEST_BYTES + 64 * 1024
    )
    app[NODE_KEY] = node
    # Partner nodes post up to delivery_concurrency (8) batches at once, from
    # one address per replica: 16 bodies in flight per address is their ceiling.
    app[FEDERATION_INTAKE] = Intake(node.budget, per_source=16)
    app[LOCAL_INTAKE] = Intake(node.local_budget, per_source=128)
    federation.add_routes(app)
    api.add_routes(app)
    cases.add_routes(app)
    subject.add_routes(app)
    lifecycle.add_routes(app)
    ops.add_routes(app)
    return app
