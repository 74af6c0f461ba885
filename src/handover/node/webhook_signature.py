"""The `Handover-Signature` header of webhook deliveries: make and check it.

Only the standard library, so an integrator can copy `verify` (it is printed in
docs/integrators.md, and a test runs that copy).

    Handover-Signature: t=1733356800,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

`t` is the sending time in Unix seconds; `body` the exact bytes of the request
body. A receiver recomputes the HMAC over the bytes it received, compares in
constant time, and refuses a `t` more than 5 minutes from its own clock.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TOLERANCE_S = 300


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: bytes, body: bytes, header: str, *, now: float | None = None, tolerance: int = 300
) -> bool:
    """True if `header` is a valid Handover-Signature of `body` made with `secret`."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = hmac.new(secret, parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))
