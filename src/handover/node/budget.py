"""A byte budget: at most so many bytes of packets being sealed or opened at once.

Large packets are held in several forms while they are worked on (request,
parsed JSON, canonical bytes, padded plaintext, ciphertext, base64url wire), so
the number of requests in progress is not what bounds memory: their size is.
A request larger than the whole budget waits until it can have all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def take(self, size: int) -> AsyncIterator[None]:
        """Hold `size` bytes of the budget (at most all of it) while the block runs."""
        need = max(0, min(size, self.limit))
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use + need <= self.limit)
            self.in_use += need
        try:
            yield
        finally:
            async with self._changed:
                self.in_use -= need
                self._changed.notify_all()
