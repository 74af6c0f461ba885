"""The inbox: what this node received, for operators."""

from __future__ import annotations

from typing import Any

import structlog

from handover.store import received as received_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database
from handover.store.receipts import receipt_json
from handover.workflow.access import Operator, require_justification, require_staff
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.vault import Vault

log = structlog.get_logger(__name__)


class Inbox:
    """What arrived, for operators: listings, and reading a body with a
    justification (a `consultation` entry is written before the body is shown)."""

    def __init__(
        self,
        *,
        node: str,
        db: Database,
        writer: AuditWriter,
        vault: Vault,
        purposes: frozenset[str] | None = None,
    ) -> None:
        self.node = node
        self.purposes = purposes
        self.db = db
        self.writer = writer
        self.vault = vault

    async def list(
        self, *, limit: int, before: int | None, case_ref: str | None
    ) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            rows = await received_store.inbox(conn, limit=limit, before=before, case_ref=case_ref)
        return [
            {
                "pid": r.pid,
                "sender": r.sender,
                "schema": r.schema_id,
                "case_ref": r.case_ref,
                "iat": r.iat,
                "exp": r.exp,
                "received_at": r.received_at,
                "erased": not r.has_body,
                "restricted": r.restricted,
            }
            for r in rows
        ]

    async def read(
        self, operator: Operator, pid: str, justification: object, *, break_glass: bool = False
    ) -> dict[str, Any]:
        """Open a received body for an operator; logs a `consultation` entry first.

        Raises:
            RequestRefused: `justification_required`, `restricted`, `not_found`,
                `erased`; BodyUnavailable when the stored body cannot be decrypted.
        """
        require_staff(operator)
        why = require_justification(justification, self.purposes)
        async with self.db.connection() as conn:
            row = await received_store.get(conn, pid)
        if row is None:
            raise RequestRefused(ErrorCode.NOT_FOUND, "no received packet with that pid")
        if row.body_box is None:
            raise RequestRefused(ErrorCode.ERASED, "the content of this packet has been erased")
        if row.restricted is not None:
            raise RequestRefused(
                ErrorCode.RESTRICTED,
                "this packet is restricted: its content is shown to no one until an admin"
                " lifts the restriction (POST /api/v1/packets/{pid}/restriction/lift)",
            )
        body = self.vault.open(pid, row.body_box, row.data_key)

        async def job(conn: Connection, appender: Appender) -> None:
            appender.append(
                "consultation",
                pid=pid,
                case_ref=row.case_ref,
                schema=row.schema_id,
                counterpart=row.sender,
                fields=sorted(body),
                operator=operator.name,
                on_behalf_of=operator.on_behalf_of,
                org=self.node,
                justification=why,
                break_glass=True if break_glass else None,
            )

        await self.writer.run(job)
        return {
            "pid": pid,
            "schema": row.schema_id,
            "body": body,
            "sender": row.sender,
            "case_ref": row.case_ref,
            "iat": row.iat,
            "exp": row.exp,
            "received_at": row.received_at,
            "receipt": receipt_json(row.receipt),
        }
