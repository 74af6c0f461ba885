"""What a subject access export may say (LED Art 13, 14, 15), beyond what is held:

- an admin's decision to withhold an item, or the existence of its
  restriction (Art 15(1): legal ground and review date), leaves it out;
- a restriction is never explained to the subject (its reason can tip them off);
- third-party data (victims' exclusion zones, addresses, family contacts,
  accounts of what others reported) is summarised, not quoted, unless the
  node's setting `subject_quote_third_party` allows it;
- staff are named by role, not by name, unless `subject_name_staff` is set
  (issue 12 item 14);
- the export states the legal basis, the subject's rights and the
  supervisory authority's contact from the node's settings.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from handover.workflow.errors import ErrorCode, RequestRefused

WITHHOLD_WHAT = ("item", "restriction")
# Art 15(1) grounds: avoid obstructing inquiries or procedures; avoid prejudicing
# the prevention, detection, investigation or prosecution of offences; protect
# public security; protect national security; protect the rights of others.
GROUNDS = (
    "OBSTRUCT_INQUIRY",
    "PREJUDICE_INVESTIGATION",
    "PUBLIC_SECURITY",
    "NATIONAL_SECURITY",
    "RIGHTS_OF_OTHERS",
)
# Top-level body fields that hold other people's data.
THIRD_PARTY = frozenset({"release_address", "exclusion_zones", "family_contact", "account"})
ROLE_WORDS = {
    "admin": "an administrator",
    "caseworker": "a caseworker",
    "auditor": "an auditor",
}
STAFF = "a member of staff"
RIGHTS = [
    {
        "right": "rectification",
        "text": "You may ask for inaccurate information about you to be corrected (Art 16(1)).",
    },
    {
        "right": "erasure",
        "text": "You may ask for information held unlawfully or no longer needed to be erased"
        " (Art 16(2)).",
    },
    {
        "right": "restriction",
        "text": "You may ask for the use of information to be restricted while its accuracy"
        " is contested (Art 16(3)).",
    },
    {
        "right": "complaint",
        "text": "You may complain to the supervisory authority named below, and seek a judicial"
        " remedy (Art 17, 52, 53).",
    },
]
WITHHELD_NOTICE = (
    "Information may be left out of this export where the law allows it (Art 15(1)):"
    " this statement is made in every export, whether or not anything was left out."
)


@dataclass(frozen=True)
class SubjectSettings:
    """The node's settings for subject access exports (node/config.py)."""

    legal_basis: str = ""
    supervisory_authority: str = ""
    quote_third_party: bool = False
    name_staff: bool = False


def check_withholding(what: object, ground: object, review_on: object, today: str) -> None:
    """Raises RequestRefused `bad_request` naming the member that is wrong."""
    if what not in WITHHOLD_WHAT:
        raise RequestRefused(ErrorCode.BAD_REQUEST, f"'what' is one of {', '.join(WITHHOLD_WHAT)}")
    if ground not in GROUNDS:
        raise RequestRefused(ErrorCode.BAD_REQUEST, f"'ground' is one of {', '.join(GROUNDS)}")
    try:
        day = dt.date.fromisoformat(review_on) if isinstance(review_on, str) else None
    except ValueError:
        day = None
    if day is None or len(str(review_on)) != 10 or day.isoformat() <= today:
        raise RequestRefused(
            ErrorCode.BAD_REQUEST, "'review_on' is a future date YYYY-MM-DD (Art 15: reviewed)"
        )


def summarise(name: str, value: object) -> object:
    """A third-party field, summarised: how much is held, never what."""
    if isinstance(value, list):
        return f"{len(value)} entries held (other people's data: summarised, not quoted)"
    if isinstance(value, dict):
        parts = ", ".join(sorted(value))
        return f"held: {parts} (other people's data: summarised, not quoted)"
    return "held (other people's data: summarised, not quoted)"


def shown_body(body: dict[str, Any], settings: SubjectSettings) -> dict[str, Any]:
    """The body as the export shows it: third-party fields summarised unless allowed."""
    if settings.quote_third_party:
        return body
    return {k: summarise(k, v) if k in THIRD_PARTY else v for k, v in body.items()}


class Staff:
    """Operator names as the export shows them: by role unless the setting says otherwise."""

    def __init__(self, roles: dict[str, str], settings: SubjectSettings) -> None:
        self.roles = roles
        self.by_name = settings.name_staff

    def __call__(self, name: object) -> object:
        if name is None or self.by_name:
            return name
        return ROLE_WORDS.get(self.roles.get(str(name), ""), STAFF)


def statements(settings: SubjectSettings) -> dict[str, Any]:
    """What every export states: legal basis, rights, supervisory authority."""
    return {
        "legal_basis": settings.legal_basis
        or "Processing for the execution of criminal penalties (Directive (EU) 2016/680,"
        " Art 1(1) and 8) under the law governing this agency.",
        "rights": RIGHTS,
        "supervisory_authority": settings.supervisory_authority
        or "not configured: ask this agency's data protection officer",
        "withheld_notice": WITHHELD_NOTICE,
    }
