"""Operators' bearer tokens: who is asking (checked at the edge by `web/edge.py`)."""

from __future__ import annotations

import hashlib
import time

from handover.store import operators as operator_store
from handover.store.db import Database
from handover.workflow.access import Operator

TOKEN_CACHE_S = 5.0
MAX_CACHED = 1000


def token_hash(token: str) -> bytes:
    """What the database keeps of a token (the token itself is shown once, at issue)."""
    return hashlib.sha256(token.encode("utf-8")).digest()


class Authenticator:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._tokens: dict[str, tuple[Operator, float]] = {}

    async def authenticate(self, token: str) -> Operator | None:
        """The operator holding this bearer token. Answers are cached for a few
        seconds (a disabled operator loses access within TOKEN_CACHE_S)."""
        now = time.monotonic()
        cached = self._tokens.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self.db.connection() as conn:
            found = await operator_store.by_token_hash(conn, token_hash(token))
        operator = None if found is None else Operator(*found)
        if operator is not None:
            if len(self._tokens) > MAX_CACHED:
                self._tokens.clear()
            self._tokens[token] = (operator, now + TOKEN_CACHE_S)
        return operator
