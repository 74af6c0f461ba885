"""Health, readiness and metrics."""

from __future__ import annotations

from aiohttp import web

from handover.web.edge import NODE_KEY
from handover.web.errors import json_response


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    checks = await node.readiness()
    ok = all(checks.values())
    return json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    await node.refresh_gauges()
    return web.Response(
        body=node.metrics.render(),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def add_metrics_route(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
