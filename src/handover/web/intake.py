"""Reading request bodies from the network without letting one client hold the node.

Every body a route reads goes through :meth:`Intake.body`:

- a declared `Content-Length` over the route's limit is refused (`too_large`)
  before a byte is read, and so is a body that grows past it;
- bytes are reserved in the byte budget as they arrive, never on the client's
  word; a reservation that is not free within `budget_wait_s` is refused
  (`busy`) instead of queueing for ever;
- the client must keep up a minimum rate in every window: within `base_s`
  seconds of the start, and then within every `window_s` seconds, at least
  `min_rate * window_s` more bytes (or the end of the body) must arrive, or the
  request ends with `request_timeout` and the connection is closed. A client
  cannot send fast, then stall on the credit it earned while its bytes stay
  reserved;
- one source address has at most `per_source` bodies in flight
  (`too_many_requests` beyond that).

The bytes stay reserved while the caller works on the body (sealing or
opening holds it in several forms), and are released when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from handover.node.budget import BudgetExhausted, ByteBudget
from handover.web.errors import CLOSE_AFTER_ANSWER
from handover.workflow.errors import ErrorCode, RequestRefused

log = structlog.get_logger(__name__)

CHUNK = 64 * 1024


class Intake:
    def __init__(
        self,
        budget: ByteBudget,
        *,
        base_s: float = 10.0,
        window_s: float = 5.0,
        min_rate: int = 64 * 1024,
        per_source: int = 4,
        budget_wait_s: float = 5.0,
    ) -> None:
        self.budget = budget
        self.base_s = base_s
        self.window_s = window_s
        self.min_rate = min_rate
        self.per_source = per_source
        self.budget_wait_s = budget_wait_s
        self._in_flight: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # by code, for metrics

    def _refuse(self, code: ErrorCode, message: str, source: str) -> RequestRefused:
        self.refused[code.value] += 1
        log.warning("request_body_refused", code=code.value, source=source)
        return RequestRefused(code, message)

    @contextlib.asynccontextmanager
    async def body(self, request: web.Request, limit: int) -> AsyncIterator[bytes]:
        """The whole body, held in the budget until the block ends.

        Raises:
            RequestRefused: too_large, too_many_requests, request_timeout or busy.
        """
        source = request.remote or "unknown"
        declared = request.content_length
        if declared is not None and declared > limit:
            raise self._refuse(ErrorCode.TOO_LARGE, f"the body is over {limit} bytes", source)
        if self._in_flight[source] >= self.per_source:
            raise self._refuse(
                ErrorCode.TOO_MANY_REQUESTS,
                f"at most {self.per_source} requests with a body at once from one address",
                source,
            )
        self._in_flight[source] += 1
        held = 0
        try:
            chunks: list[bytes] = []
            received = 0
            # The current window: when it began, and the bytes it must see.
            window_end = time.monotonic() + self.base_s
            window_need = int(self.min_rate * self.window_s)
            while True:
                remaining = window_end - time.monotonic()
                try:
                    if remaining <= 0:
                        raise TimeoutError
                    async with asyncio.timeout(remaining):
                        chunk = await request.content.read(CHUNK)
                except TimeoutError:
                    _close_after_answer(request)
                    raise self._refuse(
                        ErrorCode.REQUEST_TIMEOUT,
                        f"the body arrived slower than {self.min_rate} bytes per second",
                        source,
                    ) from None
                if not chunk:
                    break
                received += len(chunk)
                window_need -= len(chunk)
                if window_need <= 0:
                    window_end = time.monotonic() + self.window_s
                    window_need = int(self.min_rate * self.window_s)
                if received > limit:
                    # aiohttp drains the rest (for at most its lingering time) so
                    # the client reads the answer instead of a reset.
                    raise self._refuse(
                        ErrorCode.TOO_LARGE, f"the body is over {limit} bytes", source
                    )
                try:
                    held += await self.budget.reserve(len(chunk), self.budget_wait_s)
                except BudgetExhausted:
                    _close_after_answer(request)
                    raise self._refuse(
                        ErrorCode.BUSY, "the node is busy: try again shortly", source
                    ) from None
                chunks.append(chunk)
            body = b"".join(chunks)
            del chunks
            yield body
        finally:
            self._in_flight[source] -= 1
            if self._in_flight[source] <= 0:
                del self._in_flight[source]
            if held:
                await self.budget.release(held)


def _close_after_answer(request: web.Request) -> None:
    """Answer, then close the connection: the rest of the body is not wanted
    (aiohttp drains it for at most its lingering time, 10 s)."""
    request[CLOSE_AFTER_ANSWER] = True
