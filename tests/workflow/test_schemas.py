"""Tests for handover.workflow.schemas and the schema files in schemas/."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from handover.protocol.errors import ConfigError, SchemaInvalid, UnknownSchema
from handover.workflow import schemas as schemas_module
from handover.workflow.schemas import (
    FIELD_GROUPS,
    SCHEMA_ID_RE,
    SENSITIVITY_LEVELS,
    SchemaRegistry,
    default_registry,
    schema_dir,
)

NAMES = [
    "release-notice",
    "condition-update",
    "care-acknowledgement",
    "responsibility-agreement",
    "consent-record",
    "progress-summary",
    "risk-of-harm-alert",
    "supervision-end",
    "rectification-notice",
    "case-conference",
    "rectification-request",
]
IDS = [f"handover/{name}/1" for name in NAMES]
BASE_URI = "https://schemas.handover.example/"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
SECRET = "ZZ-SECRET-VALUE-42"
SECRET_FLOAT = 4242.4242
MAX_SAFE_INT = 2**53 - 1
CASE_REF_PATTERN = "^HC-[0-9A-HJKMNP-TV-Z]{26}$"


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load()


def documents() -> Iterator[tuple[str, Path, dict[str, Any]]]:
    for name in NAMES:
        path = schema_dir() / f"{name}.v1.json"
        yield name, path, json.loads(path.read_text(encoding="utf-8"))


def example_cases() -> list[tuple[str, int]]:
    out = []
    for name, _, doc in documents():
        out += [(f"handover/{name}/1", i) for i in range(len(doc.get("examples", [])))]
    return out


def assert_no_secret(exc: SchemaInvalid, *secrets: str) -> None:
    rendered = [str(exc), repr(exc), repr(exc.args), *exc.paths]
    for secret in (SECRET, str(SECRET_FLOAT), *secrets):
        for text in rendered:
            assert secret not in text


def reject(registry: SchemaRegistry, schema_id: str, body: object) -> SchemaInvalid:
    with pytest.raises(SchemaInvalid) as info:
        registry.validate(schema_id, body)
    assert schema_id in str(info.value)
    assert info.value.paths
    assert_no_secret(info.value)
    return info.value


def first_example(registry: SchemaRegistry, schema_id: str) -> dict[str, Any]:
    return registry.examples(schema_id)[0]


def set_at(body: dict[str, Any], pointer: str, value: object) -> None:
    *parents, last = pointer.strip("/").split("/")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


# ----------------------------------------------------------------------------- schema walking


def walk(node: object, context: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """Every subschema with the keywords that lead to it (examples, enum, const excluded)."""
    if isinstance(node, list):
        for item in node:
            yield from walk(item, context)
        return
    if not isinstance(node, dict):
        return
    yield context, node
    for key, value in node.items():
        if key in ("examples", "enum", "const", "default", "required"):
            continue
        if key in ("properties", "$defs", "patternProperties", "dependentSchemas"):
            for sub in value.values():
                yield from walk(sub, (*context, key))
        elif isinstance(value, dict | list):
            yield from walk(value, (*context, key))


def types_of(node: dict) -> set[str]:
    declared = node.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


def resolve(doc: dict, node: dict) -> dict:
    while "$ref" in node and node["$ref"].startswith("#/"):
        target: Any = doc
        for token in node["$ref"][2:].split("/"):
            target = target[token]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def prop(doc: dict, dotted: str) -> dict:
    """The (resolved) schema of a property path; `*` steps into array items."""
    node = doc
    for part in dotted.split("."):
        node = resolve(doc, node)
        node = node["items"] if part == "*" else node["properties"][part]
    return resolve(doc, node)


UNBOUNDED = re.compile(r"[+*]|\{\d+,\}")


# ----------------------------------------------------------------------------- the files


def test_registry_knows_exactly_the_eleven_packet_types(registry: SchemaRegistry) -> None:
    assert registry.ids() == sorted(IDS)
    assert all(SCHEMA_ID_RE.match(schema_id) for schema_id in registry.ids())


def test_schema_dir_is_the_repository_copy_in_an_editable_install() -> None:
    assert (schema_dir() / "release-notice.v1.json").is_file()


@pytest.mark.parametrize(("name", "path", "doc"), list(documents()), ids=NAMES)
def test_schema_file_shape(name: str, path: Path, doc: dict[str, Any]) -> None:
    assert path.name == f"{name}.v1.json"
    assert doc["$schema"] == DRAFT
    assert doc["$id"] == f"{BASE_URI}handover/{name}/1"
    assert doc["$id"].endswith(f"handover/{name}/1")
    assert jsonschema_rs.meta.is_valid(doc)
    assert doc["type"] == "object"
    assert isinstance(doc["examples"], list)
    assert len(doc["examples"]) >= 2
    assert {"case_ref", "quality"} <= set(doc["required"])
    case_ref = prop(doc, "case_ref")
    assert case_ref["pattern"] == CASE_REF_PATTERN
    assert "$comment" in case_ref
    assert "never a prison number" in case_ref["$comment"]
    quality = prop(doc, "quality")
    assert set(quality["required"]) == {"as_of", "source_system", "basis"}
    assert set(prop(doc, "quality.basis")["enum"]) == {"FACT", "ASSESSMENT"}
    assert prop(doc, "quality.source_system")["maxLength"] == 64
    assert prop(doc, "quality.as_of")["format"] == "date"


@pytest.mark.parametrize(("name", "path", "doc"), list(documents()), ids=NAMES)
def test_every_object_schema_is_closed_and_wire_safe(
    name: str, path: Path, doc: dict[str, Any]
) -> None:
    objects = 0
    for context, node in walk(doc):
        kinds = types_of(node)
        assert not kinds & {"number", "null"}, (name, context)
        if "object" in kinds:
            objects += 1
            assert node.get("additionalProperties") is False, (name, context)
        elif "properties" in node:
            # Only conditions (if / then / else / not) may name properties without being
            # an object schema of their own; they apply to an already closed object.
            assert {"if", "then", "else", "not"} & set(context), (name, context)
        if "integer" in kinds:
            assert -MAX_SAFE_INT <= node["minimum"] <= node["maximum"] <= MAX_SAFE_INT
        if "string" in kinds:
            bounded_pattern = "pattern" in node and not UNBOUNDED.search(node["pattern"])
            assert "maxLength" in node or "enum" in node or bounded_pattern, (name, context)
        if "array" in kinds:
            assert "maxItems" in node, (name, context)
        assert "null" not in node.get("enum", []), (name, context)
        assert None not in node.get("enum", []), (name, context)
    assert objects >= 2  # the body and at least its quality object


@pytest.mark.parametrize("schema_id", IDS)
def test_markers_are_known_values(registry: SchemaRegistry, schema_id: str) -> None:
    sensitive = registry.sensitive_fields(schema_id)
    assert sensitive, "every packet type carries something personal"
    assert set(sensitive.values()) <= SENSITIVITY_LEVELS
    groups = registry.field_groups(schema_id)
    assert set(groups.values()) <= FIELD_GROUPS
    assert set(groups) <= set(registry.document(schema_id)["properties"])


def test_release_notice_field_groups_cover_the_matrix_rows(registry: SchemaRegistry) -> None:
    groups = registry.field_groups("handover/release-notice/1")
    assert groups == {
        "identifiers": "identifiers",
        "police_national_id": "police_id",
        "expected_release_date": "release_dates",
        "confirmed_release_date": "release_dates",
        "release_date_type": "release_dates",
        "release_reason": "release_dates",
        "sentence_dates": "release_dates",
        "release_address": "address_zones",
        "exclusion_zones": "address_zones",
        "risk": "risk_level",
        "risk_detail": "risk_narrative",
        "flags": "flags",
        "family_contact": "family_contact",
    }
    assert registry.field_groups("handover/condition-update/1") == {
        "conditions": "licence_conditions"
    }
    assert set(registry.field_groups("handover/progress-summary/1").values()) == {"progress"}


def test_sensitive_markers_where_the_domain_asks(registry: SchemaRegistry) -> None:
    release = registry.sensitive_fields("handover/release-notice/1")
    assert release["identifiers.prison_number"] == "identifier"
    assert release["identifiers.probation_case_ref"] == "identifier"
    assert release["police_national_id"] == "identifier"
    assert release["release_address"] == "sensitive"
    assert release["exclusion_zones"] == "sensitive"
    assert release["risk_detail.narrative"] == "special-category"
    assert release["risk_detail.risk_to_self"] == "special-category"
    assert release["flags.terrorism_act"] == "sensitive"
    assert release["family_contact.*.name"] == "personal"
    assert "case_ref" not in release  # pseudonymous, shared with every party
    progress = registry.sensitive_fields("handover/progress-summary/1")
    assert progress["dimensions.radicalisation"] == "special-category"
    assert progress["dimensions.mental_health"] == "special-category"
    alert = registry.sensitive_fields("handover/risk-of-harm-alert/1")
    assert alert["account"] == "special-category"


# ----------------------------------------------------------------------------- enumerations

ENUMS = [
    ("release-notice", "phase", {"PLANNED", "CONFIRMED", "CANCELLED"}),
    ("release-notice", "release_date_type", {"CRD", "ARD", "NPD", "PRRD"}),
    (
        "release-notice",
        "release_reason",
        {"RELEASED", "TEMPORARY_ABSENCE_RELEASE", "RELEASED_TO_HOSPITAL", "TRANSFERRED"},
    ),
    (
        "release-notice",
        "resettlement.*.pathway",
        {
            "ACCOMMODATION",
            "ATTITUDES_THINKING_AND_BEHAVIOUR",
            "CHILDREN_FAMILIES_AND_COMMUNITY",
            "DRUGS_AND_ALCOHOL",
            "EDUCATION_SKILLS_AND_WORK",
            "FINANCE_AND_ID",
            "HEALTH",
        },
    ),
    ("release-notice", "risk.overall_level", {"LOW", "MEDIUM", "HIGH", "VERY_HIGH"}),
    (
        "release-notice",
        "risk.at_risk.*",
        {"CHILDREN", "PUBLIC", "KNOWN_ADULT", "STAFF", "PRISONERS"},
    ),
    ("condition-update", "conditions.*.kind", {"STANDARD", "ADDITIONAL", "BESPOKE"}),
    (
        "care-acknowledgement",
        "decision",
        {"ACCEPTED", "DECLINED", "WAITLISTED", "NEEDS_INFORMATION"},
    ),
    (
        "responsibility-agreement",
        "parties.*.responsibilities.*",
        {"SUPERVISION", "EXIT_INTERVENTION", "HOUSING", "FAMILY_CONTACT", "RISK_REPORTING"},
    ),
    ("responsibility-agreement", "parties.*.kind", {"prison", "probation", "exit"}),
    (
        "consent-record",
        "scope",
        {"EXIT_ENGAGEMENT", "INCLUDE_IN_CONDITIONS", "SHARE_PROGRESS", "FAMILY_INVOLVEMENT"},
    ),
    ("consent-record", "state", {"GIVEN", "WITHDRAWN"}),
    ("consent-record", "basis", {"MANDATED", "VOLUNTARY"}),
    ("risk-of-harm-alert", "urgency", {"IMMEDIATE", "URGENT", "ROUTINE"}),
    (
        "risk-of-harm-alert",
        "at_risk.*",
        {"CHILDREN", "PUBLIC", "KNOWN_ADULT", "STAFF", "PRISONERS"},
    ),
    ("supervision-end", "reason", {"EXPIRY", "RECALL", "RESENTENCED"}),
    ("rectification-notice", "action", {"RECTIFY", "ERASE", "RESTRICT", "LIFT"}),
    ("case-conference", "participants.*.kind", {"prison", "probation", "exit"}),
]
DIMENSIONS = [
    "radicalisation",
    "extremist_activity",
    "crime",
    "social_marginalisation",
    "mental_health",
]
ENUMS += [
    (
        "progress-summary",
        f"dimensions.{dim}.status",
        {"IMPROVED", "STABLE", "DETERIORATED", "NOT_ASSESSED"},
    )
    for dim in DIMENSIONS
]
ENUMS += [
    ("progress-summary", f"dimensions.{dim}.basis", {"FACT", "ASSESSMENT"}) for dim in DIMENSIONS
]


@pytest.mark.parametrize(("name", "dotted", "expected"), ENUMS)
def test_enumerations_follow_the_domain(
    registry: SchemaRegistry, name: str, dotted: str, expected: set[str]
) -> None:
    doc = registry.document(f"handover/{name}/1")
    values = prop(doc, dotted)["enum"]
    assert set(values) == expected
    assert len(values) == len(expected)


def test_structured_fields_follow_the_domain(registry: SchemaRegistry) -> None:
    release = registry.document("handover/release-notice/1")
    assert set(prop(release, "sentence_dates")["properties"]) == {"sed", "led", "tused", "hdced"}
    assert "required" not in prop(release, "sentence_dates")
    assert set(prop(release, "identifiers")["properties"]) == {
        "prison_number",
        "probation_case_ref",
    }
    assert set(prop(release, "flags")["properties"]) == {
        "mappa_category",
        "mappa_level",
        "terrorism_act",
    }
    condition = prop(registry.document("handover/condition-update/1"), "conditions.*")
    assert set(condition["required"]) == {"kind", "code", "category", "text", "exit_related"}
    assert condition["properties"]["exit_related"]["type"] == "boolean"
    dims = prop(registry.document("handover/progress-summary/1"), "dimensions")
    assert set(dims["required"]) == set(DIMENSIONS) == set(dims["properties"])
    care = registry.document("handover/care-acknowledgement/1")
    assert prop(care, "in_reply_to")["pattern"] == "^[A-Za-z0-9_-]{22}$"
    agreement = registry.document("handover/responsibility-agreement/1")
    assert prop(agreement, "parties.*.node")["pattern"] == "^[a-z0-9-]+(\\.[a-z0-9-]+)*$"
    assert set(prop(agreement, "parties.*")["required"]) == {
        "node",
        "kind",
        "responsibilities",
        "contact_point",
    }
    conference = registry.document("handover/case-conference/1")
    assert prop(conference, "proposed_times.*")["pattern"].endswith("Z$")


# ----------------------------------------------------------------------------- examples


@pytest.mark.parametrize(("schema_id", "index"), example_cases())
def test_every_example_validates(registry: SchemaRegistry, schema_id: str, index: int) -> None:
    registry.validate(schema_id, registry.examples(schema_id)[index])


def check_canonical(value: object, depth: int = 0) -> None:
    assert value is not None
    assert not isinstance(value, float)
    if isinstance(value, dict):
        assert depth < 32
        for key, item in value.items():
            assert isinstance(key, str)
            assert key
            assert key.isascii()
            check_canonical(item, depth + 1)
    elif isinstance(value, list):
        assert depth < 32
        for item in value:
            check_canonical(item, depth + 1)
    elif isinstance(value, bool | str):
        pass
    else:
        assert isinstance(value, int)
        assert -MAX_SAFE_INT <= value <= MAX_SAFE_INT


@pytest.mark.parametrize(("schema_id", "index"), example_cases())
def test_every_example_is_canonical_json_encodable(
    registry: SchemaRegistry, schema_id: str, index: int
) -> None:
    example = registry.examples(schema_id)[index]
    check_canonical(example)
    encoded = json.dumps(example, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert json.loads(encoded) == example


def test_benchmark_body_is_about_two_kib(registry: SchemaRegistry) -> None:
    body = registry.examples("handover/release-notice/1")[0]
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert 1800 <= len(encoded.encode("utf-8")) <= 2300
    # The benchmark body exercises every field group of the matrix that a prison
    # may send to probation without a recorded consent (family contact needs
    # FAMILY_INVOLVEMENT; another example carries it).
    groups = registry.field_groups("handover/release-notice/1")
    assert {f for f, g in groups.items() if g != "family_contact"} <= set(body)
    assert "family_contact" not in body
    assert any("family_contact" in e for e in registry.examples("handover/release-notice/1"))


def test_examples_are_copies(registry: SchemaRegistry) -> None:
    registry.examples("handover/supervision-end/1")[0]["reason"] = SECRET
    registry.document("handover/supervision-end/1")["properties"].clear()
    registry.validate(
        "handover/supervision-end/1", registry.examples("handover/supervision-end/1")[0]
    )


# ----------------------------------------------------------------------------- rejections


@pytest.mark.parametrize("schema_id", IDS)
def test_missing_required_field_is_rejected(registry: SchemaRegistry, schema_id: str) -> None:
    for field in registry.document(schema_id)["required"]:
        body = first_example(registry, schema_id)
        del body[field]
        exc = reject(registry, schema_id, body)
        assert f"/{field}" in exc.paths
        assert f"/{field}: required" in str(exc)


@pytest.mark.parametrize("schema_id", IDS)
def test_extra_top_level_property_is_rejected(registry: SchemaRegistry, schema_id: str) -> None:
    body = first_example(registry, schema_id)
    body[SECRET] = SECRET
    exc = reject(registry, schema_id, body)
    assert exc.paths == [""]
    assert "additionalProperties" in str(exc)


def nested_objects(value: object, pointer: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        if pointer:
            yield pointer
        for key, item in value.items():
            yield from nested_objects(item, f"{pointer}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from nested_objects(item, f"{pointer}/{index}")


@pytest.mark.parametrize(("schema_id", "index"), example_cases())
def test_extra_nested_property_is_rejected_everywhere(
    registry: SchemaRegistry, schema_id: str, index: int
) -> None:
    pointers = list(nested_objects(registry.examples(schema_id)[index]))
    assert "/quality" in pointers
    for pointer in pointers:
        body = registry.examples(schema_id)[index]
        node: Any = body
        for part in pointer.strip("/").split("/"):
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[SECRET] = SECRET
        exc = reject(registry, schema_id, body)
        assert pointer in exc.paths


WRONG_ENUM = {
    "release-notice": "/phase",
    "condition-update": "/conditions/0/kind",
    "care-acknowledgement": "/decision",
    "responsibility-agreement": "/parties/0/kind",
    "consent-record": "/scope",
    "progress-summary": "/dimensions/crime/status",
    "risk-of-harm-alert": "/urgency",
    "supervision-end": "/reason",
    "rectification-notice": "/action",
    "case-conference": "/status",
    "rectification-request": "/concern",
}


@pytest.mark.parametrize("name", NAMES)
def test_wrong_enum_value_is_rejected(registry: SchemaRegistry, name: str) -> None:
    schema_id = f"handover/{name}/1"
    for pointer in (WRONG_ENUM[name], "/quality/basis"):
        body = first_example(registry, schema_id)
        set_at(body, pointer, SECRET)
        exc = reject(registry, schema_id, body)
        assert pointer in exc.paths
        assert f"{pointer}: enum" in str(exc)


FLOAT_WHERE_INTEGER = [
    ("release-notice", "/flags/mappa_level"),
    ("release-notice", "/risk_detail/scores/1/score"),
    ("responsibility-agreement", "/revision"),
]


@pytest.mark.parametrize(("name", "pointer"), FLOAT_WHERE_INTEGER)
def test_float_where_integer_is_rejected(registry: SchemaRegistry, name: str, pointer: str) -> None:
    schema_id = f"handover/{name}/1"
    body = first_example(registry, schema_id)
    set_at(body, pointer, SECRET_FLOAT)
    exc = reject(registry, schema_id, body)
    assert exc.paths == [pointer]
    assert f"{pointer}: type" in str(exc)


@pytest.mark.parametrize("schema_id", IDS)
def test_float_is_rejected_in_every_schema(registry: SchemaRegistry, schema_id: str) -> None:
    for pointer in ("/quality/as_of", "/case_ref"):
        body = first_example(registry, schema_id)
        set_at(body, pointer, SECRET_FLOAT)
        exc = reject(registry, schema_id, body)
        assert pointer in exc.paths


@pytest.mark.parametrize("schema_id", IDS)
def test_null_is_rejected(registry: SchemaRegistry, schema_id: str) -> None:
    required = registry.document(schema_id)["required"]
    pointers = ["/quality/source_system", f"/{required[-1]}"]
    optional = sorted(set(first_example(registry, schema_id)) - set(required))
    pointers += [f"/{name}" for name in optional]
    for pointer in pointers:
        body = first_example(registry, schema_id)
        set_at(body, pointer, None)
        exc = reject(registry, schema_id, body)
        assert pointer in exc.paths
        assert "None" not in str(exc)
        assert "null" not in str(exc)


def test_rejected_values_never_appear_even_in_patterns(registry: SchemaRegistry) -> None:
    body = copy.deepcopy(
        next(
            e
            for e in registry.examples("handover/release-notice/1")
            if "family_contact" in e and "identifiers" in e
        )
    )
    body["identifiers"]["prison_number"] = f"{SECRET} with spaces"
    body["release_address"]["lines"] = [SECRET] * 5
    body["family_contact"][0]["name"] = SECRET * 20
    exc = reject(registry, "handover/release-notice/1", body)
    assert set(exc.paths) == {
        "/identifiers/prison_number",
        "/release_address/lines",
        "/family_contact/0/name",
    }


def test_many_errors_are_capped(registry: SchemaRegistry) -> None:
    body = first_example(registry, "handover/release-notice/1")
    body["family_contact"] = [{SECRET: SECRET} for _ in range(10)]
    exc = reject(registry, "handover/release-notice/1", body)
    assert str(exc).endswith("(and more)")
    assert len(exc.paths) <= 20


@pytest.mark.parametrize("body", [set(), b"x", {1: 2}, object()])
def test_a_value_with_no_json_form_is_rejected(registry: SchemaRegistry, body: object) -> None:
    reject(registry, "handover/supervision-end/1", body)


@pytest.mark.parametrize("body", [[], "x", 1, True])
def test_a_body_that_is_not_an_object_is_rejected(registry: SchemaRegistry, body: object) -> None:
    exc = reject(registry, "handover/supervision-end/1", body)
    assert exc.paths == [""]


@pytest.mark.parametrize(
    "schema_id", ["handover/release-notice/2", "handover/nope/1", "release-notice", "", SECRET]
)
def test_unknown_schema_id(registry: SchemaRegistry, schema_id: str) -> None:
    with pytest.raises(UnknownSchema) as info:
        registry.validate(schema_id, {})
    assert repr(schema_id) in str(info.value)
    for method in (
        registry.document,
        registry.examples,
        registry.sensitive_fields,
        registry.field_groups,
    ):
        with pytest.raises(UnknownSchema):
            method(schema_id)


# ----------------------------------------------------------------------------- field rules


@pytest.mark.parametrize(
    "case_ref",
    [
        "A4821DZ",  # a prison number
        "HC-01jc3862pz6820j8yy0j464bbg",  # lower case
        "HC-01JC3862PZ6820J8YY0J464BBI",  # I is not Crockford base32
        "HC-01JC3862PZ6820J8YY0J464BB",  # 25 characters
        "HC-01JC3862PZ6820J8YY0J464BBGG",  # 27 characters
        "01JC3862PZ6820J8YY0J464BBG",  # no prefix
    ],
)
def test_case_ref_is_a_prefixed_ulid(registry: SchemaRegistry, case_ref: str) -> None:
    body = first_example(registry, "handover/supervision-end/1")
    body["case_ref"] = case_ref
    exc = reject(registry, "handover/supervision-end/1", body)
    assert exc.paths == ["/case_ref"]
    assert_no_secret(exc, case_ref)


@pytest.mark.parametrize(
    "date", ["2025-02-30", "2025-13-01", "٢٠٢٥-01-01", "2025-1-01", "20250101"]
)
def test_dates_are_real_calendar_dates(registry: SchemaRegistry, date: str) -> None:
    body = first_example(registry, "handover/supervision-end/1")
    body["end_date"] = date
    exc = reject(registry, "handover/supervision-end/1", body)
    assert exc.paths == ["/end_date"]


@pytest.mark.parametrize("value", ["2025-04-01T09:30Z", "2025-04-01T09:30:00Z"])
def test_date_times_with_and_without_seconds(registry: SchemaRegistry, value: str) -> None:
    body = first_example(registry, "handover/case-conference/1")
    body["proposed_times"] = [value]
    registry.validate("handover/case-conference/1", body)


@pytest.mark.parametrize("value", ["2025-04-01T09:30:00+01:00", "2025-04-01 09:30:00Z", "x"])
def test_date_times_are_utc_rfc3339(registry: SchemaRegistry, value: str) -> None:
    body = first_example(registry, "handover/case-conference/1")
    body["proposed_times"] = [value]
    assert reject(registry, "handover/case-conference/1", body).paths == ["/proposed_times/0"]


def test_minimised_release_notice_for_an_exit_organisation_validates(
    registry: SchemaRegistry,
) -> None:
    # Exit organisation column of the matrix: N for identifiers, police id, address and
    # zones, risk narrative, flags; S for release dates (expected date only).
    body = first_example(registry, "handover/release-notice/1")
    groups = registry.field_groups("handover/release-notice/1")
    never = {"identifiers", "police_id", "address_zones", "risk_narrative", "flags"}
    for name, group in groups.items():
        if group in never or (group == "release_dates" and name != "expected_release_date"):
            body.pop(name, None)
    body.pop("family_contact", None)
    registry.validate("handover/release-notice/1", body)
    assert not set(body) & {"identifiers", "police_national_id", "release_address"}


@pytest.mark.parametrize("schema_id", IDS)
def test_grouped_fields_are_optional_except_the_packet_core(
    registry: SchemaRegistry, schema_id: str
) -> None:
    # A field the policy may strip must be optional, or the reduced body would not
    # validate at the recipient. The exceptions are the reason the packet exists.
    core = {
        # The one release date every recipient gets (exit organisation: "S, expected only").
        "handover/release-notice/1": {"expected_release_date"},
        "handover/condition-update/1": {"conditions"},
        "handover/progress-summary/1": {"dimensions"},
        "handover/risk-of-harm-alert/1": {"at_risk", "account"},
    }
    groups = registry.field_groups(schema_id)
    required = set(registry.document(schema_id)["required"])
    assert set(groups) & required == core.get(schema_id, set())


def test_exit_related_filter_may_leave_no_conditions(registry: SchemaRegistry) -> None:
    body = first_example(registry, "handover/condition-update/1")
    body["conditions"] = [c for c in body["conditions"] if c["exit_related"]]
    registry.validate("handover/condition-update/1", body)
    body["conditions"] = []
    registry.validate("handover/condition-update/1", body)


def test_rectify_needs_a_corrected_body_valid_for_the_target(registry: SchemaRegistry) -> None:
    schema_id = "handover/rectification-notice/1"
    rectify, erase = registry.examples(schema_id)
    missing = copy.deepcopy(rectify)
    del missing["corrected_body"]
    assert "/corrected_body" in reject(registry, schema_id, missing).paths

    wrong = copy.deepcopy(rectify)
    wrong["corrected_body"]["end_date"] = SECRET
    assert reject(registry, schema_id, wrong).paths == ["/corrected_body/end_date"]

    other_type = copy.deepcopy(rectify)
    other_type["corrected_body"] = first_example(registry, "handover/consent-record/1")
    reject(registry, schema_id, other_type)

    retargeted = copy.deepcopy(other_type)
    retargeted["target_schema"] = "handover/consent-record/1"
    registry.validate(schema_id, retargeted)

    with_body = copy.deepcopy(erase)
    with_body["corrected_body"] = rectify["corrected_body"]
    reject(registry, schema_id, with_body)


def test_conditional_requirements(registry: SchemaRegistry) -> None:
    accepted = first_example(registry, "handover/care-acknowledgement/1")
    del accepted["worker"]
    assert "/worker" in reject(registry, "handover/care-acknowledgement/1", accepted).paths

    withdrawn = registry.examples("handover/consent-record/1")[1]
    del withdrawn["withdrawn_at"]
    assert "/withdrawn_at" in reject(registry, "handover/consent-record/1", withdrawn).paths

    held = registry.examples("handover/case-conference/1")[1]
    del held["outcome"]
    assert "/outcome" in reject(registry, "handover/case-conference/1", held).paths

    specific = first_example(registry, "handover/condition-update/1")
    del specific["first_appointment"]["time"]
    paths = reject(registry, "handover/condition-update/1", specific).paths
    assert "/first_appointment/time" in paths


# ----------------------------------------------------------------------------- compile once


def test_validators_are_compiled_once_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    real = jsonschema_rs.Draft202012Validator
    compiled: list[object] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        validator = real(*args, **kwargs)
        compiled.append(validator)
        return validator

    monkeypatch.setattr(schemas_module.jsonschema_rs, "Draft202012Validator", counting)
    registry = SchemaRegistry.load()
    assert len(compiled) == len(IDS)
    body = registry.examples("handover/release-notice/1")[0]
    for _ in range(50):
        registry.validate("handover/release-notice/1", body)
    bad = dict(body, phase=SECRET)
    for _ in range(5):
        with pytest.raises(SchemaInvalid):
            registry.validate("handover/release-notice/1", bad)
    assert len(compiled) == len(IDS)


def test_default_registry_loads_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real_load = SchemaRegistry.load
    calls: list[Path | None] = []

    def counting(directory: Path | None = None) -> SchemaRegistry:
        calls.append(directory)
        return real_load(directory)

    default_registry.cache_clear()
    monkeypatch.setattr(SchemaRegistry, "load", staticmethod(counting))
    try:
        first = default_registry()
        assert default_registry() is first
        assert calls == [None]
        assert first.ids() == sorted(IDS)
    finally:
        default_registry.cache_clear()


# ----------------------------------------------------------------------------- broken files


def copy_schemas(tmp_path: Path) -> Path:
    for path in schema_dir().glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path


def edit(path: Path, change: Any) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")


def test_a_copy_of_the_directory_loads(tmp_path: Path) -> None:
    assert SchemaRegistry.load(copy_schemas(tmp_path)).ids() == sorted(IDS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update({"type": "invalid"}), "not a valid JSON Schema"),
        (lambda d: d.update({"$schema": "http://json-schema.org/draft-07/schema#"}), "$schema"),
        (lambda d: d.update({"$id": "https://x.example/handover/other-name/1"}), "belongs in"),
        (lambda d: d.update({"$id": "https://x.example/packets/supervision-end/1"}), "$id"),
        (lambda d: d["properties"]["notes"].update({"x-sensitivity": "secret"}), "x-sensitivity"),
        (lambda d: d["properties"]["notes"].update({"x-field-group": "nope"}), "x-field-group"),
        (
            lambda d: d["$defs"]["quality"]["properties"]["basis"].update(
                {"x-field-group": "flags"}
            ),
            "top-level",
        ),
        (lambda d: d["properties"]["notes"].update({"$ref": "#/$defs/missing"}), "compile"),
    ],
)
def test_broken_schema_files_are_refused(tmp_path: Path, change: Any, message: str) -> None:
    directory = copy_schemas(tmp_path)
    edit(directory / "supervision-end.v1.json", change)
    with pytest.raises(ConfigError) as info:
        SchemaRegistry.load(directory)
    assert message in str(info.value)


def test_empty_directories_and_unreadable_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no schema files"):
        SchemaRegistry.load(tmp_path)
    (tmp_path / "broken.v1.json").write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot read"):
        SchemaRegistry.load(tmp_path)


# ----------------------------------------------------------------------- messages that help


def test_a_field_not_allowed_is_named_with_the_allowed_ones(registry: SchemaRegistry) -> None:
    schema_id = "handover/release-notice/1"
    body = first_example(registry, schema_id)
    body["relase_phase"] = "CONFIRMED"
    body["quality"]["sourse"] = "x"
    exc = reject(registry, schema_id, body)
    assert "(root): additionalProperties: field relase_phase not allowed here" in str(exc)
    assert "allowed fields case_ref, confirmed_release_date," in str(exc)
    # Through a $ref: the allowed names are those of the referenced definition.
    assert "/quality: additionalProperties: field sourse not allowed here" in str(exc)
    assert "allowed fields as_of, basis, groups, source_system" in str(exc)


def test_a_key_not_shaped_like_a_field_name_is_not_repeated(registry: SchemaRegistry) -> None:
    schema_id = "handover/release-notice/1"
    body = first_example(registry, schema_id)
    body["Jane Doe"] = 1
    exc = reject(registry, schema_id, body)
    assert "Jane" not in str(exc)
    assert "1 member(s) whose name is not a field name not allowed" in str(exc)


def test_an_enum_lists_the_allowed_values(registry: SchemaRegistry) -> None:
    schema_id = "handover/release-notice/1"
    body = first_example(registry, schema_id)
    body["phase"] = SECRET
    exc = reject(registry, schema_id, body)
    assert "/phase: enum: must be one of PLANNED, CONFIRMED, CANCELLED" in str(exc)


def test_a_date_in_another_format_says_yyyy_mm_dd_once(registry: SchemaRegistry) -> None:
    schema_id = "handover/release-notice/1"
    body = first_example(registry, schema_id)
    body["expected_release_date"] = "10/12/2026"
    exc = reject(registry, schema_id, body)
    assert str(exc).count("/expected_release_date: expected a date as YYYY-MM-DD") == 1
    assert "10/12" not in str(exc)
    assert exc.paths == ["/expected_release_date"]
