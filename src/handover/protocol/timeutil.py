"""Protocol time: integer milliseconds since the Unix epoch, with an injectable clock."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

SKEW_MS = 5 * 60 * 1000
MINUTE_MS = 60 * 1000
DAY_MS = 24 * 60 * 60 * 1000

Clock = Callable[[], int]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def date_time(ms: int) -> str:
    """RFC 3339 UTC date-time to the second, as the schemas write them."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
