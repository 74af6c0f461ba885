"""Packet body schemas: load once, check, compile once, validate many times.

The JSON Schema files in ``schemas/`` (draft 2020-12) are the contract between
nodes. A schema id is ``handover/<name>/<n>``: the suffix of the document's
``$id`` after its last ``/handover/``; the file is ``<name>.v<n>.json``.

Two vendor keywords carry data-protection meaning (docs/domain.md):

- ``x-sensitivity`` on a property schema: ``identifier``, ``personal``,
  ``sensitive`` or ``special-category``. Checked and indexed here; nothing
  reads it at run time yet (logs never carry values whatever the level).
- ``x-field-group`` on a top-level property: the row of the minimisation
  matrix the property belongs to. Checked and indexed here; the policy file
  (docs/policy.md) names fields directly.

Called by the node on submit (before the sharing policy) and on receive
(step 9 of docs/protocol.md section 3). Errors name JSON pointers and the failing
keyword only, never a value from the body: jsonschema-rs messages quote the
instance, so they are not used.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema_rs

from handover.protocol.errors import ConfigError, SchemaInvalid, UnknownSchema
from handover.workflow.schema_messages import describe

SCHEMA_ID_RE: re.Pattern[str] = re.compile(r"^handover/[a-z0-9-]+/[1-9][0-9]*$")

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
SENSITIVITY_LEVELS = frozenset({"identifier", "personal", "sensitive", "special-category"})
FIELD_GROUPS = frozenset(
    {
        "identifiers",
        "police_id",
        "release_dates",
        "address_zones",
        "licence_conditions",
        "risk_level",
        "risk_narrative",
        "flags",
        "progress",
        "family_contact",
    }
)

# Enough for a caseworker to fix a body; a hostile body cannot make us build a huge message.
_MAX_REPORTED_ERRORS = 20
_FILE_NAME_RE = re.compile(r"^(?P<name>[a-z0-9-]+)\.v(?P<version>[1-9][0-9]*)\.json$")
# Subschemas that describe the body itself (not a condition on it): walked for markers.
_IN_PLACE_APPLICATORS = ("allOf", "anyOf", "oneOf", "then", "else")


def schema_dir() -> Path:
    """Where the schema files are.

    The wheel ships them inside the package (``handover/schemas/``); an
    editable install reads the repository's top-level ``schemas/``.
    """
    packaged = resources.files("handover") / "schemas"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "schemas"


@dataclass(frozen=True, slots=True)
class _Compiled:
    document: dict[str, Any]
    validator: jsonschema_rs.Validator
    sensitive_fields: dict[str, str]
    field_groups: dict[str, str]


class SchemaRegistry:
    """Known packet schemas, each compiled to one validator at load time."""

    def __init__(self, compiled: dict[str, _Compiled], known_names: frozenset[str]) -> None:
        # Built by `load`; callers never construct a registry by hand.
        self._compiled = compiled
        self._known_names = known_names
        self._by_url: dict[str, dict[str, Any]] = {}
        self._marked: dict[tuple[str, str, str], frozenset[str]] = {}

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaRegistry:
        """Read, check and compile every ``*.json`` schema in `directory`.

        Args:
            directory: defaults to `schema_dir()`.

        Raises:
            ConfigError: a file is unreadable, not a 2020-12 schema, fails the
                meta-schema, has an ``$id`` that does not match its file name,
                duplicates another id, uses an unknown marker value, or does
                not compile.
        """
        directory = schema_dir() if directory is None else directory
        paths = sorted(directory.glob("*.json"))
        if not paths:
            raise ConfigError(f"no schema files (*.json) in {directory}: is the package complete?")

        documents: dict[str, dict[str, Any]] = {}
        for path in paths:
            document = _read(path)
            schema_id = _schema_id(path, document)
            if schema_id in documents:
                raise ConfigError(f"{path.name}: schema id {schema_id} is defined twice")
            _check_markers(path, document)
            documents[schema_id] = document

        # One registry of every document, so a schema may $ref another by its $id
        # (rectification-notice's corrected_body); offline: never fetch over the network.
        shared = jsonschema_rs.Registry([(doc["$id"], doc) for doc in documents.values()])
        compiled: dict[str, _Compiled] = {}
        for schema_id, document in documents.items():
            try:
                validator = jsonschema_rs.Draft202012Validator(
                    document, registry=shared, validate_formats=True, offline=True
                )
            except (ValueError, jsonschema_rs.ReferencingError) as exc:
                raise ConfigError(f"schema {schema_id} does not compile: {exc}") from exc
            compiled[schema_id] = _Compiled(
                document=document,
                validator=validator,
                sensitive_fields=_sensitive_fields(document),
                field_groups=_field_groups(document),
            )
        known_names = frozenset(
            itertools.chain.from_iterable(_property_names(doc) for doc in documents.values())
        )
        registry = cls(compiled, known_names)
        registry._by_url = {doc["$id"]: doc for doc in documents.values()}
        return registry

    def ids(self) -> list[str]:
        """Every known schema id, sorted."""
        return sorted(self._compiled)

    def document(self, schema_id: str) -> dict[str, Any]:
        """A copy of the schema document.

        Raises:
            UnknownSchema: `schema_id` is not known.
        """
        return copy.deepcopy(self._get(schema_id).document)

    def fields_marked(self, schema_id: str, marker: str, value: str) -> frozenset[str]:
        """Top-level properties whose subschema says `marker: value` (``x-source: judicial``).

        Read on every submission, so answered from a cache instead of a copy
        of the document.

        Raises:
            UnknownSchema: `schema_id` is not known.
        """
        key = (schema_id, marker, value)
        found = self._marked.get(key)
        if found is None:
            properties = self._get(schema_id).document.get("properties", {})
            found = frozenset(
                name
                for name, sub in properties.items()
                if isinstance(sub, dict) and sub.get(marker) == value
            )
            self._marked[key] = found
        return found

    def examples(self, schema_id: str) -> list[dict[str, Any]]:
        """Copies of the schema's example bodies (fictional people).

        Raises:
            UnknownSchema: `schema_id` is not known.
        """
        examples: list[dict[str, Any]] = self._get(schema_id).document.get("examples", [])
        return copy.deepcopy(examples)

    def validate(self, schema_id: str, body: object) -> None:
        """Check `body` against the compiled schema `schema_id`.

        Raises:
            UnknownSchema: `schema_id` is not known.
            SchemaInvalid: the body does not fit; the message and `paths` name
                JSON pointers and failing keywords, never a value.
        """
        validator = self._get(schema_id).validator
        try:
            if validator.is_valid(body):
                return
            errors = list(itertools.islice(validator.iter_errors(body), _MAX_REPORTED_ERRORS + 1))
        except ValueError:
            # A Python value with no JSON form (bytes, set, non-string key, too deep). `from None`:
            # the foreign message may describe the value, and the traceback travels with us.
            raise SchemaInvalid(
                f"body for {schema_id} cannot be checked: it holds a value with no JSON form "
                "or nests too deeply; send objects, arrays, strings, integers and booleans only",
                [""],
            ) from None
        document = self._get(schema_id).document
        findings = [self._locate(error, document) for error in errors[:_MAX_REPORTED_ERRORS]]
        paths = list(dict.fromkeys(pointer for pointer, _ in findings))
        # A date that fails both `pattern` and `format` says "YYYY-MM-DD" once.
        said = dict.fromkeys(f"{pointer or '(root)'}: {hint}" for pointer, hint in findings)
        shown = "; ".join(said)
        more = " (and more)" if len(errors) > _MAX_REPORTED_ERRORS else ""
        raise SchemaInvalid(f"body does not fit schema {schema_id}: {shown}{more}", paths)

    def sensitive_fields(self, schema_id: str) -> dict[str, str]:
        """Dotted field path (``*`` for array items) -> ``x-sensitivity`` level.

        Raises:
            UnknownSchema: `schema_id` is not known.
        """
        return dict(self._get(schema_id).sensitive_fields)

    def field_groups(self, schema_id: str) -> dict[str, str]:
        """Top-level property -> ``x-field-group`` (a minimisation matrix row).

        Raises:
            UnknownSchema: `schema_id` is not known.
        """
        return dict(self._get(schema_id).field_groups)

    def _get(self, schema_id: str) -> _Compiled:
        try:
            return self._compiled[schema_id]
        except (KeyError, TypeError):
            shown = schema_id[:128] if isinstance(schema_id, str) else type(schema_id).__name__
            raise UnknownSchema(
                f"unknown schema id {shown!r}: this node knows {', '.join(self.ids())}"
            ) from None

    def _locate(
        self, error: jsonschema_rs.ValidationError, document: dict[str, Any]
    ) -> tuple[str, str]:
        """JSON pointer and what is wrong there, built from schema-known names only."""
        parts: list[str | int] = list(error.instance_path)
        kind = error.kind
        if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
            # The missing name comes from the schema's `required`, not from the body.
            parts.append(kind.property)
        # Belt and braces: every object is closed, so a path can only hold declared
        # names and indices; anything else would be a key chosen by the sender.
        safe = [p if isinstance(p, int) or p in self._known_names else "*" for p in parts]
        return _pointer(safe), describe(error, document, self._by_url)


@functools.lru_cache(maxsize=1)
def default_registry() -> SchemaRegistry:
    """The registry of `schema_dir()`, loaded and compiled once per process."""
    return SchemaRegistry.load()


# ----------------------------------------------------------------------------- loading helpers


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path.name}: cannot read schema file: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path.name}: a schema file must hold a JSON object")
    if document.get("$schema") != DRAFT_2020_12:
        raise ConfigError(f"{path.name}: $schema must be {DRAFT_2020_12}")
    try:
        jsonschema_rs.meta.validate(document)
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        raise ConfigError(f"{path.name}: not a valid JSON Schema 2020-12 document: {exc}") from exc
    return document


def _schema_id(path: Path, document: dict[str, Any]) -> str:
    uri = document.get("$id")
    if not isinstance(uri, str) or "/handover/" not in uri:
        raise ConfigError(f"{path.name}: $id must be a URI ending in handover/<name>/<n>")
    schema_id = "handover/" + uri.rpartition("/handover/")[2]
    if not SCHEMA_ID_RE.match(schema_id):
        raise ConfigError(f"{path.name}: $id {uri} does not end in handover/<name>/<n>")
    match = _FILE_NAME_RE.match(path.name)
    _, name, version = schema_id.split("/")
    if not match or (match["name"], match["version"]) != (name, version):
        raise ConfigError(f"{path.name}: schema {schema_id} belongs in {name}.v{version}.json")
    return schema_id


def _check_markers(path: Path, document: dict[str, Any]) -> None:
    top_level = document.get("properties", {})
    for node in _subschemas(document):
        level = node.get("x-sensitivity")
        if level is not None and level not in SENSITIVITY_LEVELS:
            raise ConfigError(f"{path.name}: unknown x-sensitivity {level!r}")
        group = node.get("x-field-group")
        if group is None:
            continue
        if group not in FIELD_GROUPS:
            raise ConfigError(f"{path.name}: unknown x-field-group {group!r}")
        if not any(node is sub for sub in top_level.values()):
            raise ConfigError(
                f"{path.name}: x-field-group {group!r} is not on a top-level property"
            )


def _subschemas(node: object) -> Iterator[dict[str, Any]]:
    """Every schema object inside `node` (examples and enum/const values excluded)."""
    if isinstance(node, list):
        for item in node:
            yield from _subschemas(item)
        return
    if not isinstance(node, dict):
        return
    yield node
    for key, value in node.items():
        if key in ("examples", "enum", "const", "default"):
            continue
        if key in ("properties", "$defs", "patternProperties", "dependentSchemas"):
            for sub in value.values():
                yield from _subschemas(sub)
        elif isinstance(value, dict | list):
            yield from _subschemas(value)


def _property_names(document: dict[str, Any]) -> Iterator[str]:
    for node in _subschemas(document):
        yield from node.get("properties", {})


def _field_groups(document: dict[str, Any]) -> dict[str, str]:
    return {
        name: sub["x-field-group"]
        for name, sub in document.get("properties", {}).items()
        if "x-field-group" in sub
    }


def _sensitive_fields(document: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    _collect_sensitivity(document, document, (), found, frozenset())
    return found


def _collect_sensitivity(
    node: object,
    document: dict[str, Any],
    path: tuple[str, ...],
    found: dict[str, str],
    followed: frozenset[str],
) -> None:
    if not isinstance(node, dict):
        return
    level = node.get("x-sensitivity")
    if isinstance(level, str) and path:
        # The property's own marker wins over one on a $defs entry it refers to.
        found.setdefault(".".join(path), level)
    ref = node.get("$ref")
    # Local references only: a $ref to another document (corrected_body) is marked on
    # its own property, and the target schema's markers apply through that schema.
    if isinstance(ref, str) and ref.startswith("#/") and ref not in followed:
        _collect_sensitivity(_resolve(document, ref), document, path, found, followed | {ref})
    for name, sub in node.get("properties", {}).items():
        _collect_sensitivity(sub, document, (*path, name), found, followed)
    _collect_sensitivity(node.get("items"), document, (*path, "*"), found, followed)
    for keyword in _IN_PLACE_APPLICATORS:
        value = node.get(keyword)
        for sub in value if isinstance(value, list) else [value]:
            _collect_sensitivity(sub, document, path, found, followed)


def _resolve(document: dict[str, Any], ref: str) -> object:
    node: object = document
    for token in _unescape(ref[2:].split("/")):
        node = node.get(token) if isinstance(node, dict) else None
    return node


def _unescape(tokens: Iterable[str]) -> Iterator[str]:
    for token in tokens:
        yield token.replace("~1", "/").replace("~0", "~")


def _pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 JSON pointer; the whole body is the empty pointer."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
