"""Who is asking and why: the authenticated operator passed inward from the
edge, and the justification every read or change of personal data needs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from handover.workflow.errors import ErrorCode, RequestRefused

MAX_JUSTIFICATION = 1000
# What `Handover-On-Behalf-Of` may hold: a staff id of the case management system.
STAFF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SYSTEM = "system"


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
