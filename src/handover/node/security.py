"""Refusals that must not cost the audit log: a bounded security log and limits.

The audit log is append-only and every peer witnesses it, so it keeps what
concerns this node's data and its pinned peers. A refusal before the sender
is authenticated (malformed wire, unknown sender or key, bad signature, a
replayed pid with other bytes) says nothing about that, and anyone who can
reach the port can cause it: such refusals are counted here per hour, source
address and reason, in memory, and flushed to the `security_events` table
by the maintenance loop. Rows per hour are bounded by `MAX_SOURCES` x the
number of reasons, whatever the flood.

Two token buckets protect the node further: per source address, refused
packets use up the address's allowance and further posts from it are turned
away before their body is read (`too_many_requests`); per authenticated
sender, refusals beyond its allowance are counted here instead of audited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from handover.protocol.timeutil import Clock
from handover.store import security as security_store
from handover.store.db import Database

log = structlog.get_logger(__name__)

WINDOW_MS = 3_600_000
MAX_SOURCES = 64  # distinct sources per window; the rest count as "other"
RETENTION_MS = 90 * 86_400_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """One bucket per key: `capacity` tokens, refilled at `rate` per second.

    At most `max_keys` buckets are kept; the fullest ones are dropped first
    (a full bucket is the same as no bucket).
    """

    def __init__(
        self,
        capacity: float,
        rate: float,
        max_keys: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.rate = rate
        self.max_keys = max_keys
        self._monotonic = monotonic
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str) -> _Bucket:
        now = self._monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._evict()
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        return bucket

    def _evict(self) -> None:
        fullest = sorted(self._buckets, key=lambda k: -self._buckets[k].tokens)
        for key in fullest[: max(1, len(fullest) // 10)]:
            del self._buckets[key]

    def allows(self, key: str) -> bool:
        """True while the key has a token left (nothing is used up)."""
        return key not in self._buckets or self._bucket(key).tokens >= 1

    def take(self, key: str, n: float = 1) -> bool:
        """Use up `n` tokens; False (and nothing used) when fewer are left."""
        bucket = self._bucket(key)
        if bucket.tokens < n:
            bucket.tokens = max(0.0, bucket.tokens - n)  # keep it empty while abused
            return False
        bucket.tokens -= n
        return True


class SecurityLog:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self._counts: dict[tuple[int, str, str], list[int]] = {}
        self._sources: dict[int, set[str]] = {}
        # Refused packets per source address: 50 at once, 5 a second after.
        self.sources = TokenBuckets(capacity=50, rate=5)
        # Audited refusals per authenticated sender: 100 at once, 1 a second after.
        self.senders = TokenBuckets(capacity=100, rate=1)
        self.noted = 0

    def note(self, source: str, reason: str) -> None:
        """Count one refusal of `reason` from `source` (kept in memory until flushed)."""
        now = self.clock()
        window = now - now % WINDOW_MS
        seen = self._sources.setdefault(window, set())
        if source not in seen:
            if len(seen) >= MAX_SOURCES:
                source = "other"
            seen.add(source)
        entry = self._counts.get((window, source, reason))
        if entry is None:
            self._counts[(window, source, reason)] = [1, now, now]
        else:
            entry[0] += 1
            entry[2] = now
        self.noted += 1

    async def flush(self) -> int:
        """Write the counts gathered since the last flush; returns the rows touched."""
        counts, self._counts = self._counts, {}
        current = self.clock() - self.clock() % WINDOW_MS
        self._sources = {w: s for w, s in self._sources.items() if w >= current}
        if not counts:
            return 0
        rows = [
            security_store.SecurityCount(w, source, reason, n, first, last)
            for (w, source, reason), (n, first, last) in counts.items()
        ]
        async with self.db.transaction() as conn:
            await security_store.add(conn, rows)
        return len(rows)

    async def prune(self) -> int:
        async with self.db.transaction() as conn:
            return await security_store.prune(conn, self.clock() - RETENTION_MS)
