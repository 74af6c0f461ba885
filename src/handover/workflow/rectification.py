"""Art 7(3) / Art 16 rectification, the sender's side: a sender corrects, erases
or restricts a packet it sent, and tells every node it disclosed the packet to.

On the sender (`rectify`): the recipients are the target's deliveries that hold
a signed `accepted` receipt (the disclosure record). Each gets a
`handover/rectification-notice/1` through the normal submission path (policy,
`disclosure` entry, outbox, delivery); for RECTIFY the corrected body is
reduced to the recipient kind's policy view, exactly as a submission would be,
so a rectification never discloses more than sending the corrected packet
would. The sender's own copy is changed too, and the rectification is recorded
per recipient; the notice's delivery (its signed receipt) is the recipient's
acknowledgement (`status`). Changing a held copy, and the receiver's side of a
notice, are in `corrections.py`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog

from handover.protocol.canonical import cj_dumps
from handover.protocol.errors import HandoverError, SchemaInvalid, UnknownSchema
from handover.protocol.timeutil import Clock
from handover.store import attachments as attachment_store
from handover.store import erasure as erasure_store
from handover.store import lifecycle as lifecycle_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database
from handover.store.lifecycle import HeldCopy
from handover.store.receipts import receipt_json
from handover.workflow.access import NODE, Operator, require_justification, require_staff
from handover.workflow.corrections import RECTIFICATION, Corrections
from handover.workflow.engine import Workflow
from handover.workflow.errors import BodyUnavailable, ErrorCode, RequestRefused
from handover.workflow.ports import Peers, Submitter

log = structlog.get_logger(__name__)

ACTIONS = ("RECTIFY", "ERASE", "RESTRICT", "LIFT")


def _today(now: int) -> str:
    return dt.datetime.fromtimestamp(now / 1000, dt.UTC).date().isoformat()


class Rectification:
    def __init__(
        self,
        *,
        db: Database,
        writer: AuditWriter,
        workflow: Workflow,
        peers: Peers,
        corrections: Corrections,
        submitter: Submitter,
        clock: Clock,
    ) -> None:
        self.db = db
        self.writer = writer
        self.workflow = workflow
        self.policy = workflow.policy
        self.registry = workflow.registry
        self.peers = peers
        self.corrections = corrections
        self.submitter = submitter
        self.vault = corrections.vault
        self.clock = clock
        notice = self.registry.document(RECTIFICATION)["properties"]
        self.reasons: list[str] = list(notice["reason"]["enum"])
        self.target_schemas: frozenset[str] = frozenset(notice["target_schema"]["enum"])

    async def rectify(
        self,
        operator: Operator,
        pid: str,
        *,
        action: object,
        reason: object,
        justification: object,
        explanation: object = None,
        corrected_body: object = None,
        quality: object = None,
        audit: dict[str, Any] | None = None,
        answers: object = None,
        note: str | None = None,
        attachments: object = None,
    ) -> dict[str, Any]:
        """Rectify, erase or restrict a packet this node sent, and notify its recipients.

        ERASE and RESTRICT cancel the packet's pending deliveries. `audit` adds
        members to the audit entry of the local change (a review's decision);
        `note` is the own copy's restriction reason (a review's, default `reason`).

        Raises:
            RequestRefused: `bad_request` for a malformed request; `not_found`
                for a packet this node did not send; `delivery_pending`;
                `erased`; `schema_invalid`, `not_permitted`, `consent_required`
                or `unknown_recipient` for a corrected body or recipient refused.
            BodyUnavailable: the held body cannot be decrypted.
        """
        require_staff(operator)
        why = require_justification(justification, self.workflow.policy.purposes)
        if action not in ACTIONS:
            raise RequestRefused(ErrorCode.BAD_REQUEST, f"'action' is one of {', '.join(ACTIONS)}")
        if reason not in self.reasons:
            raise RequestRefused(
                ErrorCode.BAD_REQUEST, f"'reason' is one of {', '.join(self.reasons)}"
            )
        if answers is not None and not isinstance(answers, str):
            raise RequestRefused(
                ErrorCode.BAD_REQUEST, "'answers' is a rectification request's pid"
            )
        if explanation is not None and not isinstance(explanation, str):
            raise RequestRefused(ErrorCode.BAD_REQUEST, "'explanation' is a string")
        if quality is not None and not isinstance(quality, dict):
            raise RequestRefused(ErrorCode.BAD_REQUEST, "'quality' is an object")
        if action == "RECTIFY" and not isinstance(corrected_body, dict):
            raise RequestRefused(
                ErrorCode.BAD_REQUEST, "RECTIFY needs 'corrected_body', a JSON object"
            )
        if action != "RECTIFY" and corrected_body is not None:
            raise RequestRefused(ErrorCode.BAD_REQUEST, "'corrected_body' is only for RECTIFY")
        if attachments is not None and (
            action != "RECTIFY"
            or not isinstance(attachments, list)
            or not attachments
            or not all(isinstance(a, str) for a in attachments)
        ):
            raise RequestRefused(
                ErrorCode.BAD_REQUEST,
                "'attachments' (RECTIFY only) lists the ids that replace the packet's attachments",
            )
        async with self.db.connection() as conn:
            target = await lifecycle_store.held_one(conn, "sent", pid, None)
            deliveries = await lifecycle_store.deliveries(conn, pid)
            tried = await erasure_store.tried_nodes(conn, pid)
            open_requests = {
                r.pid for r in await erasure_store.requests_for(conn, pid) if r.answered_by is None
            }
            # Per recipient: a consent covers only the nodes it names (Art 8).
            consents = {
                d.node: await self.workflow.consents(conn, target.case_ref, d.node)
                for d in deliveries
                if target is not None
            }
        if target is None:
            raise RequestRefused(ErrorCode.NOT_FOUND, "this node sent no packet with that pid")
        if answers is not None and answers not in open_requests:
            raise RequestRefused(
                ErrorCode.NOT_FOUND, "no open rectification request about this packet has that pid"
            )
        if target.erased_at is not None:
            raise RequestRefused(
                ErrorCode.ERASED, "the content of this packet has already been erased"
            )
        if target.schema_id not in self.target_schemas or target.case_ref is None:
            raise RequestRefused(
                ErrorCode.NOT_PERMITTED, f"a {target.schema_id} cannot be rectified"
            )
        if action == "LIFT" and target.restricted is None:
            raise RequestRefused(ErrorCode.NOT_RESTRICTED, "this packet is not restricted")
        if target.pending and action == "RECTIFY":
            raise RequestRefused(
                ErrorCode.DELIVERY_PENDING,
                "a delivery of this packet is still pending: wait until it is delivered or"
                " expired (`handover status PID --wait`), then rectify it",
            )
        # ERASE and RESTRICT cancel pending deliveries (in the same transaction as
        # the local change); a node whose delivery was already attempted may hold
        # the packet, so it is told too (it refuses the notice if it does not).
        holders = sorted(
            {d.node for d in deliveries if d.status == "delivered"}
            | (set(tried) if action in ("ERASE", "RESTRICT") else set())
        )
        now = self.clock()
        base: dict[str, Any] = {
            "case_ref": target.case_ref,
            "target_pid": pid,
            "target_schema": target.schema_id,
            "action": action,
            "reason": reason,
        }
        if explanation is not None:
            base["explanation"] = explanation
        views: dict[str, tuple[dict[str, Any], list[str]]] = {}
        own_copy: dict[str, Any] | None = None
        if action == "RECTIFY":
            assert isinstance(corrected_body, dict)
            # The own copy takes the first holder's view (any recipient's if none holds it).
            nodes = holders or [deliveries[0].node]
            views = self._views(target, corrected_body, nodes, consents)
            own_copy = views[nodes[0]][0]
            if quality is None:
                quality = corrected_body.get("quality")
        if quality is None and target.body_box is not None:
            # A notice carries the basis of what it corrects (Art 7(2)), never FACT by default.
            quality = self.vault.open(pid, target.body_box, target.data_key).get("quality")
        if isinstance(quality, dict):
            # Field groups belong to the target's schema, not to the notice's.
            quality = {k: v for k, v in quality.items() if k != "groups"}
        base["quality"] = quality or {
            "as_of": _today(now),
            "source_system": "handover",
            "basis": "ASSESSMENT",
        }

        # One notice per distinct body (views differ by recipient kind).
        groups: dict[bytes, tuple[dict[str, Any], list[str], list[str]]] = {}
        for node in holders:
            notice = dict(base)
            removed: list[str] = []
            if action == "RECTIFY":
                notice["corrected_body"], removed = views[node]
            group = groups.setdefault(cj_dumps(notice), (notice, [], removed))
            group[1].append(node)
        for notice, to, _removed in groups.values():
            # An erasure or restriction is not held up by a peer whose keyset
            # lapsed: its notice is kept and queued again until it goes out.
            self._check_notice(notice, to, require_keyset=action == "RECTIFY")

        async def record(conn: Connection, appender: Appender) -> int:
            rect_id = await lifecycle_store.add_rectification(
                conn,
                target_pid=pid,
                action=str(action),
                reason=str(reason),
                operator=operator.name,
                nodes=holders,
                now=now,
            )
            await self.corrections.apply(
                conn,
                appender,
                target,
                str(action),
                corrected=own_copy,
                restriction=f"{note or reason} (rectification {rect_id} of this node)",
                notice_pid=None,
                operator=operator.name,
                on_behalf_of=operator.on_behalf_of,
                justification=why,
                rectification=rect_id,
                reason=reason,
                **(audit or {}),
            )
            if answers is not None:
                await erasure_store.answer_request(conn, pid, str(answers), rect_id)
            # Each notice is kept (sealed) until its recipient acknowledges it: one
            # that cannot be queued now is queued by the maintenance sweep. (Not
            # one carrying replacement attachments: the sweep could not resend them.)
            for notice, to, _removed in groups.values() if attachments is None else ():
                kept = self.vault.seal_body(notice)
                await erasure_store.keep_notice(conn, rect_id, to, kept.box, kept.key)
            return rect_id

        rect_id: int = await self.writer.run(record)
        packets: list[dict[str, Any]] = []
        for index, (notice, to, removed) in enumerate(groups.values()):
            # Replacement attachments travel in every notice (the same streams).
            sent = await self._queue(
                operator, rect_id, notice, to, why, attachments=attachments, share=index > 0
            )
            packets += [{**p, "removed": removed} for p in sent]
        if attachments is not None:
            async with self.db.transaction() as conn:
                await attachment_store.relink_sent(conn, pid, list(attachments))
        log.info(
            "rectification_sent",
            target=pid,
            action=action,
            rectification=rect_id,
            notices=[p["pid"] for p in packets],
        )
        return {"rectification": rect_id, "target_pid": pid, "action": action, "packets": packets}

    async def _queue(
        self,
        operator: Operator,
        rect_id: int,
        notice: dict[str, Any],
        to: list[str],
        why: str,
        *,
        attachments: object = None,
        share: bool = False,
    ) -> list[dict[str, Any]]:
        """Queue a kept notice; a failure is recorded and left to the sweep."""
        extra: dict[str, Any] = {}
        if attachments is not None:
            extra = {"attachments": attachments, "share_attachments": share}
        try:
            sent = await self.submitter.submit(
                operator, to=to, schema_id=RECTIFICATION, body=notice, justification=why, **extra
            )
        except HandoverError as exc:
            error = exc.code.value if isinstance(exc, RequestRefused) else type(exc).__name__
            log.warning("rectification_notice_not_queued", rectification=rect_id, error=error)
            async with self.db.transaction() as conn:
                for node in to:
                    await erasure_store.notice_failed(conn, rect_id, node, error)
            return []
        async with self.db.transaction() as conn:
            for packet in sent:
                for node in packet["to"]:
                    await erasure_store.notice_queued(conn, rect_id, node, packet["pid"])
        return sent

    async def retry(self, limit: int = 100) -> int:
        """Maintenance: queue kept notices never queued, or whose delivery expired, again
        (one recipient at a time); forget those acknowledged. The number queued."""
        async with self.db.transaction() as conn:
            await erasure_store.drop_acknowledged_notices(conn)
            pending = await erasure_store.notices_to_queue(conn, limit)
        queued = 0
        for row in pending:
            try:
                notice = self.vault.open(
                    f"rectification {row.rectification_id}", row.notice_box, row.notice_key
                )
            except BodyUnavailable:
                log.error("rectification_notice_unreadable", rectification=row.rectification_id)
                continue
            sent = await self._queue(
                Operator(row.operator, NODE),
                row.rectification_id,
                notice,
                [row.node],
                f"rectification {row.rectification_id}: notice queued again until acknowledged",
            )
            queued += len(sent)
        if pending:
            log.info("rectification_notices_retried", due=len(pending), queued=queued)
        return queued

    def _views(
        self,
        target: HeldCopy,
        corrected: dict[str, Any],
        nodes: list[str],
        consents: dict[str, set[str]],
    ) -> dict[str, tuple[dict[str, Any], list[str]]]:
        """The corrected body each recipient may receive (its kind's policy view)."""
        try:
            self.registry.validate(target.schema_id, corrected)
        except (SchemaInvalid, UnknownSchema) as exc:
            raise RequestRefused(ErrorCode.SCHEMA_INVALID, f"the corrected body: {exc}") from exc
        if corrected.get("case_ref") != target.case_ref:
            raise RequestRefused(
                ErrorCode.SCHEMA_INVALID, "the corrected body must keep the target's case_ref"
            )
        views: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for node in nodes:
            kind = self.workflow.kind_of(node)
            if kind is None:
                raise RequestRefused(
                    ErrorCode.NOT_PERMITTED, f"the agency kind of {node} is unknown"
                )
            scope = self.policy.packet_consent(target.schema_id, kind)
            in_force = consents.get(node, set())
            if scope is not None and scope not in in_force:
                raise RequestRefused(
                    ErrorCode.CONSENT_REQUIRED,
                    f"{node} ({kind}) may receive {target.schema_id} only with {scope} consent,"
                    " which is no longer in force: ERASE or RESTRICT the packet instead",
                )
            view = self.policy.view(
                target.schema_id,
                kind,
                corrected,
                in_force,
                self.workflow.special_fields(target.schema_id),
            )
            if view.removed:
                try:
                    self.registry.validate(target.schema_id, view.body)
                except (SchemaInvalid, UnknownSchema) as exc:
                    raise RequestRefused(
                        ErrorCode.NOT_PERMITTED,
                        f"the corrected body as {node} ({kind}) may receive it would not be"
                        f" valid: {exc}",
                    ) from exc
            views[node] = (view.body, view.removed)
        return views

    def _check_notice(
        self, notice: dict[str, Any], nodes: list[str], *, require_keyset: bool = True
    ) -> None:
        """Refuse before anything changes what submitting the notice would refuse."""
        try:
            self.registry.validate(RECTIFICATION, notice)
        except (SchemaInvalid, UnknownSchema) as exc:
            raise RequestRefused(
                ErrorCode.SCHEMA_INVALID, f"the rectification notice: {exc}"
            ) from exc
        for node in nodes:
            kind = self.workflow.kind_of(node)
            if kind is None or not self.policy.may_send(RECTIFICATION, self.workflow.kind, kind):
                raise RequestRefused(
                    ErrorCode.NOT_PERMITTED, f"the sharing policy does not let us notify {node}"
                )
            if require_keyset and self.peers.keyset(node) is None:
                raise RequestRefused(
                    ErrorCode.UNKNOWN_RECIPIENT, f"{node} is not a pinned peer with a valid keyset"
                )

    async def status(self, pid: str) -> dict[str, Any]:
        """Each rectification of a sent packet and every recipient's acknowledgement.

        Raises:
            RequestRefused: `not_found` for a packet this node did not send.
        """
        async with self.db.connection() as conn:
            target = await lifecycle_store.held_one(conn, "sent", pid, None)
            rows = await lifecycle_store.rectifications_of(conn, pid)
            states = await erasure_store.notice_states(conn, pid)
            tries = {(s.rectification_id, s.node): s for s in states}
            requests = await erasure_store.requests_for(conn, pid)
        if target is None:
            raise RequestRefused(ErrorCode.NOT_FOUND, "this node sent no packet with that pid")
        items: dict[int, dict[str, Any]] = {}
        for r in rows:
            item = items.setdefault(
                r.id,
                {
                    "id": r.id,
                    "action": r.action,
                    "reason": r.reason,
                    "operator": r.operator,
                    "at": r.created_at,
                    "recipients": [],
                },
            )
            status = "not_sent" if r.notice_pid is None else r.status
            tried = tries.get((r.id, r.node))
            item["recipients"].append(
                {
                    "node": r.node,
                    "notice_pid": r.notice_pid,
                    "status": status,
                    "acknowledged": status == "delivered",
                    "receipt": receipt_json(r.receipt),
                    "reason": r.delivery_reason,
                    "finished_at": r.finished_at,
                    "attempts": 0 if tried is None else tried.attempts,
                    "last_error": None if tried is None else tried.last_error,
                }
            )
        acknowledged = all(
            rec["acknowledged"] for item in items.values() for rec in item["recipients"]
        )
        # Each node's state as of the latest rectification that reached it (Art 16(6)).
        copies: dict[str, dict[str, Any]] = {}
        for item in items.values():
            for rec in item["recipients"]:
                copies[rec["node"]] = {
                    "node": rec["node"],
                    "action": item["action"],
                    "rectification": item["id"],
                    "state": _copy_state(rec["status"]),
                }
        return {
            "pid": pid,
            "acknowledged": acknowledged,
            "rectifications": list(items.values()),
            "recipients": sorted(copies.values(), key=lambda c: str(c["node"])),
            # Inaccuracy reports from recipients (field names only; the request's
            # explanation is read like any received packet, with its consultation entry).
            "requests": [
                {
                    "pid": r.pid,
                    "from": r.sender,
                    "concern": r.concern,
                    "fields": list(r.fields),
                    "received_at": r.received_at,
                    "answered_by": r.answered_by,
                }
                for r in requests
            ],
        }


def _copy_state(status: str | None) -> str:
    """A recipient's state: `acknowledged` (its signed receipt), `refused` (a signed
    rejection), or `pending` (queued, or waiting to be queued again)."""
    if status == "delivered":
        return "acknowledged"
    if status == "rejected":
        return "refused"
    return "pending"
