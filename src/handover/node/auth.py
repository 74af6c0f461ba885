"""Operators' bearer tokens: who is asking (checked at the edge by `web/edge.py`),
and why a token was refused (`disabled`, `expired`, `unknown`) for the log and
the metrics, never with the token itself."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from handover.protocol.timeutil import Clock, now_ms
from handover.store import operators as operator_store
from handover.store.db import Database
from handover.workflow.access import Operator

TOKEN_CACHE_S = 5.0
MAX_CACHED = 1000


def token_hash(token: str) -> bytes:
    """What the database keeps of a token (the token itself is shown once, at issue)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Refusal:
    """Why a token was refused: `unknown` (no operator holds it), `disabled`,
    `expired`; `operator` is the holder's name when there is one."""

    reason: str
    operator: str | None = None


class Authenticator:
    def __init__(self, db: Database, clock: Clock = now_ms) -> None:
        self.db = db
        self.clock = clock
        self._tokens: dict[str, tuple[Operator, float]] = {}

    def forget(self) -> None:
        """Drop cached answers (an operator was changed: NOTIFY handover_operators)."""
        self._tokens.clear()

    async def check(self, token: str) -> Operator | Refusal:
        """The operator holding this bearer token, or why it may not be used.

        Accepted tokens are cached for a few seconds (never past the token's
        expiry); every change of an operator empties the cache of every
        process (through NOTIFY).
        """
        now = time.monotonic()
        cached = self._tokens.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self.db.connection() as conn:
            holder = await operator_store.lookup(conn, token_hash(token))
        if holder is None:
            return Refusal("unknown")
        at = self.clock()
        reason = holder.refusal(at)
        if reason is not None:
            return Refusal(reason, holder.name)
        operator = Operator(holder.name, holder.role)
        if len(self._tokens) > MAX_CACHED:
            self._tokens.clear()
        keep = TOKEN_CACHE_S
        if holder.expires_at is not None:
            keep = min(keep, (holder.expires_at - at) / 1000)
        self._tokens[token] = (operator, now + keep)
        return operator

    async def authenticate(self, token: str) -> Operator | None:
        """The operator holding this bearer token, None when it may not be used."""
        found = await self.check(token)
        return found if isinstance(found, Operator) else None
