"""Read side of the workflow: case lists, a case's timeline with delivery and
acknowledgement state, overdue continuity-of-care items, local case ids, and
acknowledging a responsibility agreement."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from handover.protocol.timeutil import Clock, date_time
from handover.store import cases as case_store
from handover.store import continuity as continuity_store
from handover.store.continuity import Agreement
from handover.store.db import Database
from handover.store.errors import Conflict
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.ports import Submitter
from handover.workflow.vault import Vault

if TYPE_CHECKING:
    from handover.workflow.access import Operator

AGREEMENT = "handover/responsibility-agreement/1"
CASE_REF_MAX = 64


def _check_ref(case_ref: str) -> str:
    if not case_ref or len(case_ref) > CASE_REF_MAX:
        raise RequestRefused(ErrorCode.BAD_REQUEST, "a case reference is 1 to 64 characters")
    return case_ref


class Cases:
    def __init__(
        self, *, node: str, db: Database, vault: Vault, submitter: Submitter, clock: Clock
    ) -> None:
        self.node = node
        self.db = db
        self.vault = vault
        self.submitter = submitter
        self.clock = clock

    async def list_cases(self, *, limit: int, before: int | None) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            rows = await case_store.all_cases(conn, limit=limit, before=before)
            overdue = {e.case_ref for e in await continuity_store.overdue(conn, self.clock())}
        return [
            {
                "case_ref": r.case_ref,
                "local_id": r.local_id,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
                "release_date": r.release_date,
                "supervision_end": r.supervision_end,
                "sent": r.sent,
                "received": r.received,
                "overdue": r.case_ref in overdue,
            }
            for r in rows
        ]

    async def resolve(self, ref: str) -> str:
        """A shared case reference, or this node's local id for one."""
        async with self.db.connection() as conn:
            if await case_store.get(conn, ref) is not None:
                return ref
            found = await case_store.by_local_id(conn, ref)
        if found is None:
            raise RequestRefused(ErrorCode.NOT_FOUND, "no case with that reference or local id")
        return found

    async def show(self, ref: str) -> dict[str, Any]:
        case_ref = await self.resolve(_check_ref(ref))
        now = self.clock()
        async with self.db.connection() as conn:
            case = await case_store.get(conn, case_ref)
            assert case is not None
            timeline = await case_store.timeline(conn, case_ref)
            sent = await case_store.sent_packets(conn, case_ref)
            received = await case_store.received_packets(conn, case_ref)
            consents = await case_store.consent_states(conn, case_ref)
            expectations = await continuity_store.expectations_for_case(conn, case_ref)
            agreement = await continuity_store.current_agreement(conn, case_ref)
        return {
            "case_ref": case_ref,
            "local_id": case.local_id,
            "created_at": case.created_at,
            "first_pid": case.first_pid,
            "release_date": case.release_date,
            "supervision_end": case.supervision_end,
            "timeline": [
                {
                    "at": t.at,
                    "direction": t.direction,
                    "pid": t.pid,
                    "schema_id": t.schema_id,
                    "counterpart": t.counterpart,
                    "event": t.event,
                }
                for t in timeline
            ],
            "sent": [
                {
                    "pid": p.pid,
                    "schema": p.schema_id,
                    "at": p.created_at,
                    "fields": _names(p.fields),
                    "removed": _names(p.removed),
                    "consents": _names(p.consents),
                    "deliveries": dict(zip(p.nodes, p.statuses, strict=True)),
                    "restricted": p.restricted is not None,
                    "erased": p.erased_at is not None,
                }
                for p in sent
            ],
            "received": [
                {
                    "pid": p.pid,
                    "schema": p.schema_id,
                    "sender": p.sender,
                    "at": p.received_at,
                    "restricted": p.restricted is not None,
                    "erased": p.erased_at is not None,
                    "rectified_by": p.rectified_by,
                }
                for p in received
            ],
            "consents": {
                scope: {
                    "state": c.state,
                    "consent_id": c.consent_id,
                    "basis": c.basis,
                    "pid": c.pid,
                    "author": c.author,
                }
                for scope, c in consents.items()
            },
            "expectations": [
                {
                    "pid": e.pid,
                    "node": e.node,
                    "schemas": list(e.schemas),
                    "deadline": e.deadline,
                    "state": (
                        "acknowledged"
                        if e.satisfied_pid
                        else ("overdue" if e.deadline < now else "open")
                    ),
                    "answered_by": e.satisfied_pid,
                }
                for e in expectations
            ],
            "agreement": _agreement_view(agreement),
        }

    async def set_local_id(self, ref: str, local_id: object) -> dict[str, Any]:
        if local_id is not None and (
            not isinstance(local_id, str) or not 0 < len(local_id) <= CASE_REF_MAX
        ):
            raise RequestRefused(
                ErrorCode.BAD_REQUEST, "local_id is a string of 1 to 64 characters"
            )
        case_ref = await self.resolve(_check_ref(ref))
        try:
            async with self.db.connection() as conn:
                await case_store.set_local_id(conn, case_ref, local_id)
        except Conflict as exc:  # the unique index: another case has this local id
            raise RequestRefused(ErrorCode.CONFLICT, "another case has that local id") from exc
        return {"case_ref": case_ref, "local_id": local_id}

    async def overdue(self) -> list[dict[str, Any]]:
        now = self.clock()
        async with self.db.connection() as conn:
            rows = await continuity_store.overdue(conn, now)
        return [
            {
                "case_ref": r.case_ref,
                "local_id": r.local_id,
                "pid": r.pid,
                "node": r.node,
                "expected": list(r.schemas),
                "deadline": r.deadline,
                "overdue_days": (now - r.deadline) // 86_400_000,
            }
            for r in rows
        ]

    async def acknowledge_agreement(
        self, operator: Operator, ref: str, agreement_id: str, justification: object
    ) -> list[dict[str, Any]]:
        """Acknowledge the current revision of an agreement we are a party to: the
        agreement goes back to the other parties with our acknowledgement added."""
        case_ref = await self.resolve(_check_ref(ref))
        node = self.node
        async with self.db.connection() as conn:
            agreement = await continuity_store.current_agreement(conn, case_ref)
            if agreement is None or agreement.agreement_id != agreement_id:
                raise RequestRefused(ErrorCode.NOT_FOUND, "no such current agreement on this case")
            body_box, restricted, data_key = await case_store.held_body(conn, agreement.pid)
        if node not in agreement.parties:
            raise RequestRefused(ErrorCode.FORBIDDEN, "this node is not a party to the agreement")
        if restricted:
            raise RequestRefused(
                ErrorCode.RESTRICTED, "the agreement is restricted; an admin must lift it first"
            )
        if body_box is None:
            raise RequestRefused(ErrorCode.ERASED, "the agreement's content is no longer held")
        body = self.vault.open(agreement.pid, body_box, data_key)
        acks = [a for a in body.get("acknowledgements", []) if a["node"] != node]
        acks.append({"node": node, "acknowledged_at": date_time(self.clock())})
        body["acknowledgements"] = acks
        others = [p for p in agreement.parties if p != node]
        return await self.submitter.submit(
            operator, to=others, schema_id=AGREEMENT, body=body, justification=justification
        )


def _names(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


def _agreement_view(agreement: Agreement | None) -> dict[str, Any] | None:
    if agreement is None:
        return None
    acknowledged = sorted({a.node for a in agreement.acknowledgements})
    return {
        "agreement_id": agreement.agreement_id,
        "revision": agreement.revision,
        "pid": agreement.pid,
        "author": agreement.author,
        "parties": list(agreement.parties),
        "valid_from": agreement.valid_from,
        "valid_to": agreement.valid_to,
        "acknowledged": acknowledged,
        "pending": [p for p in agreement.parties if p not in acknowledged],
    }
