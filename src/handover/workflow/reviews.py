"""Review decisions (LED Art 5, 16, 18): EXTEND, RESTRICT, ERASE and LIFT, with
the controls an auditor asks for.

- ERASE and EXTEND are a caseworker's decision once the review is due. Before
  then they are a proposal by an admin with a reason code (`EARLY_REASONS`),
  which a different admin approves (`approve`): the proposal answers
  `pending_approval` and changes nothing.
- EXTEND moves the review at most the schema's retention period from now.
- ERASE or RESTRICT of a packet this node sent reaches every copy: pending
  deliveries are cancelled and each node holding it gets a rectification
  notice, kept and queued again until it acknowledges (`Rectification`).
- A restriction a received copy got from its originator's notice is lifted
  only by the originator: a local LIFT is refused (`restricted_by_originator`).

Every outcome is an audit entry (`alteration`, or `erasure` for ERASE) naming
identifiers, field names, the reason code and both admins, never content.
"""

from __future__ import annotations

from typing import Any

import structlog

from handover.protocol.timeutil import Clock
from handover.store import erasure as erasure_store
from handover.store import lifecycle as lifecycle_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database
from handover.store.lifecycle import HeldCopy
from handover.workflow.access import Operator, require_justification, require_staff
from handover.workflow.engine import date_ms
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.policy import Policy
from handover.workflow.rectification import Rectification
from handover.workflow.retention import OUTCOMES, Retention, add_months, held_view

log = structlog.get_logger(__name__)

MAX_REASON = 1000
# Why an admin may propose ERASE or EXTEND before the review is due.
EARLY_REASONS = (
    "SUBJECT_REQUEST",  # the data subject asked for erasure (Art 16)
    "UNLAWFUL_PROCESSING",  # the packet should never have been held (Art 16(2))
    "COURT_ORDER",  # a court or the supervisory authority ordered it
    "PURPOSE_FULFILLED",  # the purpose ended early (case closed, subject deceased)
    "ONGOING_PROCEEDINGS",  # EXTEND: proceedings need the data beyond the review
)
# The rectification reason a review outcome's notice carries.
NOTICE_REASON = {"ERASE": "NO_LONGER_NECESSARY", "RESTRICT": "EVIDENCE_PRESERVATION"}


def _due(held: HeldCopy, now: int) -> bool:
    """True once the packet's review date has come (a packet not yet dated is not due)."""
    return held.review_at is not None and held.review_at <= now


class Reviews:
    def __init__(
        self,
        *,
        db: Database,
        writer: AuditWriter,
        policy: Policy,
        retention: Retention,
        rectification: Rectification,
        clock: Clock,
    ) -> None:
        self.db = db
        self.writer = writer
        self.policy = policy
        self.retention = retention
        self.rectification = rectification
        self.clock = clock

    async def decide(
        self,
        operator: Operator,
        pid: str,
        *,
        outcome: object,
        justification: object,
        new_date: object = None,
        reason: object = None,
        reason_code: object = None,
        direction: object = None,
        sender: object = None,
    ) -> dict[str, Any]:
        """Record a review outcome for a held packet, or propose it (`pending_approval`).

        EXTEND needs `new_date` (YYYY-MM-DD, in the future, within the schema's
        retention period); RESTRICT needs a `reason` and takes an optional
        `new_date` for the next review (default: the fallback rule's period from
        now); ERASE clears the content; LIFT (admin only) lifts a restriction.
        ERASE and EXTEND before the review is due need an admin and a
        `reason_code`, and wait for a second admin's approval.

        Raises:
            RequestRefused: `bad_request` / `reason_required` for malformed or
                missing input; `forbidden` for LIFT by a non-admin, or ERASE or
                EXTEND by a non-admin before the review is due;
                `extension_too_long`; `not_found` / `ambiguous` as
                `Retention.find`; `not_restricted`, `restricted_by_originator`
                for LIFT; `erased` when the packet is already erased.
        """
        if outcome not in OUTCOMES:
            raise RequestRefused(
                ErrorCode.BAD_REQUEST, f"'outcome' is one of {', '.join(OUTCOMES)}"
            )
        require_staff(operator)
        why = require_justification(justification)
        if outcome == "LIFT":
            lifted = await self.lift(operator, pid, why, direction=direction, sender=sender)
            return {**lifted, "state": "decided"}
        now = self.clock()
        if outcome == "ERASE" and new_date is not None:
            raise RequestRefused(
                ErrorCode.BAD_REQUEST, "'review_at' is only for EXTEND and RESTRICT"
            )
        review_at = _new_date(new_date, now, required=outcome == "EXTEND")
        if outcome == "RESTRICT":
            if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
                raise RequestRefused(
                    ErrorCode.REASON_REQUIRED, "RESTRICT needs a 'reason' of 1 to 1000 characters"
                )
        elif reason is not None:
            raise RequestRefused(ErrorCode.BAD_REQUEST, "'reason' is only for RESTRICT")
        if reason_code is not None and reason_code not in EARLY_REASONS:
            raise RequestRefused(
                ErrorCode.BAD_REQUEST, f"'reason_code' is one of {', '.join(EARLY_REASONS)}"
            )
        held = await self.retention.find(pid, direction, sender)
        if held.erased_at is not None:
            raise RequestRefused(
                ErrorCode.ERASED, "the content of this packet has already been erased"
            )
        if outcome == "EXTEND":
            assert review_at is not None
            rule, fallback = self.policy.retention(held.schema_id)
            months = self.policy.doc.retention.extend_months
            if months is None:
                months = max(rule.months, fallback.months)
            if review_at > add_months(now, months):
                raise RequestRefused(
                    ErrorCode.EXTENSION_TOO_LONG,
                    f"EXTEND moves a {held.schema_id} review at most {months} months ahead"
                    " (the policy's retention period)",
                )
        if outcome == "RESTRICT" and review_at is None:
            review_at = add_months(now, self.policy.doc.retention.fallback.months)
        if outcome in ("ERASE", "EXTEND") and not _due(held, now):
            if operator.role != "admin":
                raise RequestRefused(
                    ErrorCode.FORBIDDEN,
                    f"this packet's review is not due yet: {outcome} before then is an admin's"
                    " proposal with a 'reason_code', approved by a second admin",
                )
            if reason_code is None:
                raise RequestRefused(
                    ErrorCode.REASON_REQUIRED,
                    f"{outcome} before the review is due needs a 'reason_code', one of"
                    f" {', '.join(EARLY_REASONS)}",
                )
            return await self._propose(operator, held, str(outcome), review_at, reason_code, why)
        done = await self._carry_out(
            operator,
            held,
            str(outcome),
            why=why,
            review_at=review_at,
            reason=None if reason is None else str(reason).strip(),
            audit={"outcome": outcome},
        )
        return done

    async def _propose(
        self,
        operator: Operator,
        held: HeldCopy,
        outcome: str,
        review_at: int | None,
        reason_code: object,
        why: str,
    ) -> dict[str, Any]:
        async with self.db.transaction() as conn:
            proposal = await erasure_store.add_proposal(
                conn,
                direction=held.direction,
                pid=held.pid,
                sender=held.sender,
                outcome=outcome,
                review_at=review_at,
                reason_code=str(reason_code),
                justification=why,
                proposer=operator.name,
                now=self.clock(),
            )
        log.info("review_proposed", pid=held.pid, outcome=outcome, proposal=proposal)
        return {
            **held_view(held),
            "state": "pending_approval",
            "proposal": {
                "id": proposal,
                "outcome": outcome,
                "reason_code": reason_code,
                "review_at": review_at,
                "proposer": operator.name,
            },
        }

    async def proposals(self, limit: int) -> list[dict[str, Any]]:
        """Proposals awaiting a second admin, oldest first (no justification text)."""
        async with self.db.connection() as conn:
            rows = await erasure_store.all_open_proposals(conn, limit)
        return [
            {
                "id": p.id,
                "pid": p.pid,
                "direction": p.direction,
                "sender": p.sender,
                "outcome": p.outcome,
                "reason_code": p.reason_code,
                "review_at": p.review_at,
                "proposer": p.proposer,
                "created_at": p.created_at,
            }
            for p in rows
        ]

    async def approve(
        self,
        operator: Operator,
        pid: str,
        *,
        justification: object,
        direction: object = None,
        sender: object = None,
    ) -> dict[str, Any]:
        """Carry out the open proposal for a packet: an admin other than the proposer.

        Raises:
            RequestRefused: `forbidden` for a non-admin; `not_found` when no
                proposal is open; `second_admin_required` when the proposer
                approves; `erased` when the packet was erased meanwhile.
        """
        if operator.role != "admin":
            raise RequestRefused(ErrorCode.FORBIDDEN, "only an admin may approve a review")
        why = require_justification(justification)
        held = await self.retention.find(pid, direction, sender)
        async with self.db.connection() as conn:
            open_ = [
                p
                for p in await erasure_store.open_proposals(conn, held.pid)
                if p.direction == held.direction and p.sender == held.sender
            ]
        if not open_:
            raise RequestRefused(ErrorCode.NOT_FOUND, "no proposal for this packet awaits approval")
        proposal = open_[-1]
        if proposal.proposer == operator.name:
            raise RequestRefused(
                ErrorCode.SECOND_ADMIN_REQUIRED,
                "the admin who proposed a decision cannot approve it: another admin must",
            )
        if held.erased_at is not None:
            raise RequestRefused(ErrorCode.ERASED, "the content of this packet has been erased")
        done = await self._carry_out(
            Operator(proposal.proposer, "admin"),
            held,
            proposal.outcome,
            why=proposal.justification,
            review_at=proposal.review_at,
            reason=None,
            audit={
                "outcome": proposal.outcome,
                "reason_code": proposal.reason_code,
                "approved_by": operator.name,
                "approval": why,
            },
        )
        async with self.db.transaction() as conn:
            await erasure_store.approve(conn, proposal.id, operator.name, self.clock())
        return {**done, "state": "approved"}

    async def _carry_out(
        self,
        operator: Operator,
        held: HeldCopy,
        outcome: str,
        *,
        why: str,
        review_at: int | None,
        reason: str | None,
        audit: dict[str, Any],
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if outcome in ("ERASE", "RESTRICT") and await self._reaches_copies(held):
            # The recipients' copies follow: cancel what is pending, notify holders.
            result["rectification"] = await self.rectification.rectify(
                operator,
                held.pid,
                action=outcome,
                reason=NOTICE_REASON[outcome],
                justification=why,
                audit=audit,
                note=reason,
            )
            if outcome == "RESTRICT":
                assert review_at is not None
                async with self.db.transaction() as conn:
                    await lifecycle_store.set_review(
                        conn, held.direction, held.pid, held.sender, review_at=review_at
                    )
        else:

            async def job(conn: Connection, appender: Appender) -> None:
                await self._local(
                    conn, appender, held, outcome, operator, why, review_at, reason, audit
                )

            await self.writer.run(job)
        log.info("review_decided", pid=held.pid, direction=held.direction, outcome=outcome)
        return {**await self.retention.state(held), "state": "decided", **result}

    async def _reaches_copies(self, held: HeldCopy) -> bool:
        """A sent packet that a rectification notice can follow to its recipients."""
        return (
            held.direction == "sent"
            and held.case_ref is not None
            and held.schema_id in self.rectification.target_schemas
            and bool(held.counterparts)
        )

    async def _local(
        self,
        conn: Connection,
        appender: Appender,
        held: HeldCopy,
        outcome: str,
        operator: Operator,
        why: str,
        review_at: int | None,
        reason: str | None,
        audit: dict[str, Any],
    ) -> None:
        if outcome == "ERASE":
            await self.retention.erase(
                conn,
                appender,
                held,
                operator=operator.name,
                justification=why,
                on_behalf_of=operator.on_behalf_of,
                **audit,
            )
            return
        assert review_at is not None
        changed = ["review_at"]
        if outcome == "RESTRICT":
            await lifecycle_store.set_restricted(
                conn, held.direction, held.pid, held.sender, reason
            )
            if held.direction == "sent":
                await erasure_store.cancel_pending(conn, held.pid, "restricted", self.clock())
            changed.insert(0, "restricted")
        await lifecycle_store.set_review(
            conn,
            held.direction,
            held.pid,
            held.sender,
            review_at=review_at,
            # A date the operator chose is the earliest a recomputed rule date may set.
            extended=review_at if outcome == "EXTEND" else None,
        )
        self.retention.append(
            appender,
            "alteration",
            held,
            changed=changed,
            review_at=review_at,
            operator=operator.name,
            on_behalf_of=operator.on_behalf_of,
            justification=why,
            **audit,
        )

    async def lift(
        self,
        operator: Operator,
        pid: str,
        justification: object,
        *,
        direction: object = None,
        sender: object = None,
    ) -> dict[str, Any]:
        """Lift a restriction: an admin only, with a justification.

        Raises:
            RequestRefused: `justification_required`, `forbidden` for a
                non-admin, `not_found` / `ambiguous` as `Retention.find`,
                `not_restricted`, `restricted_by_originator`, `erased`.
        """
        if operator.role != "admin":
            raise RequestRefused(ErrorCode.FORBIDDEN, "only an admin may lift a restriction")
        why = require_justification(justification)
        held = await self.retention.find(pid, direction, sender)
        if held.erased_at is not None:
            raise RequestRefused(ErrorCode.ERASED, "the content of this packet has been erased")
        if held.restricted is None:
            raise RequestRefused(ErrorCode.NOT_RESTRICTED, "this packet is not restricted")
        if held.restricted_by is not None:
            raise RequestRefused(
                ErrorCode.RESTRICTED_BY_ORIGINATOR,
                f"{held.restricted_by} restricted this packet by its rectification notice:"
                " only its notice can lift the restriction",
            )

        if await self._reaches_copies(held):
            # The holders were told of the restriction: they are told of its end.
            async with self.db.connection() as conn:
                imposed = [
                    r.reason
                    for r in await lifecycle_store.rectifications_of(conn, held.pid)
                    if r.action == "RESTRICT"
                ]
            await self.rectification.rectify(
                operator,
                held.pid,
                action="LIFT",
                reason=imposed[-1] if imposed else NOTICE_REASON["RESTRICT"],
                justification=why,
                audit={"outcome": "LIFT"},
            )
            log.info("restriction_lifted", pid=pid, direction=held.direction)
            return await self.retention.state(held)

        async def job(conn: Connection, appender: Appender) -> None:
            await lifecycle_store.set_restricted(conn, held.direction, held.pid, held.sender, None)
            self.retention.append(
                appender,
                "alteration",
                held,
                outcome="LIFT",
                changed=["restricted"],
                operator=operator.name,
                on_behalf_of=operator.on_behalf_of,
                justification=why,
            )

        await self.writer.run(job)
        log.info("restriction_lifted", pid=pid, direction=held.direction, operator=operator.name)
        return await self.retention.state(held)


def _new_date(value: object, now: int, *, required: bool) -> int | None:
    if value is None and not required:
        return None
    at = date_ms(value)
    if at is None:
        raise RequestRefused(ErrorCode.BAD_REQUEST, "'review_at' must be a date, YYYY-MM-DD")
    if at <= now:
        raise RequestRefused(ErrorCode.BAD_REQUEST, "'review_at' must be a date in the future")
    return at
