"""Applying a rectification to one held copy (both sides), and the receiver's
side of rectification notices (Art 16): the step-9 check and applying an
accepted notice inside the receive transaction.

A notice is accepted only from the node that sent the target to us, for a
target we hold, with a corrected body our own policy would accept; otherwise
the receipt is a signed rejection (`not_permitted`) and nothing changes. An
accepted notice is applied in the same transaction as its receipt, so
`accepted` means applied. The sender's side is `rectification.py`.
"""

from __future__ import annotations

from typing import Any

import structlog

from handover.protocol.errors import RejectCode, Rejected
from handover.protocol.timeutil import Clock
from handover.store import attachments as attachment_store
from handover.store import cases as case_store
from handover.store import continuity as continuity_store
from handover.store import erasure as erasure_store
from handover.store import lifecycle as lifecycle_store
from handover.store import listings
from handover.store.auditlog import Appender
from handover.store.db import Connection
from handover.store.lifecycle import HeldCopy
from handover.workflow.engine import SUPERVISION_END, ReceivedContext, Workflow, release_date
from handover.workflow.errors import BodyUnavailable
from handover.workflow.retention import ANCHOR_SCHEMAS, Retention
from handover.workflow.vault import Vault

log = structlog.get_logger(__name__)

RECTIFICATION = "handover/rectification-notice/1"
REQUEST = "handover/rectification-request/1"


class Corrections:
    def __init__(
        self, *, node: str, workflow: Workflow, retention: Retention, vault: Vault, clock: Clock
    ) -> None:
        self.node = node
        self.workflow = workflow
        self.retention = retention
        self.vault = vault
        self.clock = clock

    async def apply(
        self,
        conn: Connection,
        appender: Appender,
        held: HeldCopy,
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
                conn,
                held.direction,
                held.pid,
                held.sender,
                restriction,
                by=held.sender if notice_pid is not None else None,
            )
            if held.direction == "sent":
                await erasure_store.cancel_pending(conn, held.pid, "restricted", self.clock())
            changed = ["restricted"]
        elif action == "LIFT":
            # The originator lifts the restriction it imposed (its notice), or its own.
            await lifecycle_store.set_restricted(conn, held.direction, held.pid, held.sender, None)
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
                body_box=(stored := self.vault.seal_body(corrected, held.data_key)).box,
                data_key=stored.key,
                rectified_by=notice_pid,
            )
            if held.schema_id in ANCHOR_SCHEMAS and held.case_ref is not None:
                await self._correct_case_dates(conn, held, corrected)
        appender.append(
            "alteration",
            pid=held.pid,
            case_ref=held.case_ref,
            schema=held.schema_id,
            direction=held.direction,
            counterpart=held.sender,
            action=action,
            fields=changed,
            operator=operator,
            org=self.node,
            justification=justification,
            **why,
        )

    def _open(self, held: HeldCopy) -> dict[str, Any]:
        """The held body, to name the fields a correction changes.

        Raises:
            BodyUnavailable: the body cannot be decrypted (never diffed against {}).
        """
        if held.body_box is None:
            return {}
        return self.vault.open(held.pid, held.body_box, held.data_key)

    async def _correct_case_dates(
        self, conn: Connection, held: HeldCopy, corrected: dict[str, Any]
    ) -> None:
        """A corrected supervision end or release date moves the case's reviews, and
        a corrected release date the continuity deadline of a release-notice we sent."""
        assert held.case_ref is not None
        if held.schema_id == SUPERVISION_END:
            end = corrected.get("end_date")
            changed = await case_store.touch(
                conn,
                case_ref=held.case_ref,
                pid=held.pid,
                now=self.clock(),
                supervision_end=end if isinstance(end, str) else None,
            )
        else:
            changed = await case_store.touch(
                conn,
                case_ref=held.case_ref,
                pid=held.pid,
                now=self.clock(),
                release_date=release_date(corrected),
            )
            deadline = self.workflow.deadline_for(corrected)
            if held.direction == "sent" and deadline is not None:
                await continuity_store.move_deadline(conn, held.pid, deadline)
            elif held.sender is not None and deadline is not None:
                # The receiving side: what we owe for that packet is due by then too.
                await listings.move_owed(conn, held.sender, held.pid, deadline)
        if changed:
            await self.retention.undate_case(conn, held.case_ref)

    # --- the receiver (workflow hooks, inside the receive transaction) ---------------------

    async def check(
        self, conn: Connection, sender: str, schema: str, body: dict[str, Any]
    ) -> Rejected | None:
        """Step 9 for a rectification notice (the target is ours from this sender) and
        a rectification request (the target is a packet we delivered to this sender)."""
        if schema == REQUEST:
            return await self._check_request(conn, sender, body)
        if schema != RECTIFICATION:
            return None
        target = await lifecycle_store.held_one(conn, "received", body["target_pid"], sender)
        problem = None
        if target is None:
            problem = "no packet with the target pid was accepted from this sender"
        elif target.schema_id != body["target_schema"]:
            problem = "the target's schema differs"
        elif target.case_ref != body["case_ref"]:
            problem = "the target's case differs"
        elif body["action"] == "LIFT" and target.restricted_by != sender:
            problem = "the target holds no restriction this sender imposed"
        elif (
            body["action"] == "RECTIFY"
            and body["corrected_body"].get("case_ref") != body["case_ref"]
        ):
            problem = "the corrected body changes the case"
        elif (
            body["action"] == "RECTIFY" and target.erased_at is None and not self._readable(target)
        ):
            # Refused with a signed rejection rather than failing the receive
            # transaction (and with it every packet of the batch).
            problem = "our copy of the target cannot be decrypted to apply the correction"
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

    async def _check_request(
        self, conn: Connection, sender: str, body: dict[str, Any]
    ) -> Rejected | None:
        target = await lifecycle_store.held_one(conn, "sent", body["target_pid"], None)
        problem = None
        if target is None:
            problem = "this node sent no packet with the target pid"
        elif not any(
            d.node == sender and d.status == "delivered"
            for d in await lifecycle_store.deliveries(conn, target.pid)
        ):
            problem = "the target was not delivered to this sender"
        elif target.schema_id != body["target_schema"] or target.case_ref != body["case_ref"]:
            problem = "the target's schema or case differs"
        if problem is None:
            return None
        log.warning("rectification_request_refused", sender=sender, problem=problem)
        return Rejected(RejectCode.NOT_PERMITTED, f"rectification request refused: {problem}")

    def _readable(self, held: HeldCopy) -> bool:
        try:
            self._open(held)
        except BodyUnavailable:
            log.error("body_unavailable", pid=held.pid, operation="rectification")
            return False
        return True

    async def on_received(self, conn: Connection, context: ReceivedContext) -> None:
        """Apply an accepted notice to our copy of the target (`check` let it through);
        record an accepted request for our caseworkers to answer."""
        if context.schema == REQUEST:
            await erasure_store.add_request(
                conn,
                sender=context.sender,
                pid=context.pid,
                target_pid=context.body["target_pid"],
                concern=context.body["concern"],
                fields=context.body.get("fields", []),
                now=context.now,
            )
            log.info("rectification_requested", target=context.body["target_pid"])
            return
        if context.schema != RECTIFICATION:
            return
        if context.appender is None:
            raise RuntimeError("received hooks need the audit appender of the receive job")
        body = context.body
        target = await lifecycle_store.held_one(
            conn, "received", body["target_pid"], context.sender
        )
        assert target is not None, "Rectification.check accepted a notice without its target"
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
        replaced: list[str] = []
        if body["action"] == "RECTIFY":
            # The notice's attachments, if any, replace the target's.
            replaced = await attachment_store.replace_received(
                conn, context.sender, context.pid, target.pid
            )
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
            attachments=replaced or None,
        )
        log.info(
            "rectification_applied",
            target=target.pid,
            notice=context.pid,
            sender=context.sender,
            action=body["action"],
        )
