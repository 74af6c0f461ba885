"""Least privilege (LED Art 20, 29): with the node setting
`case_assignment = "required"`, a caseworker sees only the cases assigned to
them or to one of their teams. Admins and auditors are not limited (their
roles are limited otherwise). For urgent risk-of-harm work a caseworker may
read an unassigned case by *breaking the glass*: the read is allowed, and its
`consultation` entry carries `break_glass: true` and the justification, for
review.

Assignments are made by an admin (`PUT /api/v1/cases/{ref}/assignment`, or
`handover cases assign --dir`); teams by `handover operators team --dir`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handover.protocol.timeutil import Clock
from handover.store import legal as legal_store
from handover.store import received as received_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database
from handover.workflow.access import Operator, require_justification
from handover.workflow.errors import ErrorCode, RequestRefused

LIMITED_ROLES = frozenset({"caseworker"})
MAX_ASSIGNEES = 64
NAME_MAX = 64


class Assignments:
    def __init__(
        self,
        *,
        node: str,
        db: Database,
        writer: AuditWriter,
        clock: Clock,
        required: bool,
        purposes: frozenset[str] | None = None,
    ) -> None:
        self.node = node
        self.db = db
        self.writer = writer
        self.clock = clock
        self.required = required
        self.purposes = purposes

    def limited(self, operator: Operator) -> bool:
        return self.required and operator.role in LIMITED_ROLES

    async def check(
        self, operator: Operator, case_ref: str | None, break_glass: str | None = None
    ) -> bool:
        """May the operator see this case? True when only by breaking the glass.

        Raises:
            RequestRefused: `forbidden` for a case not assigned to the operator or
                their team (naming how to break the glass), or a break-glass
                justification that is refused.
        """
        if case_ref is None or not self.limited(operator):
            return False
        async with self.db.connection() as conn:
            if await legal_store.assigned_to(conn, case_ref, operator.name):
                return False
        if break_glass is None:
            raise RequestRefused(
                ErrorCode.FORBIDDEN,
                "this case is not assigned to you or your team; for urgent risk-of-harm"
                " work, repeat with header 'Handover-Break-Glass: <justification>' (logged)",
            )
        require_justification(break_glass, self.purposes)
        return True

    async def check_packet(
        self, operator: Operator, pid: str, break_glass: str | None = None
    ) -> bool:
        """`check` for the case of a received packet (unknown packets pass: 404 later)."""
        if not self.limited(operator):
            return False
        async with self.db.connection() as conn:
            row = await received_store.get(conn, pid)
        return await self.check(operator, None if row is None else row.case_ref, break_glass)

    async def visible(self, operator: Operator, case_refs: Sequence[str | None]) -> set[str]:
        """Those of `case_refs` the operator may see (all of them when not limited)."""
        refs = [c for c in case_refs if c]
        if not self.limited(operator):
            return set(refs)
        async with self.db.connection() as conn:
            return await legal_store.visible_cases(conn, operator.name, refs)

    async def assign(
        self,
        operator: Operator,
        case_ref: str,
        *,
        operators: object,
        teams: object,
        justification: object,
    ) -> dict[str, Any]:
        """Replace a case's assignment (logged as an `alteration`).

        Raises:
            RequestRefused: `bad_request` for malformed lists; justification codes.
        """
        why = require_justification(justification, self.purposes)
        names = _names("operators", operators)
        groups = _names("teams", teams)
        now = self.clock()

        async def job(conn: Connection, appender: Appender) -> None:
            await legal_store.assign(
                conn, case_ref, operators=names, teams=groups, by=operator.name, now=now
            )
            appender.append(
                "alteration",
                action="case_assigned",
                case_ref=case_ref,
                operators=names,
                teams=groups,
                operator=operator.name,
                org=self.node,
                justification=why,
            )

        await self.writer.run(job)
        return {"case_ref": case_ref, "operators": names, "teams": groups}

    async def assignment(self, case_ref: str) -> dict[str, Any]:
        async with self.db.connection() as conn:
            rows = await legal_store.assignments(conn, case_ref)
        return {
            "case_ref": case_ref,
            "operators": [r.assignee for r in rows if r.kind == "operator"],
            "teams": [r.assignee for r in rows if r.kind == "team"],
        }

    async def set_teams(self, name: str, teams: Sequence[str]) -> None:
        groups = _names("teams", list(teams))

        async def job(conn: Connection, appender: Appender) -> None:
            await legal_store.set_teams(conn, name, groups)
            appender.append(
                "key", action="operator_teams", operator=name, teams=groups, org=self.node
            )

        await self.writer.run(job)


def _names(member: str, value: object) -> list[str]:
    if value is None:
        return []
    if (
        not isinstance(value, list)
        or len(value) > MAX_ASSIGNEES
        or not all(isinstance(v, str) and 0 < len(v) <= NAME_MAX for v in value)
    ):
        raise RequestRefused(
            ErrorCode.BAD_REQUEST,
            f"'{member}' is a list of at most {MAX_ASSIGNEES} names of 1 to {NAME_MAX} characters",
        )
    return sorted(set(value))
