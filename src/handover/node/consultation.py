"""Art 25 logging of reads: one `consultation` (or `combination`) entry per
request that returns case-linked data, naming the operator, the purpose when
a justification was given, and what was shown -- the route, item counts and
field names, never values.

One entry per request, never one per item, so a listing costs one audit row
however long it is; the audit writer's group commit spreads the fsync.
"""

from __future__ import annotations

from collections.abc import Sequence

from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection
from handover.workflow.access import Operator, require_justification

CONSULTATION = "consultation"
COMBINATION = "combination"


class Consultations:
    def __init__(
        self, *, node: str, writer: AuditWriter, purposes: frozenset[str] | None = None
    ) -> None:
        self.node = node
        self.writer = writer
        self.purposes = purposes

    def check(self, justification: str | None) -> str | None:
        """A justification given with a read, checked like any other (None: none given).

        Raises:
            RequestRefused: `justification_too_weak`, `unknown_purpose`, ...
        """
        if justification is None:
            return None
        return require_justification(justification, self.purposes)

    async def record(
        self,
        operator: Operator,
        shown: str,
        *,
        op: str = CONSULTATION,
        justification: str | None = None,
        count: int | None = None,
        fields: Sequence[str] | None = None,
        case_ref: str | None = None,
        pid: str | None = None,
        cases: Sequence[str] | None = None,
        break_glass: bool = False,
    ) -> None:
        """Write one entry for a read (or a combination of records).

        `shown` names the route (`case_list`, `inbox_list`, `audit_read`, ...),
        `count` how many items the answer held, `fields` the names shown,
        `cases` the case references of a listing (identifiers, bounded by its page).
        """

        async def job(conn: Connection, appender: Appender) -> None:
            appender.append(
                op,
                pid=pid,
                case_ref=case_ref,
                shown=shown,
                count=count,
                fields=sorted(fields) if fields else None,
                cases=sorted(set(cases)) if cases else None,
                break_glass=True if break_glass else None,
                operator=operator.name,
                org=self.node,
                justification=justification,
            )

        await self.writer.run(job)
