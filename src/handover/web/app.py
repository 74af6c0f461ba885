"""The aiohttp applications: every route of the node behind the one error middleware
(`web/errors.py`), split by who may reach it.

- `federation`: what partner nodes use (`/federation/...`,
  `/.well-known/handover/...`) plus `/healthz` and `/readyz`;
- `local`: the local API, `/metrics` and the web interface (`/ui/`), plus health;
- `both`: everything on one listener, only for a loopback `listen` without
  `local_listen` (web/server.py decides).
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web

from handover.node.runtime import Node
from handover.protocol.packet import MAX_REQUEST_BYTES
from handover.web import (
    api,
    assignment,
    attachments,
    batch,
    cases,
    events,
    federation,
    lifecycle,
    listings,
    ops,
    pairing,
    subject,
    ui,
)
from handover.web.edge import FEDERATION_INTAKE, LOCAL_INTAKE, NODE_KEY
from handover.web.errors import error_middleware
from handover.web.intake import Intake

Surface = Literal["federation", "local", "both"]


def create_app(node: Node, surface: Surface = "both") -> web.Application:
    app = web.Application(
        middlewares=[error_middleware], client_max_size=MAX_REQUEST_BYTES + 64 * 1024
    )
    app[NODE_KEY] = node
    ops.add_health_routes(app)
    if surface in ("federation", "both"):
        # Partner nodes post up to delivery_concurrency (8) batches at once, from
        # one address per replica: 16 bodies in flight per address is their ceiling.
        app[FEDERATION_INTAKE] = Intake(node.budget, per_source=16)
        federation.add_routes(app)
        pairing.add_routes(app)
    if surface in ("local", "both"):
        app[LOCAL_INTAKE] = Intake(node.local_budget, per_source=128)
        api.add_routes(app)
        listings.add_routes(app)
        batch.add_routes(app)
        attachments.add_routes(app)
        cases.add_routes(app)
        events.add_routes(app)
        subject.add_routes(app)
        lifecycle.add_routes(app)
        assignment.add_routes(app)
        ops.add_metrics_route(app)
        ui.add_routes(app)
    return app
