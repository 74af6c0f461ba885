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
import re
from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources

from handover.store.audit import purpose_of
from handover.workflow.errors import ErrorCode, RequestRefused

MAX_JUSTIFICATION = 1000
# What `Handover-On-Behalf-Of` may hold: a staff id of the case management system.
STAFF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SYSTEM = "system"
# The node itself, re-sending what an operator already decided (maintenance retries):
# never an operator's role.
NODE = "node"
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
    "NODE",
    "PURPOSES",
    "SYSTEM",
    "Operator",
    "purpose_of",
    "require_justification",
    "require_staff",
    "staff_id",
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
    # For a `system` operator: the member of staff it acts for (audit entries
    # record it beside the operator as `on_behalf_of`).
    on_behalf_of: str | None = None


def staff_id(value: str) -> str:
    """A `Handover-On-Behalf-Of` value, checked.

    Raises:
        RequestRefused: `on_behalf_of_invalid` for anything but a staff id.
    """
    if not STAFF_ID.fullmatch(value):
        raise RequestRefused(
            ErrorCode.ON_BEHALF_OF_INVALID,
            "Handover-On-Behalf-Of must be a staff id: 1 to 64 letters, digits, '.', '_'"
            " or '-', starting with a letter or digit",
        )
    return value


def require_staff(operator: Operator) -> None:
    """A `system` operator may read bodies and send only on behalf of staff.

    Raises:
        RequestRefused: `on_behalf_of_required` without `Handover-On-Behalf-Of`.
    """
    if operator.role == SYSTEM and operator.on_behalf_of is None:
        raise RequestRefused(
            ErrorCode.ON_BEHALF_OF_REQUIRED,
            "a system operator reads bodies and sends only for a member of staff:"
            " add the header Handover-On-Behalf-Of: STAFF-ID",
        )


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
