"""The local API for attachments: upload a file to send, download one received or sent.

Both directions stream: the upload is encrypted as it arrives and stored
piece by piece, the download decrypts piece by piece, so no request holds a
whole file in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from urllib.parse import quote, unquote

from aiohttp import web

from handover.node.attachment_access import Download
from handover.protocol.attachments import DEFAULT_TYPE
from handover.web.edge import NODE_KEY, operator_of, requires
from handover.web.errors import CLOSE_AFTER_ANSWER, json_response
from handover.workflow.errors import ErrorCode, RequestRefused

READ_TIMEOUT_S = 30.0


async def _body(request: web.Request) -> AsyncGenerator[bytes]:
    while True:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                data = await request.content.readany()
        except TimeoutError as exc:
            request[CLOSE_AFTER_ANSWER] = True
            raise RequestRefused(ErrorCode.REQUEST_TIMEOUT, "the body stalled") from exc
        if not data:
            return
        yield data


@requires("send")
async def upload_attachment(request: web.Request) -> web.Response:
    """`201 {"aid", "name", "type", "size"}`: the file, encrypted, ready to be sent."""
    node = request.app[NODE_KEY]
    try:
        # Percent-encoded UTF-8, so any name fits in an HTTP header.
        name = unquote(request.headers.get("Handover-Filename", ""), errors="strict")
    except UnicodeDecodeError as exc:
        request[CLOSE_AFTER_ANSWER] = True
        raise RequestRefused(ErrorCode.BAD_REQUEST, "Handover-Filename is not UTF-8") from exc
    media_type = request.content_type or DEFAULT_TYPE
    try:
        item = await node.attachments.store_local(_body(request), name=name, media_type=media_type)
    except RequestRefused:
        request[CLOSE_AFTER_ANSWER] = True
        raise
    return json_response(
        {"aid": item.aid, "name": item.name, "type": item.type, "size": item.size}, status=201
    )


def _justification(request: web.Request) -> str | None:
    return request.query.get("justification") or request.headers.get("Handover-Justification")


async def stream_download(request: web.Request, download: Download) -> web.StreamResponse:
    """The decrypted file as the answer, piece by piece, as an attachment to save."""
    item = download.item
    response = web.StreamResponse(
        headers={
            "Content-Type": item.type,
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(item.name, safe='')}",
            "Content-Length": str(item.size),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    async for chunk in download.chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


@requires("read")
async def download_received(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    download = await node.attachment_access.download(
        operator_of(request),
        request.match_info["pid"],
        request.match_info["aid"],
        _justification(request),
        sent=False,
    )
    return await stream_download(request, download)


@requires("read")
async def download_sent(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    download = await node.attachment_access.download(
        operator_of(request),
        request.match_info["pid"],
        request.match_info["aid"],
        _justification(request),
        sent=True,
    )
    return await stream_download(request, download)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/attachments", upload_attachment)
    app.router.add_get("/api/v1/inbox/{pid}/attachments/{aid}", download_received)
    app.router.add_get("/api/v1/packets/{pid}/attachments/{aid}", download_sent)
