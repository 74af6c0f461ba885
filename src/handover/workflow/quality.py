"""Data quality (LED Art 7(2)) beyond what JSON Schema can say:

- `quality.groups` gives the basis per field group (`x-field-group`) where it
  differs from the packet's `quality.basis`; a group labelled FACT names its
  own `source_system`;
- a field marked `x-basis: ASSESSMENT` in its schema (the risk narrative) is a
  professional assessment: it cannot travel labelled FACT;
- fields marked `x-source: judicial` (licence conditions) come from judicial
  decisions (Art 18): :func:`judicial_fields` names them for the audit entries.

Schema-level checks stay additive (optional members), so older bodies and the
test vectors stay valid; these rules are applied when a node sends.
"""

from __future__ import annotations

from typing import Any

from handover.protocol.errors import UnknownSchema
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.schemas import SchemaRegistry


def _refuse(message: str, path: str) -> RequestRefused:
    return RequestRefused(ErrorCode.SCHEMA_INVALID, message, [path])


def check_quality(registry: SchemaRegistry, schema_id: str, body: dict[str, Any]) -> None:
    """Raises RequestRefused `schema_invalid` naming the quality path that is wrong."""
    try:
        assessments = registry.fields_marked(schema_id, "x-basis", "ASSESSMENT")
        groups_of = registry.field_groups(schema_id)
    except UnknownSchema:
        return
    quality = body.get("quality")
    if not isinstance(quality, dict):
        return
    declared: dict[str, str] = {}
    for index, entry in enumerate(quality.get("groups") or []):
        where = f"/quality/groups/{index}"
        group, basis = entry.get("group"), entry.get("basis")
        if group not in set(groups_of.values()):
            raise _refuse(f"{where}: {schema_id} has no field group {group}", where)
        if group in declared:
            raise _refuse(f"{where}: field group {group} is labelled twice", where)
        if basis == "FACT" and not entry.get("source_system"):
            raise _refuse(
                f"{where}: FACT only where a source system is named: give its source_system",
                where,
            )
        declared[str(group)] = str(basis)
    for name in sorted(assessments):
        if name not in body:
            continue
        group = groups_of.get(name, name)
        if declared.get(group, quality.get("basis")) == "FACT":
            raise _refuse(
                f"/quality: {name} ({group}) is a professional assessment and cannot be"
                f' labelled FACT: add {{"group": "{group}", "basis": "ASSESSMENT"}}'
                " to quality.groups",
                "/quality/groups",
            )


def judicial_fields(registry: SchemaRegistry, schema_id: str, body: dict[str, Any]) -> list[str]:
    """The fields of `body` that come from judicial decisions (`x-source: judicial`)."""
    try:
        judicial = registry.fields_marked(schema_id, "x-source", "judicial")
    except UnknownSchema:
        return []
    return sorted(name for name in judicial if name in body)
