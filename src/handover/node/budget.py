"""A byte budget: at most so many bytes of packets being read, sealed or opened at once.

Large packets are held in several forms while they are worked on (request,
parsed JSON, canonical bytes, padded plaintext, ciphertext, base64url wire), so
the number of requests in progress is not what bounds memory: their size is.
Bytes are reserved as they arrive (`reserve`), never on a client's word (a
declared Content-Length), and a reservation that cannot be had in time fails
instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class BudgetExhausted(Exception):
    """The budget could not give the bytes asked for within the time allowed."""


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.waiting = 0
        self.exhausted_total = 0
        self._changed = asyncio.Condition()

    @property
    def exhausted(self) -> bool:
        """True while someone waits for bytes the budget does not have."""
        return self.waiting > 0

    async def reserve(self, size: int, timeout: float | None = None) -> int:
        """Hold `size` bytes (at most the whole budget); returns what was held.

        Raises:
            BudgetExhausted: the bytes were not free within `timeout` seconds.
        """
        need = max(0, min(size, self.limit))
        async with self._changed:
            if self.in_use + need > self.limit:
                self.waiting += 1
                try:
                    async with asyncio.timeout(timeout):
                        await self._changed.wait_for(lambda: self.in_use + need <= self.limit)
                except TimeoutError as exc:
                    self.exhausted_total += 1
                    raise BudgetExhausted(f"{need} bytes not free in time") from exc
                finally:
                    self.waiting -= 1
            self.in_use += need
        return need

    async def release(self, size: int) -> None:
        async with self._changed:
            self.in_use -= size
            self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def take(self, size: int, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold `size` bytes of the budget (at most all of it) while the block runs."""
        held = await self.reserve(size, timeout)
        try:
            yield
        finally:
            await self.release(held)
