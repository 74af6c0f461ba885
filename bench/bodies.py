"""Benchmark bodies: the release-notice example, and schema-valid bodies of a chosen size.

Sizes are bytes of the body's canonical JSON (what is sealed inside a packet).
A body is grown by filling the schema's free-text fields in a fixed order
(risk narrative, risk-to-self detail, resettlement notes, exclusion zones,
release address lines), each up to its `maxLength`. `family_contact` is left
out: the default sharing policy sends it to probation only under a recorded
FAMILY_INVOLVEMENT consent. The text is pseudo-random so nothing along the way
(PostgreSQL compresses large values) gets an easy ride on repetitive filler.

`maxLength` counts characters, not bytes, so ASCII text caps such a body at
about 123 KB. Larger targets use 2-, 3- or 4-byte UTF-8 letters (Cyrillic,
CJK, CJK extension B): still a schema-valid body, written in another script.
Even in 4-byte letters every one of those fields full gives about 486 KB, the
largest release-notice probation may receive without consent; a larger
target is capped there and reported as capped.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from typing import Any

from handover.workflow.schemas import default_registry

SCHEMA_ID = "handover/release-notice/1"
TEXT_MAX = 4000  # $defs/text maxLength
AREA_MAX = 200
LINE_MAX = 200
TOWN_MAX = 100
PATHWAYS = (
    "ACCOMMODATION",
    "ATTITUDES_THINKING_AND_BEHAVIOUR",
    "CHILDREN_FAMILIES_AND_COMMUNITY",
    "DRUGS_AND_ALCOHOL",
    "EDUCATION_SKILLS_AND_WORK",
    "FINANCE_AND_ID",
    "HEALTH",
)
# Code point ranges whose UTF-8 encoding is 1, 2, 3 or 4 bytes wide (letters only,
# no spaces, so every character of a filled field has exactly that width).
_ALPHABETS: dict[int, tuple[int, int]] = {
    1: (0x61, 0x7A),  # a-z
    2: (0x430, 0x44F),  # Cyrillic small letters
    3: (0x4E00, 0x9FA5),  # CJK unified ideographs
    4: (0x20000, 0x2A6D6),  # CJK extension B
}


def canonical_size(body: dict[str, Any]) -> int:
    return len(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())


def example_body() -> dict[str, Any]:
    """The first example of the release-notice schema (about 2 KiB)."""
    return default_registry().examples(SCHEMA_ID)[0]


@dataclass(frozen=True)
class SizedBody:
    body: dict[str, Any]
    target: int
    size: int
    char_bytes: int
    capped: bool


def _text(rng: random.Random, width: int, length: int) -> str:
    lo, hi = _ALPHABETS[width]
    if width == 1:
        # Words of letters separated by spaces: reads like (very bad) prose.
        out = []
        while sum(len(w) + 1 for w in out) < length:
            out.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(2, 9))))
        return " ".join(out)[:length].rstrip() or "x"
    return "".join(chr(rng.randint(lo, hi)) for _ in range(length))


def _fill_order() -> list[tuple[str, int, str, int]]:
    """(section, index, field, maxLength) in the order fields are filled."""
    order: list[tuple[str, int, str, int]] = [
        ("risk_detail", 0, "narrative", TEXT_MAX),
        ("risk_to_self", 0, "detail", TEXT_MAX),
    ]
    order += [("resettlement", i, "notes", TEXT_MAX) for i in range(len(PATHWAYS))]
    for i in range(20):
        order += [
            ("exclusion_zones", i, "reason", TEXT_MAX),
            ("exclusion_zones", i, "area", AREA_MAX),
        ]
    order += [("release_address", i, "lines", LINE_MAX) for i in range(4)]
    order.append(("release_address", 0, "town", TOWN_MAX))
    return order


def _container(body: dict[str, Any], section: str, index: int) -> dict[str, Any]:
    """The object holding the field, created (with its required members) if missing."""
    if section == "risk_detail":
        holder: dict[str, Any] = body.setdefault("risk_detail", {})
        return holder
    if section == "risk_to_self":
        detail = body.setdefault("risk_detail", {})
        holder = detail.setdefault("risk_to_self", {"concern": True})
        return holder
    if section == "resettlement":
        items = body.setdefault("resettlement", [])
        while len(items) <= index:
            used = {item["pathway"] for item in items}
            free = [p for p in PATHWAYS if p not in used]
            items.append({"pathway": free[0], "status": "IN_PROGRESS"})
        holder = items[index]
        return holder
    if section == "exclusion_zones":
        items = body.setdefault("exclusion_zones", [])
        while len(items) <= index:
            items.append({"area": f"Zone {len(items) + 1}"})
        holder = items[index]
        return holder
    if section == "release_address":
        holder = body.setdefault(
            "release_address",
            {"address_type": "OTHER", "lines": ["x"], "town": "x", "country": "GB"},
        )
        return holder
    raise ValueError(section)


def _set(body: dict[str, Any], slot: tuple[str, int, str, int], text: str) -> None:
    section, index, field, _ = slot
    holder = _container(body, section, index)
    if field == "lines":
        lines = holder["lines"]
        while len(lines) <= index:
            lines.append("x")
        lines[index] = text
    else:
        holder[field] = text


def _grow(base: dict[str, Any], target: int, width: int, seed: int) -> tuple[dict[str, Any], int]:
    """Fill fields in order until the body reaches `target` bytes (or every field is full)."""
    rng = random.Random(seed)
    body = copy.deepcopy(base)
    size = canonical_size(body)
    for slot in _fill_order():
        if size >= target:
            break
        maxlen = slot[3]
        _set(body, slot, _text(rng, width, 1))
        at_one = canonical_size(body)
        if at_one >= target:
            size = at_one
            break
        length = min(maxlen, 1 + (target - at_one) // width)
        _set(body, slot, _text(rng, width, length))
        size = canonical_size(body)
    return body, size


def sized_body(target: int, seed: int = 1) -> SizedBody:
    """A schema-valid release-notice of about `target` bytes (canonical JSON).

    Starts from the first example (about 2 KiB) or, for smaller targets, the
    minimal second example, then fills free-text fields with the narrowest
    characters that can reach the target.
    """
    examples = default_registry().examples(SCHEMA_ID)
    base = examples[0] if canonical_size(examples[0]) <= target else examples[1]
    body, size, width = base, canonical_size(base), 1
    for width in (1, 2, 3, 4):
        body, size = _grow(base, target, width, seed)
        if size >= target:
            break
    default_registry().validate(SCHEMA_ID, body)
    return SizedBody(body=body, target=target, size=size, char_bytes=width, capped=size < target)
