"""Art 7(3) / Art 16 rectification: a sender corrects, erases or restricts a
packet it sent, and tells every node it disclosed the packet to.

On the sender (`rectify`): the recipients are the target's deliveries that hold
a signed `accepted` receipt (the disclosure record). Each gets a
`handover/rectification-notice/1` through the normal submission path (policy,
`disclosure` entry, outbox, delivery); for RECTIFY the corrected body is
reduced to the recipient kind's policy view, exactly as a submission would be,
so a rectification never discloses more than sending the corrected packet
would. The sender's own copy is changed too, and the rectification is recorded
per recipient; the notice's delivery (its signed receipt) is the recipient's
acknowledgement (`status`).

On a receiver (`check`, then `on_received`, both inside the receive
transaction): a notice is accepted only from the node that sent the target to
us, for a target we hold, with a corrected body our own policy would accept;
otherwise the receipt is a signed rejection (`not_permitted`) and nothing
changes. An accepted notice is applied in the same transaction as its receipt,
so `accepted` means applied.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import structlog

from handover import crypto
from handover.audit import Appender
from handover.canonical import cj_dumps, cj_loads
from handover.errors import ApiError, RejectCode, Rejected, SchemaInvalid, UnknownSchema
from handover.retention import ANCHOR_SCHEMAS, Held
from handover.service import require_justification
from handover.store import cases as case_store
from handover.store import lifecycle as lifecycle_store
from handover.store.db import Connection
from handover.workflow import SUPERVISION_END, ReceivedContext, release_date

if TYPE_CHECKING:
    from handover.retention import Retention
    from handover.service import Operator, Service

log = structlog.get_logger(__name__)

RECTIFICATION = "handover/rectification-notice/1"
ACTIONS = ("RECTIFY", "ERASE", "RESTRICT")


def _today(now: int) -> str:
    return dt.datetime.fromtimestamp(now / 1000, dt.UTC).date().isoformat()


class Rectification:
    def __init__(self, service: Service, retention: Retention) -> None:
        self.service = service
        self.retention = retention
        self.db = service.db
        self.writer = service.writer
        self.workflow = service.workflow
        self.policy = service.workflow.policy
        self.registry = service.registry
        self.clock = service.clock
        notice = self.registry.document(RECTIFICATION)["properties"]
        self.reasons: list[str] = list(notice["reason"]["enum"])
        self.target_schemas: frozenset[str] = frozenset(notice["target_schema"]["enum"])

    # --- the sender ------------------------------------------------------------------

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
    ) -> dict[str, Any]:
        """Rectify, erase or restrict a packet this node sent, and notify its recipients.

        Raises:
            ApiError: 400 malformed request; 404 not a packet this node sent;
                409 a delivery of it is still pending; 410 already erased;
                422 a corrected body that is invalid or changes the case, a
                recipient the policy or the directory refuses.
        """
        why = require_justification(justification)
        if action not in ACTIONS:
            raise ApiError(400, "bad_request", f"'action' is one of {', '.join(ACTIONS)}")
        if reason not in self.reasons:
            raise ApiError(400, "bad_request", f"'reason' is one of {', '.join(self.reasons)}")
        if explanation is not None and not isinstance(explanation, str):
            raise ApiError(400, "bad_request", "'explanation' is a string")
        if quality is not None and not isinstance(quality, dict):
            raise ApiError(400, "bad_request", "'quality' is an object")
        if action == "RECTIFY" and not isinstance(corrected_body, dict):
            raise ApiError(400, "bad_request", "RECTIFY needs 'corrected_body', a JSON object")
        if action != "RECTIFY" and corrected_body is not None:
            raise ApiError(400, "bad_request", "'corrected_body' is only for RECTIFY")
        async with self.db.connection() as conn:
            row = await lifecycle_store.held_one(conn, "sent", pid, None)
            deliveries = await lifecycle_store.deliveries(conn, pid)
            consents = (
                await self.workflow.consents(conn, row["case_ref"]) if row is not None else set()
            )
        if row is None:
            raise ApiError(404, "not_found", "this node sent no packet with that pid")
        target = Held.from_row(row)
        if target.erased_at is not None:
            raise ApiError(410, "erased", "the content of this packet has already been erased")
        if target.schema not in self.target_schemas or target.case_ref is None:
            raise ApiError(422, "not_permitted", f"a {target.schema} cannot be rectified")
        if target.pending:
            raise ApiError(
                409,
                "delivery_pending",
                "a delivery of this packet is still pending: wait until it is delivered or"
                " expired (`handover status PID --wait`), then rectify it",
            )
        holders = [d["node"] for d in deliveries if d["status"] == "delivered"]
        now = self.clock()
        base: dict[str, Any] = {
            "case_ref": target.case_ref,
            "target_pid": pid,
            "target_schema": target.schema,
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
            nodes = holders or [deliveries[0]["node"]]
            views = self._views(target, corrected_body, nodes, consents)
            own_copy = views[nodes[0]][0]
            if quality is None:
                quality = corrected_body.get("quality")
        base["quality"] = quality or {
            "as_of": _today(now),
            "source_system": "handover",
            "basis": "FACT",
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
            self._check_notice(notice, to)

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
            await self.apply(
                conn,
                appender,
                target,
                str(action),
                corrected=own_copy,
                restriction=f"{reason} (rectification {rect_id} of this node)",
                notice_pid=None,
                operator=operator.name,
                justification=why,
                rectification=rect_id,
                reason=reason,
            )
            return rect_id

        rect_id: int = await self.writer.run(record)
        packets: list[dict[str, Any]] = []
        for notice, to, removed in groups.values():
            sent = await self.service.submit(
                operator, to=to, schema_id=RECTIFICATION, body=notice, justification=why
            )
            async with self.db.transaction() as conn:
                for packet in sent:
                    for node in packet["to"]:
                        await lifecycle_store.set_notice(conn, rect_id, node, packet["pid"])
            packets += [{**p, "removed": removed} for p in sent]
        log.info(
            "rectification_sent",
            target=pid,
            action=action,
            rectification=rect_id,
            notices=[p["pid"] for p in packets],
        )
        return {"rectification": rect_id, "target_pid": pid, "action": action, "packets": packets}

    def _views(
        self,
        target: Held,
        corrected: dict[str, Any],
        nodes: list[str],
        consents: set[str],
    ) -> dict[str, tuple[dict[str, Any], list[str]]]:
        """The corrected body each recipient may receive (its kind's policy view)."""
        try:
            self.registry.validate(target.schema, corrected)
        except (SchemaInvalid, UnknownSchema) as exc:
            raise ApiError(422, "schema_invalid", f"the corrected body: {exc}") from exc
        if corrected.get("case_ref") != target.case_ref:
            raise ApiError(
                422, "schema_invalid", "the corrected body must keep the target's case_ref"
            )
        views: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for node in nodes:
            kind = self.workflow.kind_of(node)
            if kind is None:
                raise ApiError(422, "not_permitted", f"the agency kind of {node} is unknown")
            scope = self.policy.packet_consent(target.schema, kind)
            if scope is not None and scope not in consents:
                raise ApiError(
                    422,
                    "consent_required",
                    f"{node} ({kind}) may receive {target.schema} only with {scope} consent,"
                    " which is no longer in force: ERASE or RESTRICT the packet instead",
                )
            view = self.policy.view(target.schema, kind, corrected, consents)
            if view.removed:
                try:
                    self.registry.validate(target.schema, view.body)
                except (SchemaInvalid, UnknownSchema) as exc:
                    raise ApiError(
                        422,
                        "not_permitted",
                        f"the corrected body as {node} ({kind}) may receive it would not be"
                        f" valid: {exc}",
                    ) from exc
            views[node] = (view.body, view.removed)
        return views

    def _check_notice(self, notice: dict[str, Any], nodes: list[str]) -> None:
        """Refuse before anything changes what submitting the notice would refuse."""
        try:
            self.registry.validate(RECTIFICATION, notice)
        except (SchemaInvalid, UnknownSchema) as exc:
            raise ApiError(422, "schema_invalid", f"the rectification notice: {exc}") from exc
        for node in nodes:
            kind = self.workflow.kind_of(node)
            if kind is None or not self.policy.may_send(RECTIFICATION, self.workflow.kind, kind):
                raise ApiError(
                    422, "not_permitted", f"the sharing policy does not let us notify {node}"
                )
            if self.service.directory.keyset(node) is None:
                raise ApiError(
                    422, "unknown_recipient", f"{node} is not a pinned peer with a valid keyset"
                )

    async def status(self, pid: str) -> dict[str, Any]:
        """Each rectification of a sent packet and every recipient's acknowledgement.

        Raises:
            ApiError: 404 not a packet this node sent.
        """
        async with self.db.connection() as conn:
            target = await lifecycle_store.held_one(conn, "sent", pid, None)
            rows = await lifecycle_store.rectifications_of(conn, pid)
        if target is None:
            raise ApiError(404, "not_found", "this node sent no packet with that pid")
        items: dict[int, dict[str, Any]] = {}
        for r in rows:
            item = items.setdefault(
                r["id"],
                {
                    "id": r["id"],
                    "action": r["action"],
                    "reason": r["reason"],
                    "operator": r["operator"],
                    "at": r["created_at"],
                    "recipients": [],
                },
            )
            status = "not_sent" if r["notice_pid"] is None else r["status"]
            item["recipients"].append(
                {
                    "node": r["node"],
                    "notice_pid": r["notice_pid"],
                    "status": status,
                    "acknowledged": status == "delivered",
                    "receipt": None if r["receipt"] is None else cj_loads(bytes(r["receipt"])),
                    "reason": r["delivery_reason"],
                    "finished_at": r["finished_at"],
                }
            )
        acknowledged = all(
            rec["acknowledged"] for item in items.values() for rec in item["recipients"]
        )
        return {"pid": pid, "acknowledged": acknowledged, "rectifications": list(items.values())}

    # --- both sides: change one held copy ------------------------------------------------

    async def apply(
        self,
        conn: Connection,
        appender: Appender,
        held: Held,
        action: str,
        *,
        corrected: dict[str, Any] | None,
        restriction: str,
        notice_pid: str | None,
        operator: str | None,
        justification: str | None,
        **why: Any,
    ) -> None:
        """Apply a rectification to our copy, with its audit entry (inside a writer job)."""
        if action == "ERASE":
            await self.retention.erase(
                conn, appender, held, operator=operator, justification=justification, **why
            )
            return
        if action == "RESTRICT":
            await lifecycle_store.set_restricted(
                conn, held.direction, held.pid, held.sender, restriction
            )
            changed = ["restricted"]
        else:
            assert corrected is not None
            old = self._open(held)
            changed = sorted(k for k in set(old) | set(corrected) if old.get(k) != corrected.get(k))
            await lifecycle_store.replace_body(
                conn,
                held.direction,
                held.pid,
                held.sender,
                body_box=crypto.seal_at_rest(self.service.storage_key, cj_dumps(corrected)),
                rectified_by=notice_pid,
            )
            if held.schema in ANCHOR_SCHEMAS and held.case_ref is not None:
                await self._correct_case_dates(conn, held, corrected)
        appender.append(
            "alteration",
            pid=held.pid,
            case_ref=held.case_ref,
            schema=held.schema,
            direction=held.direction,
            counterpart=held.sender,
            action=action,
            fields=changed,
            operator=operator,
            org=self.service.node,
            justification=justification,
            **why,
        )

    def _open(self, held: Held) -> dict[str, Any]:
        if held.body_box is None:
            return {}
        try:
            body = cj_loads(crypto.open_at_rest(self.service.storage_key, held.body_box))
        except crypto.CryptoFailure:
            return {}
        return body if isinstance(body, dict) else {}

    async def _correct_case_dates(
        self, conn: Connection, held: Held, corrected: dict[str, Any]
    ) -> None:
        """A corrected supervision end or release date moves the case's reviews, and
        a corrected release date the continuity deadline of a release-notice we sent."""
        assert held.case_ref is not None
        if held.schema == SUPERVISION_END:
            end = corrected.get("end_date")
            await case_store.touch(
                conn,
                case_ref=held.case_ref,
                pid=held.pid,
                now=self.clock(),
                supervision_end=end if isinstance(end, str) else None,
            )
        else:
            await case_store.touch(
                conn,
                case_ref=held.case_ref,
                pid=held.pid,
                now=self.clock(),
                release_date=release_date(corrected),
            )
            deadline = self.workflow.deadline_for(corrected)
            if held.direction == "sent" and deadline is not None:
                await case_store.move_deadline(conn, held.pid, deadline)
        await self.retention.recompute_case(conn, held.case_ref)

    # --- the receiver (workflow hooks, inside the receive transaction) ---------------------

    async def check(
        self, conn: Connection, sender: str, schema: str, body: dict[str, Any]
    ) -> Rejected | None:
        """Step 9 for a rectification notice: the target is ours from this sender."""
        if schema != RECTIFICATION:
            return None
        target = await lifecycle_store.held_one(conn, "received", body["target_pid"], sender)
        problem = None
        if target is None:
            problem = "no packet with the target pid was accepted from this sender"
        elif target["schema_id"] != body["target_schema"]:
            problem = "the target's schema differs"
        elif target["case_ref"] != body["case_ref"]:
            problem = "the target's case differs"
        elif (
            body["action"] == "RECTIFY"
            and body["corrected_body"].get("case_ref") != body["case_ref"]
        ):
            problem = "the corrected body changes the case"
        if problem is None and body["action"] == "RECTIFY":
            rejection = await self.workflow.check_receive(
                conn, sender=sender, schema=body["target_schema"], body=body["corrected_body"]
            )
            if rejection is not None:
                log.warning(
                    "rectification_refused",
                    sender=sender,
                    target=body["target_pid"],
                    problem=f"our policy refuses the corrected body: {rejection.code.value}",
                )
                return rejection
        if problem is None:
            return None
        log.warning(
            "rectification_refused", sender=sender, target=body["target_pid"], problem=problem
        )
        return Rejected(RejectCode.NOT_PERMITTED, f"rectification refused: {problem}")

    async def on_received(self, conn: Connection, context: ReceivedContext) -> None:
        """Apply an accepted notice to our copy of the target (`check` let it through)."""
        if context.schema != RECTIFICATION:
            return
        if context.appender is None:
            raise RuntimeError("received hooks need the audit appender of the receive job")
        body = context.body
        row = await lifecycle_store.held_one(conn, "received", body["target_pid"], context.sender)
        assert row is not None, "Rectification.check accepted a notice without its target"
        target = Held.from_row(row)
        await lifecycle_store.record_applied(
            conn,
            sender=context.sender,
            notice_pid=context.pid,
            target_pid=target.pid,
            action=body["action"],
            reason=body["reason"],
            now=context.now,
        )
        if target.erased_at is not None:
            log.info("rectification_moot", target=target.pid, notice=context.pid)
            return
        await self.apply(
            conn,
            context.appender,
            target,
            body["action"],
            corrected=body.get("corrected_body"),
            restriction=f"{body['reason']} (rectification notice {context.pid} from"
            f" {context.sender})",
            notice_pid=context.pid,
            operator=None,
            justification=None,
            notice=context.pid,
            reason=body["reason"],
        )
        log.info(
            "rectification_applied",
            target=target.pid,
            notice=context.pid,
            sender=context.sender,
            action=body["action"],
        )
