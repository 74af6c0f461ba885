"""The event feed of the local API: `GET /api/v1/events` as a page (with an
optional long-poll, `wait`) or as server-sent events (`Accept:
text/event-stream`, resumed with `Last-Event-ID`). Events name things by id
and type only (node/events.py); waiting readers are bounded per operator and
per node, and a stream ends after an hour (the client reconnects with
`Last-Event-ID`)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from handover.node.events import MAX_PAGE, MAX_WAIT_S
from handover.protocol.errors import HandoverError
from handover.web.edge import NODE_KEY, operator_of, requires
from handover.web.errors import json_response
from handover.workflow.errors import ErrorCode, RequestRefused

STOPPING: web.AppKey[asyncio.Event] = web.AppKey("events_stopping")
STREAM_KEEPALIVE_S = 15.0
STREAM_MAX_S = 3600.0


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise RequestRefused(ErrorCode.BAD_REQUEST, f"{name} must be an integer") from exc
    if not low <= number <= high:
        raise RequestRefused(ErrorCode.BAD_REQUEST, f"{name} must be from {low} to {high}")
    return number


@requires("read")
async def events(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    query = request.query
    stream = "text/event-stream" in request.headers.get("Accept", "")
    after = _int(
        request.headers.get("Last-Event-ID") if stream else None, "Last-Event-ID", -1, 0, 2**62
    )
    if after < 0:
        after = _int(query.get("after"), "after", 0, 0, 2**62)
    limit = _int(query.get("limit"), "limit", 100, 1, MAX_PAGE)
    wait = _int(query.get("wait"), "wait", 0, 0, MAX_WAIT_S)
    unknown = set(query) - {"after", "limit", "wait"}
    if unknown:
        raise RequestRefused(
            ErrorCode.BAD_REQUEST, f"unknown query parameters: {', '.join(sorted(unknown))}"
        )
    if not stream and wait == 0:
        items = await node.events.page(after, limit)
    else:
        async with node.events.slot(operator_of(request).name):
            if stream:
                return await _stream(request, after, limit)
            items = await node.events.wait_page(after, limit, wait, request.app[STOPPING])
    next_after = items[-1]["id"] if items else after
    return json_response({"events": items, "next_after": next_after})


async def _stream(request: web.Request, after: int, limit: int) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    # A cursor past retention is refused before the stream starts.
    signal = node.events.signal()
    items = await node.events.page(after, limit)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    try:
        await _pump(request, response, signal, items, after, limit)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away
    return response


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    signal: asyncio.Event,
    items: list[dict[str, Any]],
    after: int,
    limit: int,
) -> None:
    """Write events as they commit until the stream's hour is over or the server stops."""
    node = request.app[NODE_KEY]
    loop = asyncio.get_running_loop()
    ends = loop.time() + STREAM_MAX_S
    await response.write(b"retry: 2000\n\n")
    while True:
        for item in items:
            data = orjson.dumps(item)
            await response.write(
                b"id: %d\nevent: %s\ndata: %s\n\n" % (item["id"], item["type"].encode(), data)
            )
            after = item["id"]
        if loop.time() >= ends or request.app[STOPPING].is_set():
            return
        if len(items) < limit:
            wait = min(STREAM_KEEPALIVE_S, ends - loop.time())
            if not await node.events.changed(wait, signal):
                await response.write(b": keepalive\n\n")
        signal = node.events.signal()
        try:
            items = await node.events.page(after, limit)
        except HandoverError:
            # Retention overtook a slow reader, or the database is away: the
            # client reconnects with Last-Event-ID and is told which.
            return


async def _on_shutdown(app: web.Application) -> None:
    """The server is stopping: waiting long-polls answer now and streams end."""
    app[STOPPING].set()
    app[NODE_KEY].events.wake()


def add_routes(app: web.Application) -> None:
    app[STOPPING] = asyncio.Event()
    app.router.add_get("/api/v1/events", events)
    app.on_shutdown.append(_on_shutdown)
