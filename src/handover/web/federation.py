"""Federation routes between nodes (docs/protocol.md section 6)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import TypeVar

from aiohttp import web

from handover.node.security import TokenBuckets
from handover.node.transport import MAX_BATCH, Answer, Outcome
from handover.protocol.canonical import b64u_encode
from handover.protocol.errors import EncodingError
from handover.protocol.packet import MAX_REQUEST_BYTES
from handover.web.edge import FEDERATION_INTAKE, NODE_KEY
from handover.web.errors import (
    CLOSE_AFTER_ANSWER,
    OUTCOME_STATUS,
    STATUS,
    error_response,
    json_response,
)
from handover.workflow.errors import ErrorCode, RequestRefused

MAX_DIGESTS = 10_000
ACCEPTED_TYPES = ("application/vnd.handover.packet+json", "application/json")


async def post_packet(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    if request.content_type not in ACCEPTED_TYPES:
        return error_response(ErrorCode.UNSUPPORTED_MEDIA_TYPE)
    source = _admit(request)
    async with request.app[FEDERATION_INTAKE].body(request, MAX_REQUEST_BYTES) as wire:
        answer = await node.receiver.receive(wire, source)
    return _answer_response(answer)


def _admit(request: web.Request) -> str:
    """The source address, if it has not used up its allowance of refused packets.

    Raises:
        RequestRefused: `too_many_requests`, before the body is read.
    """
    source = request.remote or "unknown"
    node = request.app[NODE_KEY]
    if node.config.tls_client_ca and not _peer_certificate(request):
        raise RequestRefused(
            ErrorCode.CLIENT_CERTIFICATE_REQUIRED,
            "this node takes packets only over mutual TLS: present a client certificate",
        )
    if not node.security.sources.allows(source):
        node.security.note(source, "rate_limited")
        raise RequestRefused(
            ErrorCode.TOO_MANY_REQUESTS, "too many refused packets from this address"
        )
    return source


def _peer_certificate(request: web.Request) -> object:
    """The client certificate verified at the TLS handshake, if any."""
    transport = request.transport
    return None if transport is None else transport.get_extra_info("peercert")


def _answer_response(answer: Answer) -> web.Response:
    if answer.outcome is Outcome.ATTACHMENT_INCOMPLETE:
        code = ErrorCode.ATTACHMENT_INCOMPLETE
        return json_response({"error": code.value, "aid": answer.detail}, STATUS[code])
    if answer.receipt is None:
        return error_response(ErrorCode(answer.outcome.value))
    return web.Response(
        body=answer.receipt, status=OUTCOME_STATUS[answer.outcome], content_type="application/json"
    )


async def post_batch(request: web.Request) -> web.Response:
    """Up to 256 packets, each handled exactly as if posted alone."""
    node = request.app[NODE_KEY]
    source = _admit(request)
    async with request.app[FEDERATION_INTAKE].body(request, MAX_REQUEST_BYTES * 4) as raw:
        try:
            packets = _split_batch(raw)
        except (ValueError, UnicodeDecodeError, EncodingError, RecursionError):
            return error_response(ErrorCode.INVALID_BATCH)
        fits = [p for p in packets if len(p) <= MAX_REQUEST_BYTES]
        received = iter(await node.receiver.receive_many(fits, source))
    answers = [
        next(received) if len(p) <= MAX_REQUEST_BYTES else Answer(Outcome.TOO_LARGE)
        for p in packets
    ]
    # Receipts are our own compact wire JSON: splice them in as they are.
    items = [
        b'{"receipt":%s,"status":%d}'
        % (a.receipt if a.receipt is not None else b"null", OUTCOME_STATUS[a.outcome])
        for a in answers
    ]
    return web.Response(
        body=b'{"results":[' + b",".join(items) + b"]}", content_type="application/json"
    )


class _Pairs(list[tuple[str, object]]):
    """A JSON object kept as its key/value pairs, so duplicate keys stay visible."""


_PAIRS_DECODER = json.JSONDecoder(object_pairs_hook=_Pairs)
# Posted alone, a wire object with duplicate keys is refused as malformed; this
# stand-in makes the single-packet path refuse it in the same way.
_DUPLICATE_KEYS = b'{"hp1":"","hp1":""}'


def _to_plain(value: object) -> object:
    if isinstance(value, _Pairs):
        return {k: _to_plain(v) for k, v in value}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


def _has_duplicates(value: object) -> bool:
    if isinstance(value, _Pairs):
        keys = [k for k, _ in value]
        return len(set(keys)) != len(keys) or any(_has_duplicates(v) for _, v in value)
    if isinstance(value, list):
        return any(_has_duplicates(v) for v in value)
    return False


def _split_batch(raw: bytes) -> list[bytes]:
    """The packets of a batch as bytes for the single-packet path. Wire objects
    allow whitespace and their inner bytes are b64u, so re-serialising compactly
    changes nothing the receive checks look at."""
    data = _PAIRS_DECODER.decode(raw.decode("utf-8"))
    if not isinstance(data, _Pairs) or [k for k, _ in data] != ["packets"]:
        raise ValueError('batch must be {"packets": [...]}')
    packets = data[0][1]
    if not isinstance(packets, list) or not 1 <= len(packets) <= MAX_BATCH:
        raise ValueError("batch holds 1 to 256 packets")
    out = []
    for packet in packets:
        if _has_duplicates(packet):
            out.append(_DUPLICATE_KEYS)
        else:
            out.append(json.dumps(_to_plain(packet), separators=(",", ":")).encode("utf-8"))
    return out


async def get_keyset(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return web.Response(
        body=node.directory.keys.keyset.wire,
        content_type="application/json",
        headers={"Cache-Control": "max-age=300"},
    )


async def get_log_head(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    wire = await node.checkpoint()
    return web.Response(body=wire, content_type="application/json")


async def get_digests(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    source = request.remote or "unknown"
    if not request.app[DIGEST_REQUESTS].take(source):
        node.security.note(source, "digests_rate_limited")
        raise RequestRefused(
            ErrorCode.TOO_MANY_REQUESTS, "too many log digest requests from this address"
        )
    try:
        after = int(request.query.get("after", "0"))
        limit = int(request.query.get("limit", str(MAX_DIGESTS)))
    except ValueError:
        return error_response(ErrorCode.BAD_REQUEST, "after and limit must be integers")
    if after < 0 or not 1 <= limit <= MAX_DIGESTS:
        return error_response(ErrorCode.BAD_REQUEST, "after >= 0 and 1 <= limit <= 10000")
    digests = await node.entry_digests(after, limit)
    return json_response({"after": after, "digests": [b64u_encode(d) for d in digests]})


async def get_forks(request: web.Request) -> web.Response:
    """The node's signed fork declarations (docs/protocol.md 5.1), oldest first."""
    wires = await request.app[NODE_KEY].fork_declarations()
    return web.Response(
        body=b'{"forks":[' + b",".join(wires) + b"]}", content_type="application/json"
    )


# --- attachments (docs/protocol.md section 8): tus-style resumable uploads -----------

UPLOAD_MEDIA_TYPE = "application/offset+octet-stream"
UPLOAD_READ_TIMEOUT_S = 30.0
UPLOAD_MIN_RATE = 64 * 1024  # bytes a second, after the first 30 s
T = TypeVar("T")
_TUS = {"Tus-Resumable": "1.0.0", "Cache-Control": "no-store"}


async def _upload_call(request: web.Request, source: str, call: Awaitable[T]) -> T:
    """Run an upload call; a refused ticket counts against the source address."""
    node = request.app[NODE_KEY]
    try:
        return await call
    except RequestRefused as exc:
        if exc.code is ErrorCode.UNAUTHORIZED:
            node.security.note(source, "upload_refused")
            node.security.sources.take(source)
        request[CLOSE_AFTER_ANSWER] = request.method == "PATCH"
        raise


async def head_attachment(request: web.Request) -> web.Response:
    """`200` with `Upload-Offset` and `Upload-Length` under a valid ticket."""
    node = request.app[NODE_KEY]
    source = _admit(request)
    aid = request.match_info["aid"]
    ticket = request.headers.get("Handover-Upload")
    state = await _upload_call(request, source, node.attachments.head(aid, ticket))
    return web.Response(
        status=200,
        headers={**_TUS, "Upload-Offset": str(state.offset), "Upload-Length": str(state.length)},
    )


async def _body(request: web.Request) -> AsyncGenerator[bytes]:
    """The request body as it arrives. A sender that stalls, or sends slower than
    UPLOAD_MIN_RATE after a grace period, is cut off (`request_timeout`): an
    upload slot is not held by a trickle."""
    started = time.monotonic()
    taken = 0
    while True:
        try:
            async with asyncio.timeout(UPLOAD_READ_TIMEOUT_S):
                data = await request.content.readany()
        except TimeoutError as exc:
            request[CLOSE_AFTER_ANSWER] = True
            raise RequestRefused(ErrorCode.REQUEST_TIMEOUT, "the body stalled") from exc
        if not data:
            return
        taken += len(data)
        if time.monotonic() - started > UPLOAD_READ_TIMEOUT_S + taken / UPLOAD_MIN_RATE:
            request[CLOSE_AFTER_ANSWER] = True
            raise RequestRefused(ErrorCode.REQUEST_TIMEOUT, "the upload arrived too slowly")
        yield data


async def patch_attachment(request: web.Request) -> web.Response:
    """Bytes from `Upload-Offset`; the ticket is verified before any is read."""
    node = request.app[NODE_KEY]
    source = _admit(request)
    aid = request.match_info["aid"]
    if request.content_type != UPLOAD_MEDIA_TYPE:
        request[CLOSE_AFTER_ANSWER] = True
        return error_response(ErrorCode.UNSUPPORTED_MEDIA_TYPE)
    try:
        offset = int(request.headers.get("Upload-Offset", ""))
        if offset < 0:
            raise ValueError("negative")
    except ValueError:
        request[CLOSE_AFTER_ANSWER] = True
        return error_response(ErrorCode.BAD_REQUEST, "Upload-Offset must be an integer >= 0")
    ticket = request.headers.get("Handover-Upload")
    result = await _upload_call(
        request,
        source,
        node.attachments.patch(aid, ticket, offset, _body(request), request.content_length),
    )
    headers = {**_TUS, "Upload-Offset": str(result.offset)}
    if result.conflict:
        request[CLOSE_AFTER_ANSWER] = True
        code = ErrorCode.OFFSET_MISMATCH
        response = error_response(code, "Upload-Offset is not the stored offset")
        response.headers.update(headers)
        return response
    return web.Response(status=204, headers=headers)


# Digest pages are read from the database and hashed: a peer witnessing a long
# log asks for many pages at once, then none for a day; 1 a second after that.
DIGEST_REQUESTS: web.AppKey[TokenBuckets] = web.AppKey("digest_requests")


def add_routes(app: web.Application) -> None:
    app[DIGEST_REQUESTS] = TokenBuckets(capacity=200, rate=1.0)
    app.router.add_post("/federation/v1/packets", post_packet)
    app.router.add_post("/federation/v1/packets:batch", post_batch)
    app.router.add_route("HEAD", "/federation/v1/attachments/{aid}", head_attachment)
    app.router.add_patch("/federation/v1/attachments/{aid}", patch_attachment)
    app.router.add_get("/.well-known/handover/keyset", get_keyset)
    app.router.add_get("/.well-known/handover/log-head", get_log_head)
    app.router.add_get("/federation/v1/log/digests", get_digests)
    app.router.add_get("/federation/v1/log/forks", get_forks)
