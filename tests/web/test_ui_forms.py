"""Forms generated from packet schemas (web/ui/forms.py), TOTP (node/totp.py) and
password hashing (protocol/crypto.py), without a browser."""

from __future__ import annotations

import base64

from handover.node import totp
from handover.protocol.crypto import hash_password, verify_password
from handover.web.ui import forms
from handover.workflow.schemas import default_registry

CONDITIONS = "handover/condition-update/1"


def doc() -> dict:  # type: ignore[type-arg]
    return default_registry().document(CONDITIONS)


def test_inputs_are_named_by_json_pointer_with_enumerations_and_arrays() -> None:
    root = forms.build(doc(), {})
    fields = {f.pointer: f for f in forms.walk(root)}
    assert fields["/quality/as_of"].kind == "date"
    assert "YYYY-MM-DD" in fields["/quality/as_of"].hint
    assert fields["/licence_kind"].options[:2] == ["CRD", "PRRD"]
    assert fields["/conditions"].kind == "array"
    assert fields["/conditions/0/exit_related"].kind == "boolean"  # one item of a required array


def test_a_posted_form_becomes_a_typed_body_without_empty_fields() -> None:
    posted = [
        ("/case_ref", "HC-01JC3862PZ6820J8YY0J464BBG"),
        ("/quality/as_of", "2025-03-12"),
        ("/quality/source_system", ""),
        ("/conditions/0/code", "STD_1"),
        ("/conditions/0/exit_related", "false"),
        ("/conditions/1/code", ""),
        ("/unknown", "dropped"),
        ("csrf_token", "not a field"),
    ]
    draft = forms.draft_of(doc(), posted)
    assert len(draft["conditions"]) == 2  # the empty item stays while editing
    body = forms.body_of(doc(), draft)
    assert body == {
        "case_ref": "HC-01JC3862PZ6820J8YY0J464BBG",
        "quality": {"as_of": "2025-03-12"},
        "conditions": [{"code": "STD_1", "exit_related": False}],
    }


def test_add_and_remove_array_items() -> None:
    draft = forms.draft_of(doc(), [("/conditions/0/code", "A"), ("/conditions/1/code", "B")])
    forms.change(draft, "add:/conditions")
    assert len(draft["conditions"]) == 3
    forms.change(draft, "remove:/conditions/0")
    assert [c and c.get("code") for c in draft["conditions"]] == ["B", None]
    forms.change(draft, "remove:/conditions/99")  # out of range: nothing happens
    assert len(draft["conditions"]) == 2


def test_schema_errors_land_on_their_fields_and_say_what_is_expected() -> None:
    message = (
        "body does not fit schema handover/condition-update/1:"
        " /quality/as_of: Pattern; (root): Required; /licence_kind: Enum; justification: x"
    )
    errors = forms.field_errors(doc(), message)
    assert "YYYY-MM-DD" in errors["/quality/as_of"]
    assert "one of: CRD" in errors["/licence_kind"]
    root = forms.build(doc(), {})
    marked = forms.attach(root, {**errors, "no-slash": "somewhere"})
    assert {f.pointer for f in marked} >= {"/quality/as_of", "/licence_kind", ""}


def test_totp_matches_rfc_6238() -> None:
    secret = b"12345678901234567890"
    # RFC 6238 appendix B, SHA-1, truncated to 6 digits.
    assert totp.code_at(secret, 59) == "287082"
    assert totp.code_at(secret, 1111111109) == "081804"
    assert totp.check(secret, "081804", 1111111109 + 30)  # one step of drift
    assert not totp.check(secret, "081804", 1111111109 + 90)
    uri = totp.otpauth_uri(secret, "sam", "probation.example")
    assert uri.startswith("otpauth://totp/probation.example%3Asam?secret=")
    assert base64.b32encode(secret).decode().rstrip("=") in uri


def test_passwords_are_argon2id_and_verify() -> None:
    encoded = hash_password("correct horse battery staple")
    assert encoded.startswith("$argon2id$")
    assert verify_password(encoded, "correct horse battery staple")
    assert not verify_password(encoded, "wrong")
    assert not verify_password("not a hash", "wrong")


def test_a_body_is_shown_in_the_schema_order() -> None:
    body = {"start_date": "2025-04-17", "case_ref": "HC-X", "quality": {"basis": "FACT"}}
    assert [p for p, _ in forms.flatten(body, doc=doc())] == [
        "/case_ref",
        "/quality/basis",
        "/start_date",
    ]
    assert forms.label_of(doc(), "/conditions/0/code") == "Conditions › item 1 › Code"
    assert forms.sensitivity_at(doc(), "/conditions/0/text") == "sensitive"
