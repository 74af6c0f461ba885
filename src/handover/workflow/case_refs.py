"""Minting shared case references.

A case reference is `HC-` and 26 characters of Crockford base32 (the schemas'
`case_ref` pattern): a ULID, 48 bits of milliseconds then 80 random bits, so
references sort by when they were minted and two agencies never mint the same
one. The agency that opens the handover mints it (`handover cases new-ref`),
before its first packet on the case, and every packet on the case carries it.
It is pseudonymous: it says nothing about the person.
"""

from __future__ import annotations

import re
import secrets

from handover.protocol.timeutil import now_ms

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CASE_REF_RE = re.compile(r"^HC-[0-9A-HJKMNP-TV-Z]{26}$")


def new_case_ref(now: int | None = None) -> str:
    """A new case reference: `HC-` and a ULID of `now` (milliseconds; default: the clock)."""
    at = now_ms() if now is None else now
    if not 0 <= at < 2**48:
        raise ValueError("the time of a case reference is 0 to 2^48 - 1 milliseconds")
    value = (at << 80) | secrets.randbits(80)
    chars = [CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1)]
    return "HC-" + "".join(chars)
