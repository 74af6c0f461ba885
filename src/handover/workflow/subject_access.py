"""Subject access (LED Art 14): what this node holds for one case, in one export.

`SubjectAccess.export` gathers, for a case: the case record, every packet held
(received: its origin; sent: its recipients, the fields disclosed and those
withheld by minimisation, the consent relied on), the purposes and recipients
from the audit log, retention dates, restrictions and consent. A restricted
item is listed without its content and without the reason for its
restriction; an item an admin decided to withhold (Art 15, `withhold`) is
left out; third-party data is summarised and staff are named by role
(workflow/subject_rules.py); an erased item is listed as erased. The export is itself a
`consultation` in the audit log, with the operator's justification.

`render_markdown` turns an export into a report written for the data subject
and a caseworker reading it together.

    web/subject.py (GET /api/v1/cases/{ref}/export)  ->  SubjectAccess.export
    nodecli `handover export subject`  ->  that route  ->  render_markdown
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from handover.protocol.canonical import cj_loads
from handover.protocol.errors import EncodingError
from handover.protocol.timeutil import Clock
from handover.store import attachments as attachment_store
from handover.store import cases as case_store
from handover.store import legal as legal_store
from handover.store import subject as subject_store
from handover.store.attachments import PacketRead, StreamRow
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database
from handover.store.subject import ReceivedRecord, SentRecord
from handover.workflow.access import require_justification, require_staff
from handover.workflow.cases import CASE_REF_MAX, Cases
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.policy import Policy
from handover.workflow.ports import Peers
from handover.workflow.subject_rules import (
    Staff,
    SubjectSettings,
    check_withholding,
    shown_body,
    statements,
)
from handover.workflow.vault import Vault

if TYPE_CHECKING:
    from handover.workflow.access import Operator

EXPORT_FORMAT = "handover/subject-export/1"
PURPOSE = "subject access request"
# The `action` of the `alteration` entry recording an Art 15 decision to withhold.
WITHHOLD_ACTION = "withhold_from_subject_access"
# Audit operations whose justification is a purpose the data was used for.
PURPOSE_OPS = ("disclosure", "consultation")


class SubjectAccess:
    def __init__(
        self,
        *,
        node: str,
        kind: str,
        db: Database,
        writer: AuditWriter,
        policy: Policy,
        peers: Peers,
        vault: Vault,
        cases: Cases,
        clock: Clock,
        settings: SubjectSettings | None = None,
    ) -> None:
        self.settings = settings or SubjectSettings()
        self.node = node
        self.kind = kind
        self.db = db
        self.writer = writer
        self.policy = policy
        self.peers = peers
        self.vault = vault
        self.cases = cases
        self.clock = clock

    async def export(self, operator: Operator, ref: str, justification: object) -> dict[str, Any]:
        """Everything this node holds for the case `ref` (shared reference or local id).

        Raises:
            RequestRefused: `justification_required` or `bad_request`;
                `not_found` for an unknown case.
            BodyUnavailable: a stored body cannot be decrypted.
        """
        require_staff(operator)
        why = require_justification(justification, self.policy.purposes)
        if not ref or len(ref) > CASE_REF_MAX:
            raise RequestRefused(ErrorCode.BAD_REQUEST, "a case reference is 1 to 64 characters")
        case_ref = await self.cases.resolve(ref)
        async with self.db.connection() as conn:
            case = await case_store.get(conn, case_ref)
            received = await subject_store.received(conn, case_ref)
            sent = await subject_store.sent(conn, case_ref)
            entries = await subject_store.audit_entries(conn, case_ref)
            consents = await subject_store.consents(conn, case_ref)
            # Art 15: items (or their restriction's existence) an admin decided to withhold.
            left_out = {w.pid for w in await legal_store.withholdings(conn, case_ref)}
            staff = Staff(await legal_store.operator_roles(conn), self.settings)
            pids = [r.pid for r in received] + [r.pid for r in sent]
            streams = await attachment_store.of_packets(conn, pids)
            reads = await attachment_store.reads_of_packets(conn, pids)
        attachments = self._attachment_lists(streams, reads, staff)
        assert case is not None  # resolve() found it
        received = [r for r in received if r.pid not in left_out]
        sent = [s for s in sent if s.pid not in left_out]
        log = [_parse_entry(seq, raw) for seq, raw in entries]
        log = [e for e in log if e.get("pid") not in left_out]
        export: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "node": self.node,
            "agency_kind": self.kind,
            "case": {
                "case_ref": case_ref,
                "local_id": case.local_id,
                "created_at": case.created_at,
                "updated_at": case.updated_at,
                "release_date": case.release_date,
                "supervision_end": case.supervision_end,
            },
            "received": [self._received_item(r) for r in received],
            "sent": [self._sent_item(r, staff) for r in sent],
            "purposes": _purposes(log, staff),
            "recipients": self._recipients(log, sent, staff),
            "consents": [
                {
                    "scope": c.scope,
                    "state": c.state,
                    "consent_id": c.consent_id,
                    "basis": c.basis,
                    "pid": c.pid,
                    "author": c.author,
                    "recorded_at": c.recorded_at,
                }
                for c in consents
            ],
        }
        export.update(statements(self.settings))
        items = export["received"] + export["sent"]
        for shown_item in items:
            # Attachments are listed (never their content) where the body is shown.
            if "body" in shown_item and shown_item["pid"] in attachments:
                shown_item["attachments"] = attachments[shown_item["pid"]]
        # Art 25: the names of the fields shown, per packet; restricted and erased
        # packets are listed without content.
        shown = {p["pid"]: sorted(p["body"]) for p in items if "body" in p}
        withheld = [p["pid"] for p in items if "body" not in p]

        async def job(conn: Connection, appender: Appender) -> tuple[int, int]:
            position = appender.append(
                "consultation",
                case_ref=case_ref,
                purpose=PURPOSE,
                shown=shown or None,
                withheld=withheld or None,
                left_out=sorted(left_out) or None,
                operator=operator.name,
                on_behalf_of=operator.on_behalf_of,
                org=self.node,
                justification=why,
            )
            return position.seq, self.clock()

        seq, at = await self.writer.run(job)
        export["export"] = {
            "at": at,
            "operator": staff(operator.name),
            "purpose": PURPOSE,
            "justification": why,
            "audit_seq": seq,
        }
        return export

    async def withhold(
        self,
        operator: Operator,
        ref: str,
        *,
        pid: object,
        what: object,
        ground: object,
        review_on: object,
        justification: object,
    ) -> dict[str, Any]:
        """Record an admin's Art 15 decision to leave an item, or the existence of its
        restriction, out of this case's subject access exports (logged).

        Raises:
            RequestRefused: `bad_request` naming the member; `not_found` for a
                case, or a packet this node does not hold for it.
        """
        why = require_justification(justification, self.policy.purposes)
        now = self.clock()
        today = dt.datetime.fromtimestamp(now / 1000, dt.UTC).date().isoformat()
        check_withholding(what, ground, review_on, today)
        if not isinstance(pid, str) or not pid:
            raise RequestRefused(ErrorCode.BAD_REQUEST, "'pid' names a packet held for the case")
        case_ref = await self.cases.resolve(ref)
        async with self.db.connection() as conn:
            held = {r.pid for r in await subject_store.received(conn, case_ref)}
            held |= {s.pid for s in await subject_store.sent(conn, case_ref)}
        if pid not in held:
            raise RequestRefused(ErrorCode.NOT_FOUND, "this node holds no such packet for the case")
        decision = legal_store.Withholding(
            case_ref, pid, str(what), str(ground), str(review_on), operator.name, now
        )

        async def job(conn: Connection, appender: Appender) -> None:
            await legal_store.withhold(conn, decision)
            appender.append(
                "alteration",
                action=WITHHOLD_ACTION,
                pid=pid,
                case_ref=case_ref,
                what=decision.what,
                ground=decision.ground,
                review_on=decision.review_on,
                operator=operator.name,
                org=self.node,
                justification=why,
            )

        await self.writer.run(job)
        return _withholding_json(decision)

    async def withholdings(self, ref: str) -> list[dict[str, Any]]:
        """The Art 15 decisions of a case; `review_due` once their review date has come
        (a decision holds until an admin records another)."""
        case_ref = await self.cases.resolve(ref)
        today = dt.datetime.fromtimestamp(self.clock() / 1000, dt.UTC).date().isoformat()
        async with self.db.connection() as conn:
            rows = await legal_store.withholdings(conn, case_ref)
        return [_withholding_json(w, today) for w in rows]

    # --- one item per packet held ---------------------------------------------------

    def _retention_rule(self, schema: str) -> dict[str, Any]:
        rule, fallback = self.policy.retention(schema)
        return {
            "anchor": rule.anchor,
            "months": rule.months,
            "fallback": {"anchor": fallback.anchor, "months": fallback.months},
        }

    def _content(self, item: dict[str, Any], row: ReceivedRecord | SentRecord) -> dict[str, Any]:
        """Add the state of the item's content, and the body when it may be shown."""
        item["erased"] = row.erased_at is not None or row.body_box is None
        item["erased_at"] = row.erased_at
        # The restriction's reason is never shown to the subject: it can tip them
        # off (an evidence preservation order, who asked for it).
        item["restricted"] = row.restricted is not None
        if not item["erased"] and not item["restricted"]:
            assert row.body_box is not None
            item["body"] = shown_body(
                self.vault.open(row.pid, row.body_box, row.data_key), self.settings
            )
        return item

    def _attachment_lists(
        self, streams: list[StreamRow], reads: list[PacketRead], staff: Staff
    ) -> dict[str, list[dict[str, Any]]]:
        """Per pid: each attachment's name, type and size, and who read it when
        (staff by role, as everywhere in an export)."""
        seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in reads:
            seen.setdefault((r.pid, r.aid), []).append({"operator": staff(r.operator), "at": r.at})
        out: dict[str, list[dict[str, Any]]] = {}
        for s in streams:
            if s.pid is None or s.item_box is None:
                continue
            item = self.vault.open(s.pid, s.item_box, None)
            out.setdefault(s.pid, []).append(
                {
                    "aid": s.aid,
                    "name": item.get("name"),
                    "type": item.get("type"),
                    "size": item.get("size"),
                    "seen_by": seen.get((s.pid, s.aid), []),
                }
            )
        return out

    def _received_item(self, row: ReceivedRecord) -> dict[str, Any]:
        item = {
            "pid": row.pid,
            "schema": row.schema_id,
            "origin": {"node": row.sender, "kind": self.peers.kind(row.sender)},
            "issued_at": row.iat,
            "received_at": row.received_at,
            "review_at": row.review_at,
            "retention_rule": self._retention_rule(row.schema_id),
            "rectified_by": row.rectified_by,
        }
        return self._content(item, row)

    def _sent_item(self, row: SentRecord, staff: Staff) -> dict[str, Any]:
        item = {
            "pid": row.pid,
            "schema": row.schema_id,
            "sent_at": row.created_at,
            "operator": staff(row.operator),
            "recipients": [
                {
                    "node": d.node,
                    "kind": self.peers.kind(d.node),
                    "status": d.status,
                    "reason": d.reason,
                    "finished_at": d.finished_at,
                }
                for d in row.deliveries
            ],
            "fields": list(row.fields or []),
            "withheld": list(row.removed or []),
            "consents": list(row.consents or []),
            "review_at": row.review_at,
            "retention_rule": self._retention_rule(row.schema_id),
        }
        return self._content(item, row)

    def _recipients(
        self, log: list[dict[str, Any]], sent: list[SentRecord], staff: Staff
    ) -> list[dict[str, Any]]:
        """One line per (disclosure, recipient) from the disclosure log, with the
        delivery state this node holds for it."""
        status: dict[tuple[Any, Any], str] = {
            (s.pid, d.node): d.status for s in sent for d in s.deliveries
        }
        out = []
        for entry in log:
            if entry.get("op") != "disclosure":
                continue
            for node in entry.get("to", []):
                out.append(
                    {
                        "node": node,
                        "kind": self.peers.kind(node),
                        "pid": entry.get("pid"),
                        "schema": entry.get("schema"),
                        "at": entry.get("at"),
                        "fields": entry.get("fields", []),
                        "withheld": entry.get("removed", []),
                        "consents": entry.get("consents", []),
                        "operator": staff(entry.get("operator")),
                        "justification": entry.get("justification"),
                        "status": status.get((entry.get("pid"), node)),
                        "audit_seq": entry["seq"],
                    }
                )
        return out


def _parse_entry(seq: int, raw: bytes) -> dict[str, Any]:
    try:
        entry = cj_loads(raw)
    except EncodingError:
        entry = None
    if not isinstance(entry, dict):  # `audit verify` names such an entry; list it as unreadable
        return {"seq": seq, "op": "unreadable"}
    return entry


def _purposes(log: list[dict[str, Any]], staff: Staff) -> list[dict[str, Any]]:
    return [
        {
            "op": e["op"],
            "at": e.get("at"),
            "justification": e.get("justification"),
            "purpose": e.get("purpose"),
            "pid": e.get("pid"),
            "schema": e.get("schema"),
            "counterpart": e.get("counterpart"),
            "to": e.get("to"),
            "operator": staff(e.get("operator")),
            "audit_seq": e["seq"],
        }
        for e in log
        if e.get("op") in PURPOSE_OPS
    ]


def _withholding_json(w: legal_store.Withholding, today: str | None = None) -> dict[str, Any]:
    due = {} if today is None else {"review_due": w.review_on <= today}
    return {
        **due,
        "case_ref": w.case_ref,
        "pid": w.pid,
        "what": w.what,
        "ground": w.ground,
        "review_on": w.review_on,
        "decided_by": w.decided_by,
        "decided_at": w.decided_at,
    }
