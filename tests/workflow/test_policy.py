"""The sharing policy: every rule of the shipped default policy is exercised
here by a check that fails if that rule is removed from the file, plus the
matrix of docs/domain.md stated field by field."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handover.protocol.errors import ConfigError
from handover.workflow.policy import Policy, PolicyDocument, default_policy_path
from handover.workflow.schemas import default_registry

RAW: dict[str, Any] = json.loads(default_policy_path().read_text("utf-8"))
POLICY = Policy.load()
ALL_SCOPES = {"EXIT_ENGAGEMENT", "INCLUDE_IN_CONDITIONS", "SHARE_PROGRESS", "FAMILY_INVOLVEMENT"}


def without(path: list[str | int], value: object = None) -> Policy:
    """The default policy with one rule taken out (a key deleted, or a list item removed)."""
    raw = copy.deepcopy(RAW)
    node: Any = raw
    for key in path[:-1]:
        node = node[key]
    last = path[-1]
    if value is None:
        del node[last]
    else:
        node[last].remove(value)
    return Policy(PolicyDocument.model_validate(raw), "mutated")


def examples(schema: str) -> list[dict[str, Any]]:
    return default_registry().examples(schema)


def full_body(schema: str, field: str) -> dict[str, Any]:
    """An example of `schema` that carries `field` (the rule must have something to act on)."""
    for body in examples(schema):
        if field in body:
            return copy.deepcopy(body)
    raise AssertionError(f"no example of {schema} has {field}: the rule cannot be exercised")


# --- every rule, removed one at a time -----------------------------------------------


def send_rules() -> Iterator[tuple[str, str, str]]:
    for schema, senders in RAW["send"].items():
        for sender, recipients in senders.items():
            for recipient in recipients:
                yield schema, sender, recipient


@pytest.mark.parametrize(("schema", "sender", "recipient"), list(send_rules()))
def test_send_rule(schema: str, sender: str, recipient: str) -> None:
    assert POLICY.may_send(schema, sender, recipient)
    assert not without(["send", schema, sender], recipient).may_send(schema, sender, recipient)


def view_rules() -> Iterator[tuple[str, str, str, str]]:
    for schema, kinds in RAW["views"].items():
        for kind, rule in kinds.items():
            for field in rule.get("remove", []):
                yield schema, kind, "remove", field
            for field in rule.get("keep", {}):
                yield schema, kind, "keep", field
            for field in rule.get("where", {}):
                yield schema, kind, "where", field
            for field in rule.get("consent", {}):
                yield schema, kind, "consent", field


@pytest.mark.parametrize(("schema", "kind", "verb", "field"), list(view_rules()))
def test_view_rule(schema: str, kind: str, verb: str, field: str) -> None:
    body = full_body(schema, field)
    if verb == "keep":
        body[field]["narrative"] = "not for this recipient"  # a key outside the kept ones
    if verb == "where":
        assert any(not item.get("exit_related") for item in body[field])
    with_rule = POLICY.view(schema, kind, body, consents=set())
    if verb == "remove":
        mutated = without(["views", schema, kind, "remove"], field)
    else:
        mutated = without(["views", schema, kind, verb, field])
    without_rule = mutated.view(schema, kind, body, consents=set())

    if verb in ("remove", "consent"):
        assert field in body and field not in with_rule.body and field in with_rule.removed
        assert field in without_rule.body and field not in without_rule.removed
    elif verb == "keep":
        assert "narrative" not in with_rule.body[field]
        assert f"{field}.narrative" in with_rule.removed
        assert "narrative" in without_rule.body[field]
    else:
        kept = with_rule.body[field]
        assert kept and all(item["exit_related"] for item in kept)
        assert len(without_rule.body[field]) == len(body[field]) > len(kept)
    # What the rule removes is never required: the reduced body still validates.
    default_registry().validate(schema, with_rule.body)


@pytest.mark.parametrize(
    ("schema", "kind", "field", "scope"),
    [
        (schema, kind, field, scope)
        for schema, kinds in RAW["views"].items()
        for kind, rule in kinds.items()
        for field, scope in rule.get("consent", {}).items()
    ],
)
def test_consent_gated_field_travels_with_its_consent(
    schema: str, kind: str, field: str, scope: str
) -> None:
    body = full_body(schema, field)
    assert field in POLICY.view(schema, kind, body, consents={scope}).body
    assert field not in POLICY.view(schema, kind, body, consents=ALL_SCOPES - {scope}).body


@pytest.mark.parametrize(
    ("schema", "kind", "scope"),
    [
        (schema, kind, scope)
        for schema, kinds in RAW["consent"].items()
        for kind, scope in kinds.items()
    ],
)
def test_packet_consent_rule(schema: str, kind: str, scope: str) -> None:
    assert POLICY.packet_consent(schema, kind) == scope
    assert without(["consent", schema, kind]).packet_consent(schema, kind) is None


@pytest.mark.parametrize(
    ("schema", "kind", "expected"),
    [
        (schema, kind, expected)
        for schema, kinds in RAW["continuity"]["expect"].items()
        for kind, answers in kinds.items()
        for expected in answers
    ],
)
def test_continuity_rule(schema: str, kind: str, expected: str) -> None:
    assert expected in POLICY.expectations(schema, kind)
    mutated = without(["continuity", "expect", schema, kind], expected)
    assert expected not in mutated.expectations(schema, kind)


def test_continuity_deadline_default_is_fourteen_days() -> None:
    assert POLICY.deadline_days == RAW["continuity"]["deadline_days_before_release"] == 14
    assert without(["continuity", "deadline_days_before_release"]).deadline_days == 14


@pytest.mark.parametrize("schema", sorted(RAW["retention"]["schemas"]))
def test_retention_rule_per_schema(schema: str) -> None:
    rule, _ = POLICY.retention(schema)
    assert rule.model_dump() == RAW["retention"]["schemas"][schema]
    fallback_to_default, _ = without(["retention", "schemas", schema]).retention(schema)
    assert fallback_to_default.model_dump() == RAW["retention"]["default"] != rule.model_dump()


def test_retention_default_and_fallback() -> None:
    rule, fallback = POLICY.retention("handover/release-notice/1")
    assert rule.model_dump() == RAW["retention"]["default"]
    assert fallback.model_dump() == RAW["retention"]["fallback"]
    assert fallback.anchor == "stored" and rule.anchor == "supervision_end"


# --- the docs/domain.md matrix, stated plainly --------------------------------------------------


def test_exit_organisation_gets_the_reduced_release_notice() -> None:
    body = full_body("handover/release-notice/1", "family_contact")
    view = POLICY.view("handover/release-notice/1", "exit", body, consents=set())
    never = {
        "identifiers",
        "police_national_id",
        "release_address",
        "exclusion_zones",
        "risk_detail",
        "flags",
        "family_contact",
    }
    assert never.isdisjoint(view.body)
    # Release date and type: S (expected date only).
    assert view.body["expected_release_date"] == body["expected_release_date"]
    assert {"confirmed_release_date", "release_date_type", "sentence_dates"}.isdisjoint(view.body)
    # Overall risk level and who is at risk: S (for worker safety).
    assert view.body["risk"] == {
        k: v for k, v in body["risk"].items() if k in ("overall_level", "at_risk")
    }
    assert view.body["case_ref"] == body["case_ref"]


def test_probation_gets_the_full_release_notice_but_family_contact_needs_consent() -> None:
    body = full_body("handover/release-notice/1", "family_contact")
    without_consent = POLICY.view("handover/release-notice/1", "probation", body, set())
    assert without_consent.removed == ["family_contact"]
    assert without_consent.consent_missing == ["FAMILY_INVOLVEMENT"]
    with_consent = POLICY.view(
        "handover/release-notice/1", "probation", body, {"FAMILY_INVOLVEMENT"}
    )
    assert with_consent.body == body and not with_consent.removed


def test_prison_never_gets_address_or_family_contact() -> None:
    body = full_body("handover/release-notice/1", "family_contact")
    view = POLICY.view("handover/release-notice/1", "prison", body, ALL_SCOPES)
    assert {"release_address", "exclusion_zones", "family_contact"}.isdisjoint(view.body)


def test_who_sends_what() -> None:
    assert POLICY.may_send("handover/release-notice/1", "prison", "probation")
    assert not POLICY.may_send("handover/release-notice/1", "exit", "probation")
    assert not POLICY.may_send("handover/condition-update/1", "prison", "exit")
    assert POLICY.may_send("handover/condition-update/1", "probation", "exit")
    assert not POLICY.may_send("handover/care-acknowledgement/1", "probation", "prison")
    assert not POLICY.may_send("handover/progress-summary/1", "probation", "prison")
    for kind in ("prison", "probation", "exit"):
        assert POLICY.may_send("handover/risk-of-harm-alert/1", kind, "probation")


def test_a_view_names_fields_never_values() -> None:
    body = full_body("handover/release-notice/1", "identifiers")
    view = POLICY.view("handover/release-notice/1", "exit", body, set())
    text = json.dumps(view.removed)
    assert body["identifiers"]["prison_number"] not in text
    assert "identifiers" in view.removed


# --- loading -------------------------------------------------------------------------------


def test_policy_naming_an_unknown_schema_is_refused(tmp_path: Path) -> None:
    raw = copy.deepcopy(RAW)
    raw["send"]["handover/no-such-thing/1"] = {"prison": ["probation"]}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="unknown schemas"):
        Policy.load(path, default_registry().ids())


def test_policy_with_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    raw = copy.deepcopy(RAW)
    raw["send"]["handover/release-notice/1"]["court"] = ["probation"]
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="not valid"):
        Policy.load(path)


def test_shipped_policy_names_only_known_schemas() -> None:
    Policy.load(None, default_registry().ids())
