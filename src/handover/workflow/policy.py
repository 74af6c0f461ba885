"""The sharing policy: who may send which schema to whom, and what each
recipient kind may receive (LED proportionality, the minimisation matrix of docs/domain.md).

The rules are data (`default_policy.json`, overridable per node with
`policy_file`). This module only interprets them:

- `send[schema][sender kind]`: the recipient kinds a sender kind may address;
- `views[schema][recipient kind]`: `remove` top-level fields, `keep` only some
  keys of an object field, keep only array items `where` keys have given
  values, and fields that travel only with a recorded `consent` scope;
- `consent[schema][recipient kind]`: a scope without which the whole packet
  may not go;
- `continuity`: which answers a packet opens an expectation for, by when;
- `retention`: when a held packet falls due for review.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from handover.protocol.errors import ConfigError
from handover.workflow.access import PURPOSES

Kind = Literal["prison", "probation", "exit"]
Scope = Literal["EXIT_ENGAGEMENT", "INCLUDE_IN_CONDITIONS", "SHARE_PROGRESS", "FAMILY_INVOLVEMENT"]
Anchor = Literal["supervision_end", "release", "stored"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ViewRule(_Strict):
    remove: list[str] = Field(default_factory=list)
    keep: dict[str, list[str]] = Field(default_factory=dict)
    where: dict[str, dict[str, str | int | bool]] = Field(default_factory=dict)
    consent: dict[str, Scope] = Field(default_factory=dict)


class RetentionRule(_Strict):
    anchor: Anchor
    months: int = Field(ge=0, le=1200)


class Retention(_Strict):
    default: RetentionRule
    fallback: RetentionRule
    schemas: dict[str, RetentionRule] = Field(default_factory=dict)
    # How far ahead (months from the decision) an EXTEND may set a review; None:
    # the longer of the schema's rule and the fallback.
    extend_months: int | None = Field(default=None, ge=0, le=1200)


class Continuity(_Strict):
    deadline_days_before_release: int = Field(default=14, ge=0, le=365)
    expect: dict[str, dict[Kind, list[str]]] = Field(default_factory=dict)


PurposeCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")]


class PolicyDocument(_Strict):
    version: Literal[1]
    description: str = ""
    purposes: list[PurposeCode] = Field(default_factory=list)
    special: dict[str, dict[Kind, list[str]]] = Field(default_factory=dict)
    send: dict[str, dict[Kind, list[Kind]]]
    views: dict[str, dict[Kind, ViewRule]] = Field(default_factory=dict)
    consent: dict[str, dict[Kind, Scope]] = Field(default_factory=dict)
    continuity: Continuity = Field(default_factory=Continuity)
    retention: Retention


@dataclass(frozen=True)
class View:
    """What one recipient kind may receive of a body."""

    body: dict[str, Any]
    removed: list[str] = field(default_factory=list)
    consent_missing: list[str] = field(default_factory=list)

    @property
    def fields(self) -> list[str]:
        return sorted(self.body)


def default_policy_path() -> Path:
    return Path(str(resources.files("handover.workflow") / "default_policy.json"))


class Policy:
    def __init__(self, document: PolicyDocument, source: str) -> None:
        self.doc = document
        self.source = source
        self.uses_consent = bool(document.consent) or any(
            rule.consent for kinds in document.views.values() for rule in kinds.values()
        )

    @classmethod
    def load(cls, path: Path | None = None, known_schemas: list[str] | None = None) -> Policy:
        """Read and check a policy file (default: the shipped one).

        Raises:
            ConfigError: unreadable, malformed, or naming unknown schemas.
        """
        path = path or default_policy_path()
        try:
            raw = json.loads(path.read_text("utf-8"))
            doc = PolicyDocument.model_validate(raw)
        except OSError as exc:
            raise ConfigError(f"cannot read policy file {path}: {exc.strerror}") from exc
        except ValueError as exc:  # JSON and pydantic errors
            detail = exc.errors()[0] if isinstance(exc, ValidationError) else None
            where = "" if detail is None else f" at {'.'.join(map(str, detail['loc']))}"
            raise ConfigError(f"policy file {path} is not valid{where}: {exc}") from exc
        if known_schemas is not None:
            named = set(doc.send) | set(doc.views) | set(doc.consent) | set(doc.continuity.expect)
            named |= set(doc.retention.schemas) | set(doc.special)
            for schemas in doc.continuity.expect.values():
                for expected in schemas.values():
                    named |= set(expected)
            unknown = sorted(named - set(known_schemas))
            if unknown:
                raise ConfigError(f"policy file {path} names unknown schemas: {unknown}")
        return cls(doc, str(path))

    @property
    def purposes(self) -> frozenset[str]:
        """The purpose codes a justification may begin with (`PURPOSE: text`)."""
        return frozenset(self.doc.purposes) or PURPOSES

    # --- who may send what to whom ------------------------------------------------

    def may_send(self, schema: str, sender_kind: str, recipient_kind: str) -> bool:
        allowed = self.doc.send.get(schema, {}).get(sender_kind, [])  # type: ignore[call-overload]
        return recipient_kind in allowed

    def consent_relevant(self, schema: str, recipient_kind: str, body: dict[str, Any]) -> bool:
        """Does deciding on this body for this recipient kind depend on consent?"""
        if self.packet_consent(schema, recipient_kind) is not None:
            return True
        rule = self.doc.views.get(schema, {}).get(recipient_kind)  # type: ignore[call-overload]
        return rule is not None and any(name in body for name in rule.consent)

    def packet_consent(self, schema: str, recipient_kind: str) -> str | None:
        scope: str | None = self.doc.consent.get(schema, {}).get(recipient_kind)  # type: ignore[call-overload]
        return scope

    # --- minimisation ---------------------------------------------------------------

    def special_allowed(self, schema: str, recipient_kind: str) -> frozenset[str]:
        """The special-category fields (Art 10) this recipient kind may have."""
        allowed = self.doc.special.get(schema, {}).get(recipient_kind, [])  # type: ignore[call-overload]
        return frozenset(allowed)

    def view(
        self,
        schema: str,
        recipient_kind: str,
        body: dict[str, Any],
        consents: set[str],
        special: Sequence[str] = (),
    ) -> View:
        """The body a recipient kind may receive, and the field paths removed from it.

        Paths name fields, never values: `identifiers`, `risk.narrative`,
        `conditions[2]`. `special` lists the schema's special-category fields
        (Art 10: dotted paths, `*` for array items); those the policy's
        `special` section does not allow this kind are removed too.
        """
        view = self._view(schema, recipient_kind, body, consents)
        allowed = self.special_allowed(schema, recipient_kind)
        refused = [path for path in special if path not in allowed]
        if not refused:
            return view
        reduced = copy.deepcopy(view.body)
        removed = list(view.removed)
        for path in refused:
            _remove_path(reduced, path.split("."), "", removed)
        if len(removed) == len(view.removed):
            return view
        return View(body=reduced, removed=removed, consent_missing=list(view.consent_missing))

    def _view(
        self, schema: str, recipient_kind: str, body: dict[str, Any], consents: set[str]
    ) -> View:
        rule = self.doc.views.get(schema, {}).get(recipient_kind)  # type: ignore[call-overload]
        if rule is None:
            return View(body=body)
        touched = set(rule.remove) | set(rule.keep) | set(rule.where) | set(rule.consent)
        if touched.isdisjoint(body):
            return View(body=body)
        reduced = copy.deepcopy(body)
        removed: list[str] = []
        consent_missing: list[str] = []
        for name in rule.remove:
            if name in reduced:
                del reduced[name]
                removed.append(name)
        for name, keys in rule.keep.items():
            value = reduced.get(name)
            if isinstance(value, dict):
                for key in sorted(set(value) - set(keys)):
                    del value[key]
                    removed.append(f"{name}.{key}")
        for name, match in rule.where.items():
            items = reduced.get(name)
            if isinstance(items, list):
                kept = []
                for index, item in enumerate(items):
                    if isinstance(item, dict) and all(item.get(k) == v for k, v in match.items()):
                        kept.append(item)
                    else:
                        removed.append(f"{name}[{index}]")
                reduced[name] = kept
        for name, scope in rule.consent.items():
            if name in reduced and scope not in consents:
                del reduced[name]
                removed.append(name)
                consent_missing.append(scope)
        return View(body=reduced, removed=removed, consent_missing=consent_missing)

    # --- continuity of care -----------------------------------------------------------

    def expectations(self, schema: str, recipient_kind: str) -> list[str]:
        expected: list[str] = self.doc.continuity.expect.get(schema, {}).get(  # type: ignore[call-overload]
            recipient_kind, []
        )
        return expected

    @property
    def deadline_days(self) -> int:
        return self.doc.continuity.deadline_days_before_release

    # --- retention --------------------------------------------------------------------

    def retention(self, schema: str) -> tuple[RetentionRule, RetentionRule]:
        """(rule, fallback): the fallback applies while the rule's anchor date is unknown."""
        rule = self.doc.retention.schemas.get(schema, self.doc.retention.default)
        return rule, self.doc.retention.fallback


def _remove_path(node: object, parts: list[str], prefix: str, removed: list[str]) -> None:
    """Remove the field at a dotted path (`*`: every item of an array) from `node`,
    naming each removal (`resettlement[0].notes`)."""
    head, rest = parts[0], parts[1:]
    if head == "*":
        if isinstance(node, list):
            for index, item in enumerate(node):
                where = f"{prefix}[{index}]"
                if rest:
                    _remove_path(item, rest, where, removed)
        return
    if not isinstance(node, dict) or head not in node:
        return
    where = f"{prefix}.{head}" if prefix else head
    if rest:
        _remove_path(node[head], rest, where, removed)
    else:
        del node[head]
        removed.append(where)
