"""Stored receipts as API answers show them.

A receipt is stored as the wire bytes of the signed receipt (`{"hp1r": ..,
"sig": ..}`), checked when it was made or received: `received.receipt` is the
one this node signed, `deliveries.receipt` the one a peer signed for a packet
of ours. Answers carry it as that JSON object, unchanged, so a caller can
verify it itself. Checking a receipt is `handover.protocol.receipt`'s
`parse_receipt` / `verify_receipt`, not this.
"""

from __future__ import annotations

import json
from typing import Any


def receipt_json(wire: bytes | None) -> dict[str, Any] | None:
    """The stored receipt `wire` as the JSON object an API answer carries (None
    while there is no receipt)."""
    if wire is None:
        return None
    value: dict[str, Any] = json.loads(wire)
    return value
