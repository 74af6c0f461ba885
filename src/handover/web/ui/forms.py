"""Forms generated from packet schemas, and back.

Each input is named by the JSON Pointer of its field in the body
(`/case_ref`, `/quality/as_of`, `/needs/0/pathway`). A posted form becomes a
*draft* (the nested values as typed, empty strings kept, so array items stay
where they are while someone edits) and the draft becomes a *body* by leaving
out everything empty. Arrays grow and shrink through submit buttons named
`_action` (`add:/needs`, `remove:/needs/1`), so no script is needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_FIELDS = 2000  # inputs read from one posted form
MAX_INDEX = 100  # array items (every schema's maxItems is at most 100)
_ERROR = re.compile(r"(/[^:;]*|\(root\)): (\w+)")


@dataclass
class Field:
    pointer: str
    label: str
    kind: str  # object | array | enum | boolean | integer | string | text | date
    required: bool
    hint: str
    sensitivity: str | None = None
    options: list[str] = field(default_factory=list)
    value: str = ""
    children: list[Field] = field(default_factory=list)
    error: str | None = None
    max_items: int = MAX_INDEX

    @property
    def id(self) -> str:
        return "f" + re.sub(r"[^A-Za-z0-9]", "-", self.pointer)


def title_of(name: str, node: Mapping[str, Any]) -> str:
    title = node.get("title")
    if isinstance(title, str):
        return title
    return name.replace("_", " ").capitalize() if name else "Item"


def resolve(doc: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    """`node` with a local `$ref` merged in (its own keywords win)."""
    merged = dict(node)
    seen = 0
    while "$ref" in merged and seen < 10:
        ref = merged.pop("$ref")
        target: Any = doc
        for part in str(ref).removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        merged = {**target, **merged}
        seen += 1
    return merged


def expected(node: Mapping[str, Any]) -> str:
    """What a field expects, in words (shown as its hint and in its error)."""
    parts: list[str] = []
    kind = node.get("type")
    if "enum" in node:
        parts.append("one of: " + ", ".join(str(v) for v in node["enum"]))
    elif node.get("format") == "date":
        parts.append("a date, YYYY-MM-DD")
    elif node.get("format") == "date-time":
        parts.append("a date and time, YYYY-MM-DDThh:mm:ssZ")
    elif kind == "boolean":
        parts.append("yes or no")
    elif kind == "integer":
        low, high = node.get("minimum"), node.get("maximum")
        span = f" from {low} to {high}" if low is not None and high is not None else ""
        parts.append(f"a whole number{span}")
    elif kind == "string":
        low, high = node.get("minLength"), node.get("maxLength")
        if high is not None:
            parts.append(f"text of {low or 0} to {high} characters")
        if "pattern" in node and node.get("format") is None:
            parts.append(f"matching {node['pattern']}")
    elif kind == "array":
        low, high = node.get("minItems", 0), node.get("maxItems")
        parts.append(f"{low} to {high} items" if high else f"at least {low} items")
    return "; ".join(parts)


def _kind(node: Mapping[str, Any]) -> str:
    if "enum" in node:
        return "enum"
    kind = node.get("type")
    if kind in ("object", "array", "boolean", "integer"):
        return str(kind)
    if node.get("format") == "date":
        return "date"
    if (node.get("maxLength") or 0) > 300:
        return "text"
    return "string"


def build(
    doc: Mapping[str, Any],
    draft: object,
    *,
    node: Mapping[str, Any] | None = None,
    pointer: str = "",
    name: str = "",
    required: bool = True,
) -> Field:
    """The field tree of schema `doc` (or of its `node` at `pointer`), holding `draft`'s values."""
    node = resolve(doc, doc if node is None else node)
    kind = _kind(node)
    sensitivity = node.get("x-sensitivity")
    f = Field(
        pointer=pointer,
        label=title_of(name, node),
        kind=kind,
        required=required,
        hint=(str(node.get("description", "")) + " " if node.get("description") else "")
        + (f"({expected(node)})" if expected(node) else ""),
        sensitivity=sensitivity if isinstance(sensitivity, str) else None,
    )
    if kind == "object":
        needed = set(node.get("required", []))
        values = draft if isinstance(draft, dict) else {}
        for child, sub in node.get("properties", {}).items():
            f.children.append(
                build(
                    doc,
                    values.get(child),
                    node=sub,
                    pointer=f"{pointer}/{child}",
                    name=child,
                    required=child in needed,
                )
            )
    elif kind == "array":
        items = draft if isinstance(draft, list) else []
        if draft is None and required:
            items = [None] * max(1, int(node.get("minItems", 1)))
        f.max_items = min(int(node.get("maxItems", MAX_INDEX)), MAX_INDEX)
        item_node = node.get("items", {})
        for i, item in enumerate(items[: f.max_items]):
            child = build(
                doc, item, node=item_node, pointer=f"{pointer}/{i}", name="", required=True
            )
            child.label = f"{f.label}, item {i + 1}"
            f.children.append(child)
    else:
        f.options = [str(v) for v in node.get("enum", [])]
        if isinstance(draft, bool):
            f.value = "true" if draft else "false"
        elif draft is not None:
            f.value = str(draft)
    return f


def walk(f: Field) -> Iterable[Field]:
    yield f
    for child in f.children:
        yield from walk(child)


def node_at(doc: Mapping[str, Any], pointer: str) -> dict[str, Any] | None:
    """The schema node of the field at `pointer` (array indices step into `items`)."""
    node = resolve(doc, doc)
    for part in pointer.split("/")[1:]:
        if node.get("type") == "array" and part.isdigit():
            node = resolve(doc, node.get("items", {}))
        elif part in node.get("properties", {}):
            node = resolve(doc, node["properties"][part])
        else:
            return None
    return node


# --- posted form -> draft -> body --------------------------------------------------------


def draft_of(doc: Mapping[str, Any], form: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The nested values of the posted inputs named by pointers (unknown names ignored)."""
    draft: dict[str, Any] = {}
    for count, (name, value) in enumerate(form):
        if count > MAX_FIELDS:
            break
        if not name.startswith("/") or node_at(doc, name) is None:
            continue
        parts = name.split("/")[1:]
        if any(p.isdigit() and int(p) >= MAX_INDEX for p in parts):
            continue
        _put(draft, parts, value)
    return draft


def _put(target: Any, parts: list[str], value: str) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(target, list):
        index = int(head)
        while len(target) <= index:
            target.append(None)
        if not rest:
            target[index] = value
            return
        if not isinstance(target[index], dict | list):
            target[index] = [] if rest[0].isdigit() else {}
        _put(target[index], rest, value)
        return
    if not rest:
        target[head] = value
        return
    if not isinstance(target.get(head), dict | list):
        target[head] = [] if rest[0].isdigit() else {}
    _put(target[head], rest, value)


def body_of(doc: Mapping[str, Any], draft: object, pointer: str = "") -> Any:
    """The body a draft stands for: typed values, everything empty left out (None)."""
    node = node_at(doc, pointer) or {}
    if isinstance(draft, dict):
        out = {}
        for key, value in draft.items():
            typed = body_of(doc, value, f"{pointer}/{key}")
            if typed is not None:
                out[key] = typed
        return out or None
    if isinstance(draft, list):
        items = [body_of(doc, v, f"{pointer}/{i}") for i, v in enumerate(draft)]
        kept = [v for v in items if v is not None]
        return kept or None
    if not isinstance(draft, str) or draft.strip() == "":
        return None
    value = draft.strip()
    if node.get("type") == "boolean":
        return {"true": True, "false": False}.get(value, value)
    if node.get("type") == "integer":
        try:
            return int(value)
        except ValueError:
            return value
    return value


def change(draft: dict[str, Any], action: str) -> None:
    """Apply `add:/pointer` (one more item) or `remove:/pointer/i` to the draft."""
    verb, _, pointer = action.partition(":")
    parts = pointer.split("/")[1:]
    if not parts or any(p.isdigit() and int(p) >= MAX_INDEX for p in parts):
        return
    parent: Any = draft
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        if not isinstance(parent, dict | list):
            return
    last = parts[-1]
    if verb == "add" and isinstance(parent, dict):
        items = parent.get(last)
        if not isinstance(items, list):
            items = parent[last] = []
        if len(items) < MAX_INDEX:
            items.append(None)
    elif verb == "remove" and isinstance(parent, list) and last.isdigit():
        del parent[int(last) : int(last) + 1]


def field_errors(doc: Mapping[str, Any], message: str) -> dict[str, str]:
    """Pointer -> what is expected there, from a `schema_invalid` message (which
    names pointers and keywords, never values)."""
    errors: dict[str, str] = {}
    for pointer, keyword in _ERROR.findall(message):
        where = "" if pointer == "(root)" else pointer
        node = node_at(doc, where) or {}
        if keyword == "Required":
            errors.setdefault(where, "This field is required" + _dot(expected(node)))
        else:
            errors.setdefault(where, f"Not valid ({keyword})" + _dot(expected(node)))
    return errors


def _dot(text: str) -> str:
    return f": expected {text}." if text else "."


def attach(f: Field, errors: Mapping[str, str]) -> list[Field]:
    """Put each error on its field (or the nearest enclosing one); the fields with errors."""
    by_pointer = {x.pointer: x for x in walk(f)}
    marked: list[Field] = []
    for pointer, message in errors.items():
        where = pointer
        while where not in by_pointer and "/" in where:
            where = where.rsplit("/", 1)[0]
        target = by_pointer.get(where, f)
        target.error = message if target.error is None else f"{target.error} {message}"
        if target not in marked:
            marked.append(target)
    return marked


def flatten(
    body: Any, pointer: str = "", doc: Mapping[str, Any] | None = None
) -> list[tuple[str, Any]]:
    """(pointer, scalar) for every leaf of a body; with the schema `doc`, in the
    order its properties are declared (a form's order), else in the body's."""
    if isinstance(body, dict):
        keys = list(body)
        if doc is not None:
            declared = list((node_at(doc, pointer) or {}).get("properties", {}))
            keys.sort(key=lambda k: declared.index(k) if k in declared else len(declared))
        return [pair for k in keys for pair in flatten(body[k], f"{pointer}/{k}", doc)]
    if isinstance(body, list):
        return [pair for i, v in enumerate(body) for pair in flatten(v, f"{pointer}/{i}", doc)]
    return [(pointer, body)]


def label_of(doc: Mapping[str, Any], pointer: str) -> str:
    """A readable label for a pointer: the titles of its parts."""
    node = resolve(doc, doc)
    labels = []
    for part in pointer.split("/")[1:]:
        if node.get("type") == "array" and part.isdigit():
            node = resolve(doc, node.get("items", {}))
            labels.append(f"item {int(part) + 1}")
        else:
            node = resolve(doc, node.get("properties", {}).get(part, {}))
            labels.append(title_of(part, node))
    return " › ".join(labels)


def sensitivity_at(doc: Mapping[str, Any], pointer: str) -> str | None:
    """The most specific x-sensitivity on the way to `pointer`."""
    node = resolve(doc, doc)
    level = None
    for part in pointer.split("/")[1:]:
        if node.get("type") == "array" and part.isdigit():
            node = resolve(doc, node.get("items", {}))
        else:
            node = resolve(doc, node.get("properties", {}).get(part, {}))
        if isinstance(node.get("x-sensitivity"), str):
            level = node["x-sensitivity"]
    return level
