"""Uploading a packet's attachments to one recipient before the packet (section 8).

For each stream of the packet: a fresh ticket, `HEAD` for the recipient's
offset, then `PATCH` requests of at most 16 MiB from that offset, read piece
by piece from the database, until the recipient holds the whole stream. A
request cut off mid-way is resumed from the recipient's offset (what it
stored durably), never from zero. While an upload runs, the delivery's lease
is extended so no other worker claims the same delivery.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import structlog

from handover.node.directory import Directory
from handover.node.errors import TransportError
from handover.node.metrics import Metrics
from handover.node.transport import Transport
from handover.protocol.attachments import make_ticket
from handover.protocol.timeutil import Clock
from handover.store import attachments as store
from handover.store.db import Database

log = structlog.get_logger(__name__)
MAX_PATCH_BYTES = 16 * 1024 * 1024
MAX_ROUNDS = 1000  # HEAD/PATCH exchanges for one stream in one delivery attempt


class Uploader:
    def __init__(
        self,
        *,
        db: Database,
        directory: Directory,
        transport: Transport,
        metrics: Metrics,
        clock: Clock,
        lease_ms: int,
    ) -> None:
        self.db = db
        self.directory = directory
        self.transport = transport
        self.metrics = metrics
        self.clock = clock
        self.lease_ms = lease_ms
        self.bytes_sent = 0  # stream bytes put on the wire (tests count re-sent bytes)

    async def upload_all(self, url: str, recipient: str, pid: str, exp: int) -> str | None:
        """Upload every stream of `pid` to `recipient`; None when all are complete
        there, else the error text to retry the delivery with."""
        async with self.db.connection() as conn:
            rows = await store.of_packet(conn, store.OWN, pid)
        for row in rows:
            try:
                error = await self._one(url, recipient, pid, row, exp)
            except TransportError as exc:
                error = str(exc)
            if error is not None:
                log.info("attachment_upload_retry", pid=pid, peer=recipient, aid=row.aid)
                return f"attachment {row.aid}: {error}"
        return None

    async def _one(
        self, url: str, recipient: str, pid: str, row: store.StreamRow, exp: int
    ) -> str | None:
        identity = self.directory.keys.identity()
        ticket = make_ticket(
            identity.node, identity.kid, identity.key, to=recipient, aid=row.aid,
            alen=row.alen, ah=row.ah, iat=self.clock(), exp=exp,
        )  # fmt: skip
        answer = await self.transport.upload_offset(url, row.aid, ticket)
        for _ in range(MAX_ROUNDS):
            if answer.status not in ("ok", "offset"):
                return f"upload refused ({answer.status})"
            offset = answer.offset
            if offset >= row.alen:
                return None
            end = min(row.alen, offset + MAX_PATCH_BYTES)
            async with self.db.connection() as conn:
                await store.extend_lease(conn, pid, recipient, self.clock() + self.lease_ms)
            answer = await self.transport.upload_bytes(
                url, row.aid, ticket, offset, self._read(row.aid, offset, end)
            )
        return "too many upload rounds"

    async def _read(self, aid: str, start: int, end: int) -> AsyncGenerator[bytes]:
        position = start
        async with contextlib.aclosing(store.read_pieces(self.db, store.OWN, aid, start)) as pieces:
            async for piece in pieces:
                take = piece[: end - position]
                position += len(take)
                self.bytes_sent += len(take)
                self.metrics.attachment_bytes.inc(len(take), direction="sent")
                yield take
                if position >= end:
                    break
