"""Who is asking and why: the authenticated operator passed inward from the
edge, and the justification every read or change of personal data needs.

A justification means something (LED Art 25): at least 10 characters and two
words, optionally led by a purpose code from the policy file's `purposes`
list, written `PURPOSE: text` (`SUPERVISION: preparing the licence
conditions`). The audit writer records that code as the entry's own
`purpose` field, searchable with `GET /api/v1/audit?purpose=`.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources

from handover.store.audit import purpose_of
from handover.workflow.errors import ErrorCode, RequestRefused

MAX_JUSTIFICATION = 1000
MIN_JUSTIFICATION = 10
MIN_WORDS = 2
RULE = (
    f"a justification is at least {MIN_JUSTIFICATION} characters and {MIN_WORDS} words"
    " saying why, optionally led by a purpose code (PURPOSE: text)"
)


def _shipped_purposes() -> frozenset[str]:
    path = resources.files("handover.workflow") / "default_policy.json"
    return frozenset(json.loads(path.read_text("utf-8")).get("purposes", []))


# The purpose codes of the shipped policy file; a node's policy may list others.
PURPOSES = _shipped_purposes()


__all__ = [
    "JUSTIFICATION_ERRORS",
    "PURPOSES",
    "Operator",
    "purpose_of",
    "require_justification",
]
# The refusals of a justification: a form shows them next to its field.
JUSTIFICATION_ERRORS = frozenset(
    {
        ErrorCode.JUSTIFICATION_REQUIRED,
        ErrorCode.JUSTIFICATION_TOO_LONG,
        ErrorCode.JUSTIFICATION_TOO_WEAK,
        ErrorCode.UNKNOWN_PURPOSE,
    }
)


@dataclass(frozen=True)
class Operator:
    """An authenticated local API user (verified at the edge, passed inward)."""

    name: str
    role: str


def require_justification(justification: object, purposes: Collection[str] | None = None) -> str:
    """The justification, stripped.

    Raises:
        RequestRefused: `justification_required` when missing or blank,
            `justification_too_long` over 1,000 characters,
            `justification_too_weak` under 10 characters or 2 words (naming the
            rule), `unknown_purpose` for a leading capitalised code that is not
            in the policy's list (naming the allowed codes).
    """
    if not isinstance(justification, str) or not justification.strip():
        raise RequestRefused(ErrorCode.JUSTIFICATION_REQUIRED, "a justification is required")
    if len(justification) > MAX_JUSTIFICATION:
        raise RequestRefused(
            ErrorCode.JUSTIFICATION_TOO_LONG, "the justification is over 1000 characters"
        )
    why = justification.strip()
    allowed = PURPOSES if purposes is None else purposes
    code = purpose_of(why)
    text = why
    if code is not None:
        if code not in allowed:
            raise RequestRefused(
                ErrorCode.UNKNOWN_PURPOSE,
                f"{code} is not a purpose code of the policy;"
                f" allowed: {', '.join(sorted(allowed))}",
            )
        text = why[len(code) + 1 :].strip()
    if len(text) < MIN_JUSTIFICATION or len(text.split()) < MIN_WORDS:
        raise RequestRefused(ErrorCode.JUSTIFICATION_TOO_WEAK, RULE)
    return why
