"""Who is asking and why: the authenticated operator passed inward from the
edge, and the justification every read or change of personal data needs."""

from __future__ import annotations

from dataclasses import dataclass

from handover.workflow.errors import ErrorCode, RequestRefused

MAX_JUSTIFICATION = 1000


@dataclass(frozen=True)
class Operator:
    """An authenticated local API user (verified at the edge, passed inward)."""

    name: str
    role: str


def require_justification(justification: object) -> str:
    """The justification, stripped.

    Raises:
        RequestRefused: `justification_required` when missing or blank,
            `justification_too_long` over 1,000 characters.
    """
    if not isinstance(justification, str) or not justification.strip():
        raise RequestRefused(ErrorCode.JUSTIFICATION_REQUIRED, "a justification is required")
    if len(justification) > MAX_JUSTIFICATION:
        raise RequestRefused(
            ErrorCode.JUSTIFICATION_TOO_LONG, "the justification is over 1000 characters"
        )
    return justification.strip()
