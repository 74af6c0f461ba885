"""Reading attachments for operators: with a justification, logged as a consultation
(before any byte leaves), refused while the packet is restricted or once erased."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from handover.node.attachments import Attachments
from handover.protocol.attachments import AttachmentError, AttachmentItem
from handover.store import attachments as store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database
from handover.workflow.access import Operator, require_justification, require_staff
from handover.workflow.errors import BodyUnavailable, ErrorCode, RequestRefused


@dataclass(frozen=True)
class Download:
    """An attachment ready to stream: its item (name, type, size) and its plaintext."""

    item: AttachmentItem
    chunks: AsyncIterator[bytes]


def describe(item: AttachmentItem, scan: str | None = None) -> dict[str, Any]:
    """What a listing shows of an attachment (never its key); `scan` when scanned."""
    out: dict[str, Any] = {"aid": item.aid, "name": item.name, "type": item.type, "size": item.size}
    if scan is not None:
        out["scan"] = scan
    return out


class AttachmentAccess:
    def __init__(
        self, *, node: str, db: Database, writer: AuditWriter, attachments: Attachments, clock: Any
    ) -> None:
        self.node = node
        self.db = db
        self.writer = writer
        self.attachments = attachments
        self.clock = clock

    async def listing(self, pid: str, *, sent: bool) -> list[dict[str, Any]]:
        """The packet's attachments (name, type, size), without reading any."""
        async with self.db.connection() as conn:
            held = await store.held_packet(conn, pid, sent=sent)
        if held is None or held.erased:
            return []
        found = await self.attachments.items_of(held.origin, pid)
        return [describe(item, row.scan) for row, item in found]

    async def download(
        self, operator: Operator, pid: str, aid: str, justification: object, *, sent: bool
    ) -> Download:
        """Check, log a `consultation` entry, then hand out the plaintext stream.

        Raises:
            RequestRefused: `justification_required`, `not_found`, `erased`, `restricted`;
            BodyUnavailable: the item or the stream cannot be opened.
        """
        require_staff(operator)
        why = require_justification(justification)
        async with self.db.connection() as conn:
            held = await store.held_packet(conn, pid, sent=sent)
        if held is None:
            raise RequestRefused(ErrorCode.NOT_FOUND, "no such packet")
        if held.erased:
            raise RequestRefused(ErrorCode.ERASED, "the content of this packet has been erased")
        if held.restricted is not None:
            raise RequestRefused(
                ErrorCode.RESTRICTED,
                "this packet is restricted: its attachments are shown to no one until an admin"
                " lifts the restriction",
            )
        found = await self.attachments.items_of(held.origin, pid)
        row, item = next(((r, i) for r, i in found if i.aid == aid), (None, None))
        if row is None or item is None:
            raise RequestRefused(ErrorCode.NOT_FOUND, "no such attachment in this packet")
        if row.scan == "pending":
            raise RequestRefused(
                ErrorCode.SCAN_PENDING, "this attachment is being scanned; try again shortly"
            )
        if row.scan == "quarantined":
            raise RequestRefused(
                ErrorCode.QUARANTINED, "the scan found this attachment unsafe: it is quarantined"
            )
        try:
            chunks = await self.attachments.plaintext(held.origin, item)
        except AttachmentError as exc:
            raise BodyUnavailable(pid) from exc

        async def job(conn: Connection, appender: Appender) -> None:
            appender.append(
                "consultation",
                pid=pid,
                aid=aid,
                case_ref=held.case_ref,
                schema=held.schema_id,
                counterpart=held.origin or None,
                fields=["attachment"],
                operator=operator.name,
                on_behalf_of=operator.on_behalf_of,
                org=self.node,
                justification=why,
            )
            await store.note_read(
                conn, origin=held.origin, aid=aid, pid=pid, operator=operator.name, at=self.clock()
            )

        await self.writer.run(job)
        return Download(item, chunks)
