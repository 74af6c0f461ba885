"""`schemas/openapi.yaml` as a vendor reads it: valid OpenAPI 3.1
(openapi-spec-validator), every JSON request and response with an example
that validates against the schema beside it, the submission `body` typed per
packet schema (the generated part current with `tools/openapi_bodies.py`).

The routes served and documented, and real answers of running nodes against
the document, are checked in tests/e2e/test_openapi.py.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from openapi_spec_validator import validate as validate_spec

from handover.workflow.schemas import default_registry

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "schemas" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch")


@cache
def document() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(OPENAPI.read_text("utf-8"))
    return doc


def resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document()
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def media_types() -> list[tuple[str, dict[str, Any]]]:
    """(where, media type object) of every JSON request and response body."""
    found = []
    for path, item in document()["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            body = resolve(op.get("requestBody"))
            for media, content in (body or {}).get("content", {}).items():
                if is_json(media):
                    found.append((f"{method.upper()} {path} request {media}", content))
            for code, response in op["responses"].items():
                for media, content in resolve(response).get("content", {}).items():
                    if is_json(media):
                        found.append((f"{method.upper()} {path} {code} {media}", content))
    return found


def examples_of(content: dict[str, Any]) -> list[Any]:
    values = [content["example"]] if "example" in content else []
    return values + [resolve(e)["value"] for e in content.get("examples", {}).values()]


def validator(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    wrapper = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": {"schemas": document()["components"]["schemas"]},
    }
    return jsonschema_rs.validator_for(wrapper, validate_formats=True)


def test_the_document_is_valid_openapi_3_1() -> None:
    validate_spec(copy.deepcopy(document()))


def test_a_broken_document_is_refused_by_the_validator() -> None:
    broken = copy.deepcopy(document())
    broken["paths"]["/api/v1/packets"]["post"]["responses"] = "none"
    with pytest.raises(Exception, match=r"responses|not of type|is not valid"):
        validate_spec(broken)


MEDIA = media_types()


@pytest.mark.parametrize(("where", "content"), MEDIA, ids=[w for w, _ in MEDIA])
def test_every_json_body_has_an_example_that_fits_its_schema(
    where: str, content: dict[str, Any]
) -> None:
    values = examples_of(content)
    assert values, f"{where}: no example"
    check = validator(content["schema"])
    for value in values:
        errors = [f"{e.instance_path}: {e.message}" for e in check.iter_errors(value)]
        assert not errors, (where, errors)


def test_the_examples_cover_the_operations_other_helpers_added_too() -> None:
    # Every operation that takes or answers JSON is in MEDIA, so the test above
    # holds it to the rule; this pins that the walk sees them all.
    operations = {(m, p) for p, item in document()["paths"].items() for m in METHODS if m in item}
    covered = {tuple(w.split(" ")[:2]) for w, _ in MEDIA}
    json_ops = {
        (m, p)
        for m, p in operations
        if any(
            is_json(media)
            for r in document()["paths"][p][m]["responses"].values()
            for media in resolve(r).get("content", {})
        )
    }
    assert {(m.upper(), p) for m, p in json_ops} <= covered
    assert ("POST", "/api/v1/packets") in covered and ("GET", "/api/v1/packets") in covered


def test_a_wrong_example_would_be_caught() -> None:
    content = document()["paths"]["/api/v1/packets"]["post"]["requestBody"]["content"]
    submit = copy.deepcopy(content["application/json"]["examples"]["release_notice"]["value"])
    check = validator(content["application/json"]["schema"])
    assert check.is_valid(submit)
    submit["body"]["phase"] = "SOMEDAY"
    assert not check.is_valid(submit)


def test_the_submission_body_is_typed_by_its_schema() -> None:
    schema = {"$ref": "#/components/schemas/SubmitRequest"}
    check = validator(schema)
    registry = default_registry()
    for schema_id in registry.ids():
        body = registry.examples(schema_id)[0]
        request = {"to": ["x.example"], "schema": schema_id, "body": body, "justification": "j"}
        assert check.is_valid(request), schema_id
        # The body of one schema under the id of another does not fit.
        other = next(s for s in registry.ids() if s != schema_id)
        assert not check.is_valid({**request, "schema": other}), (schema_id, other)
    mapping = document()["components"]["schemas"]["SubmitRequest"]["discriminator"]["mapping"]
    assert set(mapping) == set(registry.ids())


def test_the_generated_part_is_current() -> None:
    tool_path = ROOT / "tools" / "openapi_bodies.py"
    spec = importlib.util.spec_from_file_location("openapi_bodies", tool_path)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    _, generated = tool.current(OPENAPI.read_text("utf-8"))
    assert generated == tool.generated(), "run python tools/openapi_bodies.py"
    assert "$id" not in json.dumps(document()["components"]["schemas"]["Body_release-notice_v1"])


def test_every_error_code_has_a_meaning_in_the_document() -> None:
    error = document()["components"]["schemas"]["Error"]["properties"]["error"]
    for code in error["enum"]:
        assert f"- `{code}`: " in error["description"], code
