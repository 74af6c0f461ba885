"""`POST /api/v1/packets:batch`: up to 256 local submissions in one request.

Each item is exactly what `POST /api/v1/packets` takes and is answered exactly
as if posted alone: its status and the JSON body that request would have got
(`{"status": 202, "packets": [...]}` or `{"status": 422, "error": ..., "message": ...}`),
in request order. The items are submitted concurrently, so the audit writer
commits them in a few group commits instead of one per request; an item's
refusal does not affect the others (the writer's safe path gives each job its
own savepoint). The whole request is bounded like a single submission: at most
22.5 MiB of body, held in the local byte budget until every item is sealed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from handover.protocol.packet import MAX_REQUEST_BYTES
from handover.web.api import submit_one
from handover.web.edge import LOCAL_INTAKE, NODE_KEY, json_object, operator_of, requires
from handover.web.errors import error_answer, json_response
from handover.workflow.errors import ErrorCode, RequestRefused

MAX_SUBMISSIONS = 256
_NOT_OBJECT = RequestRefused(ErrorCode.BAD_REQUEST, "the request body must be a JSON object")


@requires("send")
async def submit_batch(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    operator = operator_of(request)
    async with request.app[LOCAL_INTAKE].body(request, MAX_REQUEST_BYTES) as raw:
        data = json_object(raw)
        del raw
        items = data.get("submissions")
        if set(data) != {"submissions"} or not isinstance(items, list) or not items:
            raise RequestRefused(
                ErrorCode.BAD_REQUEST,
                'the request body must be {"submissions": [...]} with 1 to'
                f" {MAX_SUBMISSIONS} submissions",
            )
        if len(items) > MAX_SUBMISSIONS:
            raise RequestRefused(
                ErrorCode.TOO_LARGE,
                f"{len(items)} submissions: at most {MAX_SUBMISSIONS} in one batch",
            )
        del data

        async def one(item: object) -> dict[str, Any]:
            try:
                if not isinstance(item, dict):
                    raise _NOT_OBJECT
                return {"status": 202, **await submit_one(node, operator, item)}
            except Exception as exc:  # answered per item, as a single request would be
                status, error = error_answer(exc)
                return {"status": status, **error}

        results = await asyncio.gather(*(one(item) for item in items))
    return json_response({"results": results})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/packets:batch", submit_batch)
