"""`schemas/openapi.yaml` is kept true: every route the node serves is documented,
every documented route exists, and the document is structurally valid OpenAPI 3.1.

The route table is built without a node: every `handover.web` module's
`add_routes` is applied to a bare `aiohttp.web.Application()` (a module added
later is picked up automatically). Wire objects made by the library, and the
answers of two real nodes to the documented requests, are validated against
the documented schemas and status codes.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from federation import RELEASE_NOTICE, Federation, example
from handover.node.witness import PeerReport, Statement
from handover.protocol import crypto
from handover.protocol.auditchain import LogPosition, make_checkpoint
from handover.protocol.keyset import KeyEntry, build_keyset
from handover.protocol.packet import Identity
from handover.protocol.receipt import make_receipt
from handover.protocol.timeutil import now_ms
from handover.store.auditlog import ChainReport

OPENAPI = Path(__file__).resolve().parents[2] / "schemas" / "openapi.yaml"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
PATH_ITEM_KEYS = METHODS | {"summary", "description", "servers", "parameters", "$ref"}
# Routes deliberately outside the OpenAPI document (e.g. HTML pages of a web UI),
# as (METHOD, path). Empty: everything the node serves is API.
NOT_IN_OPENAPI: set[tuple[str, str]] = set()


@cache
def document() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(OPENAPI.read_text("utf-8"))
    return doc


def served_routes() -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the node's applications serve."""
    from types import SimpleNamespace

    from handover.node.budget import ByteBudget
    from handover.web.app import create_app

    stub = SimpleNamespace(budget=ByteBudget(1), local_budget=ByteBudget(1))
    app = create_app(stub, "both")  # type: ignore[arg-type]
    routes = set()
    for resource in app.router.resources():
        methods = {route.method for route in resource}
        for method in methods:
            # aiohttp adds HEAD next to every GET by itself; a HEAD of its own is API.
            if method != "*" and not (method == "HEAD" and "GET" in methods):
                routes.add((method, resource.canonical))
    return routes


def documented_routes() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method in item
        if method in METHODS
    }


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in document()["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def resolve(node: Any) -> Any:
    """Follow a local `$ref` ("#/a/b") to the object it names."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local references are used: {ref}"
        target: Any = document()
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(target, dict) and part in target, f"unresolved $ref {ref}"
            target = target[part]
        node = target
    return node


def all_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in all_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in all_refs(v)]
    return []


# --- routes ---------------------------------------------------------------------------


def test_the_route_table_is_found() -> None:
    routes = served_routes()
    assert ("POST", "/federation/v1/packets") in routes
    assert ("GET", "/api/v1/inbox/{pid}") in routes
    assert ("GET", "/metrics") in routes


def test_every_served_route_is_documented() -> None:
    # The web interface (/ui/...) serves HTML pages for people, not API operations.
    api_routes = {r for r in served_routes() if not r[1].startswith("/ui")}
    missing = api_routes - documented_routes() - NOT_IN_OPENAPI
    assert not missing, f"routes served but not in schemas/openapi.yaml: {sorted(missing)}"


def test_every_documented_route_is_served() -> None:
    extra = documented_routes() - served_routes()
    assert not extra, (
        f"routes in schemas/openapi.yaml that the node does not serve: {sorted(extra)}"
    )


# --- structure --------------------------------------------------------------------------


def test_document_is_openapi_3_1_with_info_and_paths() -> None:
    doc = document()
    assert isinstance(doc["openapi"], str) and re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    assert isinstance(doc["info"]["title"], str) and doc["info"]["title"]
    assert isinstance(doc["info"]["version"], str) and doc["info"]["version"]
    assert isinstance(doc["paths"], dict) and doc["paths"]
    for path, item in doc["paths"].items():
        assert path.startswith("/"), path
        assert set(item) <= PATH_ITEM_KEYS, (path, set(item) - PATH_ITEM_KEYS)


@pytest.mark.parametrize(
    ("method", "path"), sorted((m, p) for m, p, _ in operations()), ids=lambda v: str(v)
)
def test_every_operation_is_described_and_has_responses(method: str, path: str) -> None:
    op = document()["paths"][path][method]
    assert op.get("summary") or op.get("description"), "a short description"
    responses = op.get("responses")
    assert isinstance(responses, dict) and responses, "responses"
    for code, response in responses.items():
        assert re.fullmatch(r"[1-5](\d\d|XX)|default", str(code)), code
        assert isinstance(code, str), f"status code {code} must be a quoted string in YAML"
        assert resolve(response).get("description"), f"{code} needs a description"
        for media, content in resolve(response).get("content", {}).items():
            assert "schema" in content, (code, media)
    assert any(code.startswith("2") for code in responses), "a success response"
    body = op.get("requestBody")
    if body is not None:
        assert resolve(body)["content"], "request body media types"


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids))


def test_path_parameters_match_the_templates() -> None:
    for method, path, op in operations():
        item = document()["paths"][path]
        params = [resolve(p) for p in item.get("parameters", []) + op.get("parameters", [])]
        for p in params:
            assert p["in"] in ("path", "query", "header", "cookie"), p
            assert "schema" in p or "content" in p, p
        declared = {p["name"] for p in params if p["in"] == "path"}
        assert declared == set(re.findall(r"{([^}]+)}", path)), (method, path)
        assert all(p.get("required") is True for p in params if p["in"] == "path")


def test_every_reference_resolves() -> None:
    refs = all_refs(document())
    assert refs
    for ref in refs:
        resolve({"$ref": ref})


def test_local_api_needs_a_bearer_token_and_federation_does_not() -> None:
    doc = document()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    for method, path, op in operations():
        security = op.get("security", doc.get("security", []))
        for requirement in security:
            assert set(requirement) <= set(schemes), (method, path)
        if path.startswith("/api/"):
            assert security == [{"bearerAuth": []}], (method, path)
            assert {"401", "403"} <= set(op["responses"]), (method, path)
        else:
            assert security in ([], [{}]), (method, path)


def test_federation_packet_endpoint_documents_the_protocols_answers() -> None:
    op = document()["paths"]["/federation/v1/packets"]["post"]
    assert {"200", "400", "413", "415", "422"} <= set(op["responses"])
    assert set(op["requestBody"]["content"]) == {
        "application/vnd.handover.packet+json",
        "application/json",
    }


@cache
def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = document()["components"]["schemas"]
    return schemas


@pytest.mark.parametrize("name", sorted(_schemas()))
def test_component_schemas_are_valid_json_schema(name: str) -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_schemas()[name]}
    jsonschema_rs.meta.validate(schema)


# --- the documented wire shapes match what the code produces ------------------------------


def validate(name: str, instance: Any) -> None:
    wrapper = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/components/schemas/{name}",
        "components": {"schemas": _schemas()},
    }
    jsonschema_rs.validator_for(wrapper).validate(instance)


def test_wire_objects_match_their_documented_schemas() -> None:
    now = now_ms()
    root, sig = crypto.SigningKey.generate(), crypto.SigningKey.generate()
    box = crypto.BoxKey.generate()
    keyset = build_keyset(
        node="probation.example",
        serial=1,
        iat=now,
        exp=now + 3_600_000,
        root=root,
        keys=[
            KeyEntry(
                crypto.kid("ed25519-sig", sig.public_key),
                "ed25519-sig",
                sig.public_key,
                now,
                "active",
            ),
            KeyEntry(
                crypto.kid("x25519-box", box.public_key),
                "x25519-box",
                box.public_key,
                now,
                "active",
            ),
        ],
    )
    validate("KeysetWire", json.loads(keyset))
    identity = Identity.create("probation.example", sig)
    position = LogPosition(3, crypto.h32(b"x"))
    receipt = make_receipt(
        identity,
        pid="A" * 22,
        pd=bytes(64),
        to="prison.example",
        status="accepted",
        reason=None,
        log=position,
        now=now,
    )
    validate("ReceiptWire", json.loads(receipt))
    checkpoint = make_checkpoint(
        node="probation.example", kid=identity.kid, key=sig, position=position, now=now
    )
    validate("CheckpointWire", json.loads(checkpoint))

    statement = Statement(3, position.head, "receipt", "A" * 22, receipt.decode())
    report = PeerReport("probation.example", ok=False, checked=2, checkpoint_seq=2)
    report.problem = "entries were removed"
    report.conflict = [statement.to_json()]
    validate(
        "VerifyReport",
        {
            "ok": False,
            "chain": ChainReport(False, 4, position.head, 5, "entry is missing").to_json(),
            "peers": [report.to_json(), PeerReport("exit.example", checked=1).to_json()],
        },
    )
    validate("VerifyReport", {"ok": True, "chain": ChainReport(True, 5, position.head).to_json()})
    with pytest.raises(jsonschema_rs.ValidationError):
        validate("ReceiptWire", {"hp1r": "x", "sig": "y", "extra": 1})


# --- real answers of a running node match the documented responses ----------------------


def check_answer(method: str, template: str, status: int, body: Any) -> None:
    """`status` is documented for the operation and `body` fits its JSON schema."""
    op = document()["paths"][template][method.lower()]
    assert str(status) in op["responses"], f"{method} {template} answered undocumented {status}"
    content = resolve(op["responses"][str(status)]).get("content", {})
    schema = content["application/json"]["schema"]
    wrapper = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": {"schemas": _schemas()},
    }
    errors = [e.message for e in jsonschema_rs.validator_for(wrapper).iter_errors(body)]
    assert not errors, (method, template, status, errors)


def test_a_running_nodes_answers_match_the_document(tmp_path: Path) -> None:
    prison_name, probation_name = "prison.example", "probation.example"
    fed = Federation(tmp_path, [(prison_name, "prison"), (probation_name, "probation")])
    fed.start()
    try:
        prison, probation = fed[prison_name], fed[probation_name]
        payload = {
            "to": [probation_name],
            "schema": RELEASE_NOTICE,
            "body": example(RELEASE_NOTICE),
            "justification": "release planning",
        }
        status, body = prison.api("POST", "/api/v1/packets", payload)
        check_answer("POST", "/api/v1/packets", status, body)
        pid = body["packets"][0]["pid"]
        status, body = prison.api("GET", f"/api/v1/packets/{pid}")
        check_answer("GET", "/api/v1/packets/{pid}", status, body)
        check_answer("GET", "/api/v1/packets/{pid}", 200, prison.wait_delivered(pid))
        for bad in (
            {**payload, "justification": ""},
            {**payload, "schema": "handover/nothing/1"},
            {**payload, "to": ["nobody.example"]},
        ):
            check_answer("POST", "/api/v1/packets", *prison.api("POST", "/api/v1/packets", bad))
        check_answer(
            "POST",
            "/api/v1/packets",
            *prison.api("POST", "/api/v1/packets", payload, role="auditor"),
        )
        check_answer(
            "GET", "/api/v1/packets/{pid}", *prison.api("GET", "/api/v1/packets/" + "B" * 22)
        )

        check_answer("GET", "/api/v1/inbox", *probation.api("GET", "/api/v1/inbox"))
        check_answer("GET", "/api/v1/inbox", *probation.api("GET", "/api/v1/inbox", token="x"))
        check_answer("GET", "/api/v1/inbox/{pid}", *probation.api("GET", f"/api/v1/inbox/{pid}"))
        check_answer(
            "GET",
            "/api/v1/inbox/{pid}",
            *probation.api("GET", f"/api/v1/inbox/{pid}?justification=supervision+plan"),
        )
        check_answer("GET", "/api/v1/audit", *probation.api("GET", "/api/v1/audit", role="auditor"))
        check_answer("GET", "/api/v1/events", *probation.api("GET", "/api/v1/events"))
        check_answer("GET", "/api/v1/events", *probation.api("GET", "/api/v1/events?wait=99"))
        check_answer(
            "GET", "/api/v1/events", *probation.api("GET", "/api/v1/events", role="auditor")
        )
        check_answer(
            "POST",
            "/api/v1/audit/verify",
            *probation.api("POST", "/api/v1/audit/verify?peers=1", role="auditor"),
        )

        check_answer(
            "GET", "/.well-known/handover/keyset", *probation.get("/.well-known/handover/keyset")
        )
        check_answer(
            "GET",
            "/.well-known/handover/log-head",
            *probation.get("/.well-known/handover/log-head"),
        )
        check_answer(
            "GET",
            "/federation/v1/log/digests",
            *probation.get("/federation/v1/log/digests?after=1"),
        )
        check_answer(
            "GET",
            "/federation/v1/log/digests",
            *probation.get("/federation/v1/log/digests?limit=0"),
        )
        (row,) = prison.sql("SELECT wire FROM outbox WHERE pid = $1", pid)
        wire = bytes(row["wire"])
        headers = {"Content-Type": "application/vnd.handover.packet+json"}
        for sent in (wire, b'{"hp1":"x"}'):
            status, raw = probation.request("POST", "/federation/v1/packets", sent, headers)
            check_answer("POST", "/federation/v1/packets", status, json.loads(raw))
        batch = b'{"packets":[' + wire + b',{"hp1":"x","sig":"y","ct":"z"}]}'
        status, raw = probation.request("POST", "/federation/v1/packets:batch", batch, headers)
        check_answer("POST", "/federation/v1/packets:batch", status, json.loads(raw))
        status, raw = probation.request("POST", "/federation/v1/packets:batch", b"[]", headers)
        check_answer("POST", "/federation/v1/packets:batch", status, json.loads(raw))

        check_answer("GET", "/healthz", *probation.get("/healthz"))
        check_answer("GET", "/readyz", *probation.get("/readyz"))
    finally:
        fed.stop()
