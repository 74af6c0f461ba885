"""The handover workflow on top of the secure pipe: sharing policy and
minimisation, cases, consent, continuity-of-care expectations and
responsibility agreements.

The node's `Service` calls in at four points, each inside the audit writer's
transaction so the workflow state and the audit entry commit together:

    plan(...)           before sealing: policy, consent, one view per recipient kind
    after_send(...)     cases, consent given/withdrawn, expectations, agreements
    check_receive(...)  the receiver's policy (step 9 of the receive checks)
    after_receive(...)  the same bookkeeping for what arrived

`after_send` and `after_receive` return the context that the node then hands
to the hooks it was built with (retention, rectification).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from handover.protocol.canonical import cj_dumps
from handover.protocol.errors import RejectCode, Rejected, SchemaInvalid, UnknownSchema
from handover.protocol.timeutil import DAY_MS, Clock, date_time
from handover.store import cases as case_store
from handover.store import continuity as continuity_store
from handover.store import events as event_store
from handover.store import listings
from handover.store.auditlog import Appender
from handover.store.db import Connection, Deferred
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.policy import Policy
from handover.workflow.ports import Peers
from handover.workflow.schemas import SchemaRegistry

log = structlog.get_logger(__name__)

RELEASE_NOTICE = "handover/release-notice/1"
CONSENT_RECORD = "handover/consent-record/1"
AGREEMENT = "handover/responsibility-agreement/1"
SUPERVISION_END = "handover/supervision-end/1"


@dataclass
class PlannedPacket:
    """One sealed packet of a submission: a view and the recipients that share it."""

    recipients: list[str]
    kinds: list[str]
    body: dict[str, Any]
    removed: list[str] = field(default_factory=list)
    consents: list[str] = field(default_factory=list)


# Hooks the node runs for sent/received packets (retention, rectification).
SentHook = Callable[[Connection, "SentContext"], Awaitable[None]]
ReceivedHook = Callable[[Connection, "ReceivedContext"], Awaitable[None]]
# Extra step-9 checks (rectification: a notice only from the target's sender).
ReceiveCheck = Callable[[Connection, str, str, dict[str, Any]], Awaitable[Rejected | None]]


@dataclass(frozen=True)
class SentContext:
    pid: str
    schema: str
    case_ref: str | None
    body: dict[str, Any]
    recipients: list[str]
    now: int
    # True when this packet set one of its case's key dates (release, supervision end):
    # what the node holds for the case may fall due for review at another time.
    dates_changed: bool = False
    defer: Deferred | None = None


@dataclass(frozen=True)
class ReceivedContext:
    pid: str
    schema: str
    case_ref: str | None
    body: dict[str, Any]
    sender: str
    now: int
    # The receive job's appender, for hooks that log what they change (rectification).
    appender: Appender | None = None
    # True when this packet set one of its case's key dates (release, supervision end).
    dates_changed: bool = False
    defer: Deferred | None = None


def case_ref_of(body: dict[str, Any]) -> str | None:
    """The body's case reference, if it has a well-formed one."""
    value = body.get("case_ref")
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


def date_ms(value: object) -> int | None:
    """Milliseconds at 00:00 UTC of a YYYY-MM-DD date, or None."""
    if not isinstance(value, str):
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def release_date(body: dict[str, Any]) -> str | None:
    value = body.get("confirmed_release_date") or body.get("expected_release_date")
    return value if isinstance(value, str) else None


class Workflow:
    def __init__(
        self,
        *,
        node: str,
        kind: str,
        policy: Policy,
        peers: Peers,
        registry: SchemaRegistry,
        clock: Clock,
    ) -> None:
        self.node = node
        self.kind = kind
        self.policy = policy
        self.peers = peers
        self.registry = registry
        self.clock = clock
        # Schemas that can answer a continuity-of-care expectation.
        self._answers = {
            answer
            for kinds in policy.doc.continuity.expect.values()
            for answers in kinds.values()
            for answer in answers
        }

    def kind_of(self, node: str) -> str | None:
        return self.peers.kind(node)

    # --- sending ------------------------------------------------------------------------

    async def consents(self, conn: Connection, case_ref: str | None, node: str) -> set[str]:
        """The consent scopes in force today for this case's data at `node` (Art 8):
        only consents whose `recipients` include it, chosen by their own dates."""
        if case_ref is None or not self.policy.uses_consent:
            return set()
        today = dt.datetime.fromtimestamp(self.clock() / 1000, dt.UTC).date().isoformat()
        return await case_store.scopes_in_force(conn, case_ref, node, today)

    async def plan(
        self,
        conn: Connection,
        *,
        to: list[str],
        schema: str,
        body: dict[str, Any],
        minimise: bool,
    ) -> list[PlannedPacket]:
        """Apply the sharing policy to a submission: one packet per distinct view.

        Raises:
            RequestRefused: `not_permitted` naming the field and recipient (or
                the schema and recipient kind), `consent_required` naming the scope.
        """
        case_ref = body.get("case_ref") if isinstance(body.get("case_ref"), str) else None
        recipients = list(to)
        if schema == CONSENT_RECORD and body.get("state") == "WITHDRAWN" and case_ref:
            # Everyone who received data under this consent is told it is withdrawn.
            earlier = await case_store.recipients_under_consent(conn, case_ref, body["scope"])
            recipients += [n for n in earlier if n not in recipients and n != self.node]
        views: dict[bytes, PlannedPacket] = {}
        for node in recipients:
            kind = self.kind_of(node)
            if kind is None:
                raise RequestRefused(
                    ErrorCode.NOT_PERMITTED,
                    f"the agency kind of {node} is unknown: pin it with"
                    " `handover peers add --kind`",
                )
            if not self.policy.may_send(schema, self.kind, kind):
                raise RequestRefused(
                    ErrorCode.NOT_PERMITTED,
                    f"the sharing policy does not let a {self.kind} send {schema}"
                    f" to a {kind} ({node})",
                )
            used: list[str] = []
            consents: set[str] = set()
            if self.policy.consent_relevant(schema, kind, body):
                consents = await self.consents(conn, case_ref, node)
            scope = self.policy.packet_consent(schema, kind)
            if scope is not None:
                if scope not in consents:
                    raise RequestRefused(
                        ErrorCode.CONSENT_REQUIRED,
                        f"sending {schema} to {node} ({kind}) needs {scope} consent for case"
                        f" {case_ref}, and none is in force",
                    )
                used.append(scope)
            view = self.policy.view(schema, kind, body, consents, self.special_fields(schema))
            if view.removed and not minimise:
                missing = (
                    f" (needs {view.consent_missing[0]} consent)" if view.consent_missing else ""
                )
                raise RequestRefused(
                    ErrorCode.NOT_PERMITTED,
                    f"field {view.removed[0]} may not be sent to {node} ({kind}){missing};"
                    ' remove it or submit with "minimise": true',
                )
            used += sorted(
                {s for f, s in self._field_consents(schema, kind).items() if f in view.body}
            )
            if view.removed:
                try:
                    self.registry.validate(schema, view.body)
                except (SchemaInvalid, UnknownSchema) as exc:
                    raise RequestRefused(
                        ErrorCode.NOT_PERMITTED,
                        f"the view of this {schema} for {node} ({kind}) would not be valid: {exc}",
                    ) from exc
            key = cj_dumps(view.body)
            planned = views.get(key)
            if planned is None:
                views[key] = PlannedPacket(
                    [node], [kind], view.body, list(view.removed), sorted(set(used))
                )
            else:
                planned.recipients.append(node)
                planned.kinds.append(kind)
                planned.consents = sorted(set(planned.consents) | set(used))
        return list(views.values())

    def special_fields(self, schema: str) -> list[str]:
        """The schema's special-category fields (Art 10), outermost only: `risk_detail`,
        `resettlement.*.notes` (from the `x-sensitivity` markers of schemas/)."""
        try:
            marked = self.registry.sensitive_fields(schema)
        except UnknownSchema:
            return []
        special = sorted(p for p, level in marked.items() if level == "special-category")
        return [p for p in special if not any(p.startswith(q + ".") for q in special if q != p)]

    def deadline_for(self, body: dict[str, Any]) -> int | None:
        """When answers to a packet with this body are due: the policy's days before
        its release date (None without a release date)."""
        due = date_ms(release_date(body))
        return None if due is None else due - self.policy.deadline_days * DAY_MS

    def _field_consents(self, schema: str, kind: str) -> dict[str, str]:
        rule = self.policy.doc.views.get(schema, {}).get(kind)  # type: ignore[call-overload]
        return {} if rule is None else dict(rule.consent)

    async def after_send(
        self,
        conn: Connection,
        *,
        pid: str,
        schema: str,
        body: dict[str, Any],
        recipients: list[str],
        now: int,
        defer: Deferred | None = None,
    ) -> SentContext | None:
        """Case bookkeeping for a sent packet; the context for the sent hooks, or
        None for a packet without a case."""
        case_ref = body.get("case_ref") if isinstance(body.get("case_ref"), str) else None
        if case_ref is None:
            return None
        changed = await self._record(
            conn, case_ref, pid, schema, body, author=self.node, now=now, defer=defer
        )
        if schema in self.policy.doc.continuity.expect:
            deadline = self.deadline_for(body)
            if deadline is not None:
                for node in recipients:
                    kind = self.kind_of(node)
                    expected = self.policy.expectations(schema, kind) if kind else []
                    if expected:
                        await continuity_store.expect(
                            conn,
                            pid=pid,
                            node=node,
                            case_ref=case_ref,
                            schemas=expected,
                            deadline=deadline,
                            now=now,
                            defer=defer,
                        )
        if schema in self._answers:
            # The receiving side of continuity of care: what we owed them is answered.
            reply_to = body.get("in_reply_to")
            await listings.answer(
                conn,
                case_ref=case_ref,
                to=recipients,
                schema=schema,
                pid=pid,
                now=now,
                in_reply_to=reply_to if isinstance(reply_to, str) else None,
            )
        return SentContext(pid, schema, case_ref, body, recipients, now, changed, defer)

    # --- receiving ----------------------------------------------------------------------

    async def check_receive(
        self, conn: Connection, *, sender: str, schema: str, body: dict[str, Any]
    ) -> Rejected | None:
        """The receiver's policy: step 9 of the receive checks (a signed rejection)."""
        sender_kind = self.kind_of(sender)
        if sender_kind is None or not self.policy.may_send(schema, sender_kind, self.kind):
            return Rejected(RejectCode.NOT_PERMITTED, f"{sender_kind} may not send {schema}")
        case_ref = body.get("case_ref") if isinstance(body.get("case_ref"), str) else None
        consents: set[str] = set()
        if self.policy.consent_relevant(schema, self.kind, body):
            consents = await self.consents(conn, case_ref, self.node)
        scope = self.policy.packet_consent(schema, self.kind)
        if scope is not None and scope not in consents:
            return Rejected(RejectCode.CONSENT_REQUIRED, f"{scope} consent not in force")
        view = self.policy.view(schema, self.kind, body, consents, self.special_fields(schema))
        if view.removed:
            if len(view.consent_missing) == len(view.removed):
                return Rejected(RejectCode.CONSENT_REQUIRED, f"fields {view.removed} need consent")
            return Rejected(RejectCode.NOT_PERMITTED, f"fields {view.removed} not permitted")
        return None

    async def after_receive(
        self,
        conn: Connection,
        *,
        pid: str,
        sender: str,
        schema: str,
        body: dict[str, Any],
        now: int,
        defer: Deferred | None = None,
        appender: Appender | None = None,
    ) -> ReceivedContext | None:
        """Case bookkeeping for an accepted packet; the context for the received
        hooks, or None for a packet without a case."""
        case_ref = body.get("case_ref") if isinstance(body.get("case_ref"), str) else None
        if case_ref is None:
            return None
        changed = await self._record(
            conn, case_ref, pid, schema, body, author=sender, now=now, defer=defer
        )
        owed = self.policy.expectations(schema, self.kind)
        deadline = self.deadline_for(body) if owed else None
        if owed and deadline is not None:
            # The sender's node expects these answers from us by then (its `expectations`).
            await listings.owe(
                conn,
                sender=sender,
                pid=pid,
                case_ref=case_ref,
                schemas=owed,
                deadline=deadline,
                now=now,
                defer=defer,
            )
        satisfied: list[str] = []
        if schema in self._answers:
            reply_to = body.get("in_reply_to")
            satisfied = await continuity_store.satisfy(
                conn,
                case_ref=case_ref,
                node=sender,
                schema=schema,
                pid=pid,
                now=now,
                in_reply_to=reply_to if isinstance(reply_to, str) else None,
            )
        if satisfied:
            await event_store.add(
                conn,
                defer,
                "acknowledgement",
                at=now,
                pid=pid,
                case_ref=case_ref,
                node=sender,
                schema=schema,
            )
        if satisfied:
            log.info("expectation_satisfied", case=case_ref, by=pid, expectations=satisfied)
        return ReceivedContext(pid, schema, case_ref, body, sender, now, appender, changed, defer)

    # --- shared bookkeeping -------------------------------------------------------------

    async def _record(
        self,
        conn: Connection,
        case_ref: str,
        pid: str,
        schema: str,
        body: dict[str, Any],
        *,
        author: str,
        now: int,
        defer: Deferred | None = None,
    ) -> bool:
        """Case bookkeeping; True if this packet sets one of the case's key dates."""
        released = release_date(body) if schema == RELEASE_NOTICE else None
        ended = body.get("end_date") if schema == SUPERVISION_END else None
        await case_store.touch(
            conn,
            case_ref=case_ref,
            pid=pid,
            now=now,
            release_date=released,
            supervision_end=ended,
            defer=defer,
        )
        changed = released is not None or ended is not None
        if schema == CONSENT_RECORD:
            await case_store.add_consent(
                conn,
                case_ref=case_ref,
                scope=body["scope"],
                state=body["state"],
                consent_id=body["consent_id"],
                basis=body["basis"],
                pid=pid,
                author=author,
                now=now,
                recipients=body.get("recipients"),
                effective_on=(
                    body.get("withdrawn_at") or body["given_at"]
                    if body["state"] == "WITHDRAWN"
                    else body["given_at"]
                ),
                expires_on=body.get("expires_on"),
            )
            await event_store.add(
                conn,
                defer,
                "consent",
                at=now,
                pid=pid,
                case_ref=case_ref,
                node=author,
                schema=schema,
            )
        elif schema == AGREEMENT:
            await continuity_store.record_agreement(
                conn,
                case_ref=case_ref,
                agreement_id=body["agreement_id"],
                revision=body["revision"],
                pid=pid,
                author=author,
                parties=[p["node"] for p in body["parties"]],
                valid_from=body["valid_from"],
                valid_to=body.get("valid_to"),
                now=now,
            )
            # An acknowledgement counts only when the party signed it itself: the
            # author of this packet acknowledges by sending it. What the body
            # says of other parties is their word as reported by the author,
            # and is recorded when their own packets arrive.
            await continuity_store.acknowledge_agreement(
                conn,
                case_ref=case_ref,
                agreement_id=body["agreement_id"],
                revision=body["revision"],
                node=author,
                acknowledged_at=date_time(now),
                pid=pid,
            )
            if author != self.node:
                await event_store.add(
                    conn,
                    defer,
                    "acknowledgement",
                    at=now,
                    pid=pid,
                    case_ref=case_ref,
                    node=author,
                    schema=schema,
                )
        return changed
