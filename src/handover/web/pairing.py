"""Federation routes for knowing a partner (docs/protocol.md section 9):
`POST /federation/v1/pairing` (the three pairing messages) and
`GET /.well-known/handover/profile` (the node's signed profile).

What one pairing request may cost is bounded: a body of at most 16 KiB read
through the federation intake (minimum rate, byte budget), a per-address
allowance of pairing messages, at most 30 seconds of handling, and, in the
node, an invitation that ends after one success, three attempts or one hour.
A profile request costs one database query: 60 per address at once, then one
a second.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from handover.node.security import TokenBuckets
from handover.protocol.pairing import MAX_PAIR_MESSAGE
from handover.web.edge import FEDERATION_INTAKE, NODE_KEY
from handover.web.errors import error_response
from handover.workflow.errors import ErrorCode, RequestRefused

PAIRING_TIMEOUT_S = 30.0
# One invitation takes at most 9 messages (three failed attempts of two, one
# success of three): 30 at once, then one every 10 s.
PAIRING_REQUESTS: web.AppKey[TokenBuckets] = web.AppKey("pairing_requests")
PROFILE_REQUESTS: web.AppKey[TokenBuckets] = web.AppKey("profile_requests")


async def post_pairing(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    source = request.remote or "unknown"
    if request.content_type != "application/json":
        return error_response(ErrorCode.UNSUPPORTED_MEDIA_TYPE)
    if not request.app[PAIRING_REQUESTS].take(source):
        node.security.note(source, "pairing_rate_limited")
        raise RequestRefused(
            ErrorCode.TOO_MANY_REQUESTS, "too many pairing messages from this address"
        )
    async with request.app[FEDERATION_INTAKE].body(request, MAX_PAIR_MESSAGE) as raw:
        try:
            async with asyncio.timeout(PAIRING_TIMEOUT_S):
                answer = await node.pairing_answer(raw)
        except TimeoutError:
            raise RequestRefused(
                ErrorCode.UNAVAILABLE, "pairing took too long: try again"
            ) from None
    return web.Response(body=answer, content_type="application/json")


async def get_profile(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    source = request.remote or "unknown"
    if not request.app[PROFILE_REQUESTS].take(source):  # each costs a database query
        node.security.note(source, "profile_rate_limited")
        raise RequestRefused(ErrorCode.TOO_MANY_REQUESTS, "too many profile requests")
    wire = await node.profile_wire()
    if wire is None:
        return error_response(
            ErrorCode.NOT_FOUND, "this node has no profile yet (`handover profile set`)"
        )
    return web.Response(
        body=wire, content_type="application/json", headers={"Cache-Control": "max-age=300"}
    )


def add_routes(app: web.Application) -> None:
    app[PAIRING_REQUESTS] = TokenBuckets(capacity=30, rate=1 / 10)
    app[PROFILE_REQUESTS] = TokenBuckets(capacity=60, rate=1.0)
    app.router.add_post("/federation/v1/pairing", post_pairing)
    app.router.add_get("/.well-known/handover/profile", get_profile)
