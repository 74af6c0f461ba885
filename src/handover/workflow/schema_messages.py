"""What a schema validation error says to the person who must fix the body.

One finding per jsonschema-rs error: the JSON pointer, the failing keyword and
a hint built from the SCHEMA only (allowed field names, allowed values,
expected formats, limits), never from the submitted value: jsonschema-rs's own
messages quote the instance, so they are not used. The one name taken from the
body is a field that is not allowed, and only when it is shaped like a schema
field name (lower-case snake case, short); anything else is "a member".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema_rs

# How a field name in our schemas looks; a body key of another shape is not repeated.
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Enough names to fix a typo; a schema with more lists the first ones.
_MAX_LISTED = 40
_MAX_SHOWN_CHARS = 80

# Patterns whose meaning is better said in words.
_PATTERN_HINTS = {
    r"^\d{4}-\d{2}-\d{2}$": "a date as YYYY-MM-DD",
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?Z$": "a UTC time as YYYY-MM-DDThh:mm[:ss]Z",
    r"^HC-[0-9A-HJKMNP-TV-Z]{26}$": (
        "a case reference: HC- and 26 characters (mint one with `handover cases new-ref`)"
    ),
    r"^[A-Za-z0-9_-]{22}$": "a packet id (22 characters of base64url)",
}
_FORMAT_HINTS = {
    "date": "a date as YYYY-MM-DD",
    "date-time": "a time as YYYY-MM-DDThh:mm:ssZ (RFC 3339)",
    "time": "a time as hh:mm:ss",
    "email": "an e-mail address",
    "uri": "an absolute URI",
}


def describe(
    error: jsonschema_rs.ValidationError,
    document: Mapping[str, Any],
    documents: Mapping[str, Mapping[str, Any]],
) -> str:
    """The keyword of `error` and what the schema expects instead (no body values)."""
    kind = error.kind
    name = kind.name
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
        return "required field is missing"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties):
        unexpected = [str(key) for key in kind.unexpected]
        shown = [key for key in unexpected if _FIELD_NAME.fullmatch(key)]
        hidden = len(unexpected) - len(shown)
        named = [f"field {', '.join(shown)}"] if shown else []
        named += [f"{hidden} member(s) whose name is not a field name"] if hidden else []
        what = f"{' and '.join(named)} not allowed"
        here = _schema_at(document, list(error.schema_path)[:-1], documents)
        allowed = sorted(here.get("properties", {})) if isinstance(here, dict) else []
        return f"{name}: {what} here{_listed('; allowed fields', allowed)}"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Enum):
        values = [str(v) for v in kind.options]
        return f"{name}: must be one of{_listed('', values)}"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Format):
        hint = _FORMAT_HINTS.get(kind.format, f"format {kind.format}")
        return f"expected {hint}"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Pattern):
        pattern_hint = _PATTERN_HINTS.get(kind.pattern)
        if pattern_hint is None:
            return f"{name}: must match {kind.pattern[:_MAX_SHOWN_CHARS]}"
        return f"expected {pattern_hint}"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Type):
        return f"{name}: expected {' or '.join(str(t) for t in kind.types)}"
    if isinstance(kind, jsonschema_rs.ValidationErrorKind.Constant):
        expected = kind.expected_value
        if isinstance(expected, str):
            return f"{name}: must be {expected[:_MAX_SHOWN_CHARS]}"
        return name
    limits = {
        "maxLength": "at most {} characters",
        "minLength": "at least {} characters",
        "maximum": "at most {}",
        "minimum": "at least {}",
        "maxItems": "at most {} items",
        "minItems": "at least {} items",
    }
    limit = getattr(kind, "limit", None)
    if name in limits and isinstance(limit, int | float):
        return f"{name}: {limits[name].format(limit)}"
    return str(name)


def _listed(label: str, names: Sequence[str]) -> str:
    if not names:
        return ""
    more = ", ..." if len(names) > _MAX_LISTED else ""
    return f"{label} {', '.join(names[:_MAX_LISTED])}{more}"


def _schema_at(
    document: Mapping[str, Any], path: list[str | int], documents: Mapping[str, Mapping[str, Any]]
) -> object:
    """The subschema at `path` (an error's schema path), following `$ref` tokens."""
    node: object = document
    root: Mapping[str, Any] = document
    for step in path:
        if step == "$ref" and isinstance(node, dict) and isinstance(node.get("$ref"), str):
            target, _, fragment = node["$ref"].partition("#")
            if target:
                found = documents.get(target)
                if found is None:
                    return None
                root = found
            node = root
            for part in fragment.strip("/").split("/") if fragment.strip("/") else []:
                part = part.replace("~1", "/").replace("~0", "~")
                node = node.get(part) if isinstance(node, dict) else None
            continue
        if isinstance(node, dict):
            node = node.get(str(step))
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            node = node[step]
        else:
            return None
    return node
