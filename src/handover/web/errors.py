"""The one place that turns errors and outcomes into HTTP answers.

Code below `web/` raises :class:`RequestRefused` with an :class:`ErrorCode`
(or returns a :class:`ReceiveOutcome` on the federation path) and never picks
a status; :data:`STATUS` does. `error_middleware` wraps every route, local and
federation alike: a :class:`HandoverError` becomes its JSON error, anything
else a plain 500 with the traceback logged, never sent.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import structlog
from aiohttp import web

from handover.node.transport import Outcome
from handover.protocol.errors import HandoverError
from handover.store.errors import InvalidValue, StoreError
from handover.workflow.errors import ErrorCode, RequestRefused

log = structlog.get_logger(__name__)

STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.JUSTIFICATION_REQUIRED: 400,
    ErrorCode.JUSTIFICATION_TOO_LONG: 400,
    ErrorCode.JUSTIFICATION_TOO_WEAK: 400,
    ErrorCode.UNKNOWN_PURPOSE: 400,
    ErrorCode.REASON_REQUIRED: 400,
    ErrorCode.INVALID_PACKET: 400,
    ErrorCode.INVALID_BATCH: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.CLIENT_CERTIFICATE_REQUIRED: 403,
    ErrorCode.RESTRICTED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.NOT_RESTRICTED: 409,
    ErrorCode.RESTRICTED_BY_ORIGINATOR: 409,
    ErrorCode.SECOND_ADMIN_REQUIRED: 403,
    ErrorCode.EXTENSION_TOO_LONG: 400,
    ErrorCode.DELIVERY_PENDING: 409,
    ErrorCode.AMBIGUOUS: 409,
    ErrorCode.ATTACHMENT_INCOMPLETE: 409,
    ErrorCode.OFFSET_MISMATCH: 409,
    ErrorCode.SCAN_PENDING: 409,
    ErrorCode.QUARANTINED: 403,
    ErrorCode.ATTACHMENT_HASH: 422,
    ErrorCode.ERASED: 410,
    ErrorCode.CURSOR_EXPIRED: 410,
    ErrorCode.ON_BEHALF_OF_REQUIRED: 403,
    ErrorCode.ON_BEHALF_OF_INVALID: 400,
    ErrorCode.INVITATION_ENDED: 410,
    ErrorCode.PAIRING_FAILED: 403,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.UNKNOWN_SCHEMA: 422,
    ErrorCode.SCHEMA_INVALID: 422,
    ErrorCode.NOT_PERMITTED: 422,
    ErrorCode.CONSENT_REQUIRED: 422,
    ErrorCode.UNKNOWN_RECIPIENT: 422,
    ErrorCode.RECIPIENT_IS_SELF: 422,
    ErrorCode.TOO_MANY_REQUESTS: 429,
    ErrorCode.BODY_UNAVAILABLE: 500,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.BUSY: 503,
}
# The federation answer to one packet (docs/protocol.md section 6), both ways: the
# routes answer with these statuses and the HTTP transport reads them back.
OUTCOME_STATUS: dict[Outcome, int] = {
    Outcome.ACCEPTED: 200,
    Outcome.REJECTED: 422,
    Outcome.INVALID: 400,
    Outcome.TOO_LARGE: 413,
    Outcome.ATTACHMENT_INCOMPLETE: 409,
}
_OUTCOME_OF = {status: outcome for outcome, status in OUTCOME_STATUS.items()}


def outcome_of(status: int) -> Outcome:
    """The outcome an HTTP status means; anything unlisted is worth retrying."""
    return _OUTCOME_OF.get(status, Outcome.UNAVAILABLE)


# aiohttp's own refusals (routing, body size) by status.
_HTTP_CODES = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Set by whoever stops reading a body early (web/intake.py): the answer is
# written with `Connection: close`, then the connection ends.
CLOSE_AFTER_ANSWER: web.RequestKey[bool] = web.RequestKey("close_after_answer")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        status=status,
        content_type="application/json",
    )


def error_response(code: ErrorCode, message: str | None = None) -> web.Response:
    status, data = _error(code, message)
    return json_response(data, status)


def error_answer(exc: BaseException) -> tuple[int, dict[str, str]]:
    """The status and JSON error body an exception is answered with (logging
    what is unexpected); the one mapping, for whole requests and batch items alike."""
    if isinstance(exc, RequestRefused):
        return _error(exc.code, exc.message)
    if isinstance(exc, web.HTTPException):
        code = _HTTP_CODES.get(exc.status)
        if code is not None:
            return _error(code)
        return exc.status, {"error": exc.reason.lower().replace(" ", "_")}
    if isinstance(exc, InvalidValue):
        return _error(
            ErrorCode.BAD_REQUEST,
            "a value in the request cannot be stored (a NUL character, or a number out of range)",
        )
    if isinstance(exc, StoreError):
        log.error("store_error", error=str(exc))
        return _error(ErrorCode.UNAVAILABLE, "the database is unavailable")
    if isinstance(exc, HandoverError):
        log.error("unhandled_handover_error", error_type=type(exc).__name__)
        return _error(ErrorCode.INTERNAL_ERROR)
    log.error("unhandled_exception", exc_info=exc)
    return _error(ErrorCode.INTERNAL_ERROR)


def _error(code: ErrorCode, message: str | None = None) -> tuple[int, dict[str, str]]:
    data: dict[str, str] = {"error": code.value}
    if message:
        data["message"] = message
    return STATUS[code], data


def _response_for(exc: BaseException) -> web.Response:
    status, data = error_answer(exc)
    return json_response(data, status)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    # A caller's request id is echoed and logged only when it is a short token.
    offered = request.headers.get("X-Request-Id", "")
    request_id = offered if _REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex[:16]
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    try:
        response: web.StreamResponse = await handler(request)
    except Exception as exc:
        response = _response_for(exc)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    response.headers["X-Request-Id"] = request_id
    if request.get(CLOSE_AFTER_ANSWER):
        response.force_close()
    log.debug(
        "http_request",
        request_id=request_id,
        method=request.method,
        path=request.path,  # path only: query strings may carry justifications
        status=response.status,
        ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return response
