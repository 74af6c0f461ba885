"""aiohttp application factory and the one error middleware.

Exactly one place turns errors into HTTP responses: `error_middleware`.
A :class:`HandoverError` with a status becomes its JSON error; anything else
becomes a plain 500 with the traceback logged, never sent.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from handover.errors import ApiError, HandoverError, StoreError
from handover.packet import MAX_REQUEST_BYTES

if TYPE_CHECKING:
    from handover.node import Node

log = structlog.get_logger(__name__)
NODE_KEY: web.AppKey[Node] = web.AppKey("node")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        status=status,
        content_type="application/json",
    )


def error_response(status: int, code: str, message: str | None = None) -> web.Response:
    data: dict[str, str] = {"error": code}
    if message:
        data["message"] = message
    return json_response(data, status)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16]
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message)
    except web.HTTPRequestEntityTooLarge:
        response = error_response(413, "too_large")
    except web.HTTPException as exc:
        response = error_response(exc.status, exc.reason.lower().replace(" ", "_"))
    except StoreError as exc:
        log.error("store_error", error=str(exc))
        response = error_response(503, "unavailable", "the database is unavailable")
    except HandoverError as exc:
        log.error("unhandled_handover_error", error_type=type(exc).__name__)
        response = error_response(500, "internal_error")
    except Exception:
        log.exception("unhandled_exception")
        response = error_response(500, "internal_error")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    response.headers["X-Request-Id"] = request_id
    log.debug(
        "http_request",
        request_id=request_id,
        method=request.method,
        path=request.path,  # path only: query strings may carry justifications
        status=response.status,
        ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return response


def create_app(node: Node) -> web.Application:
    from handover.web import api, cases, federation, lifecycle, ops, subject

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
