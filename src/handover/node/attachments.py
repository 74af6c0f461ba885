"""Attachments in the node (docs/protocol.md section 8): uploads from peers, local
uploads to send, the receive check 8a, reading, and the sweep of unclaimed uploads.

Streams live in PostgreSQL (`store/attachments.py`): every replica of a node
sees the same offsets, and nothing is held in memory beyond one piece
(1 MiB) per request. Why PostgreSQL and not an object store: one system to
back up, restore and erase from, transactions that tie an offset to the bytes
it counts, and no second credential to run. An object store would take the
bytes (multipart uploads of the same pieces) and leave only the offsets and
items here; erasure would then be a second, non-transactional delete.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass

import structlog

from handover.node.directory import Directory
from handover.node.transport import UploadAnswer, UploadStatus
from handover.protocol import crypto
from handover.protocol.attachments import (
    MAX_ATTACHMENTS,
    AttachmentError,
    AttachmentItem,
    StreamDecryptor,
    StreamEncryptor,
    name_ok,
    new_aid,
    parse_ticket,
    stream_length,
    type_ok,
    verify_ticket,
)
from handover.protocol.canonical import cj_dumps
from handover.protocol.timeutil import SKEW_MS, Clock
from handover.store import attachments as store
from handover.store.db import Connection, Database
from handover.workflow.errors import BodyUnavailable, ErrorCode, RequestRefused
from handover.workflow.vault import Vault

log = structlog.get_logger(__name__)

MAX_PATCH_BYTES = 16 * 1024 * 1024
# PATCH requests this process stores at once: per sender, and from all peers
# together, so an upload flood from a pinned peer cannot take every database
# connection from local users (the pool has 10).
MAX_WRITES_PER_SENDER = 2
MAX_WRITES = 4
UNCLAIMED_GRACE_MS = SKEW_MS  # exp + 5 min
LOCAL_UNCLAIMED_MS = 24 * 60 * 60 * 1000  # a local upload waits a day for its submission


@dataclass(frozen=True)
class UploadState:
    offset: int
    length: int


@dataclass(frozen=True)
class PatchResult:
    """`conflict`: the offset sent was not the stored one (`offset` is the stored one)."""

    offset: int
    conflict: bool = False


_REFUSED: dict[ErrorCode, UploadStatus] = {
    ErrorCode.UNAUTHORIZED: "unauthorized",
    ErrorCode.TOO_LARGE: "too_large",
    ErrorCode.CONFLICT: "conflict",
    ErrorCode.ATTACHMENT_HASH: "hash",
}


def _refused(exc: RequestRefused) -> UploadAnswer:
    return UploadAnswer(_REFUSED.get(exc.code, "unavailable"), 0, exc.code.value)


class Attachments:
    def __init__(
        self,
        *,
        node: str,
        db: Database,
        directory: Directory,
        vault: Vault,
        clock: Clock,
        max_bytes: int,
        quota_bytes: int,
    ) -> None:
        self.node = node
        self.db = db
        self.directory = directory
        self.vault = vault
        self.clock = clock
        self.max_bytes = max_bytes
        self.quota_bytes = quota_bytes
        self._writing: dict[str, int] = {}  # PATCH requests in progress, per sender
        # Set by the composition root when a scan command is configured: received
        # streams then wait for a clean scan before anyone may download them.
        self.scan_command: tuple[str, ...] = ()

    # --- uploads from peers (federation) ---------------------------------------------

    async def _ticket(self, aid: str, header: str | None) -> tuple[str, int, bytes, int]:
        """(sender, alen, ah, exp) of a verified ticket.

        Raises:
            RequestRefused: `unauthorized` (missing or bad ticket), `too_large`.
        """
        try:
            ticket = parse_ticket(header)
            keyset = await self.directory.keyset_for_kid(ticket.sender, ticket.kid)
            verify_ticket(ticket, keyset=keyset, node=self.node, aid=aid, now=self.clock())
        except AttachmentError as exc:
            log.info("upload_refused", reason=exc.reason, aid=aid[:22])
            raise RequestRefused(
                ErrorCode.UNAUTHORIZED, "missing or invalid upload ticket"
            ) from exc
        if ticket.alen > stream_length(self.max_bytes):
            raise RequestRefused(ErrorCode.TOO_LARGE, "attachment over this node's limit")
        return ticket.sender, ticket.alen, ticket.ah, ticket.exp

    async def _admit(self, aid: str, header: str | None) -> tuple[str, store.StreamRow]:
        """The upload row for a verified ticket, created (within quota) if new.

        Raises:
            RequestRefused: `unauthorized`, `too_large`, `conflict` (another alen/ah).
        """
        sender, alen, ah, exp = await self._ticket(aid, header)
        async with self.db.transaction() as conn:
            row = await store.get(conn, sender, aid)
            if row is None:
                await store.lock_origin(conn, sender)
                if await store.incomplete_bytes(conn, sender) + alen > self.quota_bytes:
                    raise RequestRefused(ErrorCode.TOO_LARGE, "over the sender's upload quota")
                await store.create(
                    conn, origin=sender, aid=aid, alen=alen, ah=ah, exp=exp, now=self.clock()
                )
                row = await store.get(conn, sender, aid)
                assert row is not None
        if row.alen != alen or not crypto.constant_time_equal(row.ah, ah):
            raise RequestRefused(ErrorCode.CONFLICT, "the upload exists with another alen or ah")
        return sender, row

    async def head(self, aid: str, header: str | None) -> UploadState:
        _sender, row = await self._admit(aid, header)
        return UploadState(row.received, row.alen)

    async def patch(
        self,
        aid: str,
        header: str | None,
        offset: int,
        body: AsyncIterator[bytes],
        length: int | None = None,
    ) -> PatchResult:
        """Store the bytes from `offset`, piece by piece, each piece committed with
        its offset. At `alen`, check the hash; a mismatch discards the upload.

        The ticket is verified (and the upload admitted) before `body` is read.

        Raises:
            RequestRefused: as :meth:`head`; `too_large` (more than `alen - offset`
                or 16 MiB); `attachment_hash`.
        """
        sender, row = await self._admit(aid, header)
        if offset != row.received or row.complete:
            return PatchResult(row.received, conflict=True)
        if length is not None and (length > MAX_PATCH_BYTES or offset + length > row.alen):
            raise RequestRefused(ErrorCode.TOO_LARGE, "more bytes than the upload's rest")
        if self._writing.get(sender, 0) >= MAX_WRITES_PER_SENDER or (
            sum(self._writing.values()) >= MAX_WRITES
        ):
            raise RequestRefused(
                ErrorCode.TOO_MANY_REQUESTS, "too many uploads in progress; retry shortly"
            )
        self._writing[sender] = self._writing.get(sender, 0) + 1
        try:
            return await self._write(sender, row, offset, body)
        finally:
            self._writing[sender] -= 1

    async def _write(
        self, sender: str, row: store.StreamRow, offset: int, body: AsyncIterator[bytes]
    ) -> PatchResult:
        aid = row.aid
        position = offset
        pending = bytearray()
        taken = 0
        async for data in body:
            taken += len(data)
            if taken > MAX_PATCH_BYTES or position + len(pending) + len(data) > row.alen:
                # What is not yet committed is dropped; committed pieces are a
                # valid prefix (the hash at the end decides).
                raise RequestRefused(ErrorCode.TOO_LARGE, "more bytes than the upload's rest")
            pending += data
            while len(pending) >= store.PIECE_BYTES:
                piece = bytes(pending[: store.PIECE_BYTES])
                del pending[: store.PIECE_BYTES]
                position = await self._store_piece(sender, aid, position, piece)
        position = await self._flush(sender, aid, position, pending)
        if position == row.alen:
            await self._finish(sender, row)
        return PatchResult(position)

    async def _flush(self, sender: str, aid: str, position: int, pending: bytearray) -> int:
        if not pending:
            return position
        position = await self._store_piece(sender, aid, position, bytes(pending))
        pending.clear()
        return position

    async def _store_piece(self, sender: str, aid: str, position: int, piece: bytes) -> int:
        if not await store.append_piece(self.db, sender, aid, position, piece):
            raise RequestRefused(ErrorCode.CONFLICT, "another request is writing this upload")
        return position + len(piece)

    async def _finish(self, sender: str, row: store.StreamRow) -> None:
        hasher = crypto.h64_hasher()
        async with contextlib.aclosing(store.read_pieces(self.db, sender, row.aid)) as pieces:
            async for piece in pieces:
                hasher.update(piece)
        async with self.db.transaction() as conn:
            if crypto.constant_time_equal(hasher.digest(), row.ah):
                await store.mark_complete(conn, sender, row.aid)
                return
            await store.delete(conn, sender, row.aid)
        log.warning("upload_hash_mismatch", sender=sender, aid=row.aid)
        raise RequestRefused(ErrorCode.ATTACHMENT_HASH, "the stream does not match its hash")

    async def head_answer(self, aid: str, ticket: str) -> UploadAnswer:
        """:meth:`head` as a transport answer (for in-process peers)."""
        try:
            state = await self.head(aid, ticket)
        except RequestRefused as exc:
            return _refused(exc)
        return UploadAnswer("ok", state.offset)

    async def patch_answer(
        self, aid: str, ticket: str, offset: int, body: AsyncIterable[bytes]
    ) -> UploadAnswer:
        """:meth:`patch` as a transport answer (for in-process peers)."""
        try:
            result = await self.patch(aid, ticket, offset, aiter(body))
        except RequestRefused as exc:
            return _refused(exc)
        return UploadAnswer("offset" if result.conflict else "ok", result.offset)

    # --- the receive check (8a) and binding (step 10) ----------------------------------

    async def first_missing(
        self, conn: Connection, sender: str, pid: str, items: Sequence[AttachmentItem]
    ) -> str | None:
        """Check 8a: the aid of the first item without a complete upload from
        `sender` with the same alen and ah, or None. An upload another packet
        already claimed does not count (stricter: one stream, one packet)."""
        found = await store.complete_for(conn, sender, [i.aid for i in items], pid)
        for item in items:
            row = found.get(item.aid)
            if (
                row is None
                or row.alen != item.alen
                or not crypto.constant_time_equal(row.ah, item.ah)
            ):
                return item.aid
        return None

    async def bind(
        self, conn: Connection, sender: str, pid: str, items: Sequence[AttachmentItem]
    ) -> None:
        for item in items:
            box = self.vault.seal_with_storage_key(cj_dumps(item.to_json()))
            scan = "pending" if self.scan_command else None
            await store.claim(conn, sender, item.aid, pid, box, scan)

    # --- local uploads (to send) --------------------------------------------------------

    async def store_local(
        self, body: AsyncIterator[bytes], *, name: str, media_type: str
    ) -> AttachmentItem:
        """Encrypt a file as it arrives into a new stream of ours; nothing of the
        plaintext is stored. The item (with its key) is sealed at rest.

        Raises:
            RequestRefused: `bad_request` (name or type), `too_large`.
        """
        if not name_ok(name) or not type_ok(media_type):
            raise RequestRefused(ErrorCode.BAD_REQUEST, "bad attachment name or media type")
        aid = new_aid()
        enc = StreamEncryptor(aid, crypto.random_bytes(crypto.STREAM_KEY_BYTES))
        now = self.clock()
        async with self.db.transaction() as conn:
            # alen and ah are known only at the end; the row starts with placeholders.
            await store.create(
                conn, origin=store.OWN, aid=aid, alen=stream_length(self.max_bytes), ah=b"",
                exp=now + LOCAL_UNCLAIMED_MS, now=now,
            )  # fmt: skip
        position = 0
        pending = bytearray()
        try:
            async for data in body:
                pending += enc.update(data)
                if enc.size > self.max_bytes:
                    raise RequestRefused(ErrorCode.TOO_LARGE, "attachment over this node's limit")
                while len(pending) >= store.PIECE_BYTES:
                    piece = bytes(pending[: store.PIECE_BYTES])
                    del pending[: store.PIECE_BYTES]
                    position = await self._store_piece(store.OWN, aid, position, piece)
            pending += enc.finish()
            position = await self._flush(store.OWN, aid, position, pending)
            item = enc.item(name, media_type)
            box = self.vault.seal_with_storage_key(cj_dumps(item.to_json()))
            async with self.db.transaction() as conn:
                await store.finish_own(conn, aid, item.alen, item.ah, box)
        except BaseException:
            async with self.db.transaction() as conn:
                await store.delete(conn, store.OWN, aid)
            raise
        return item

    async def claim_own(
        self, conn: Connection, aids: Sequence[str], pid: str, *, again: bool = False
    ) -> list[AttachmentItem]:
        """The items of our complete streams `aids`, carried by sent packet `pid`.
        The first packet of a submission claims them (they must be unclaimed);
        `again` adds another packet of the same submission.

        Raises:
            RequestRefused: `bad_request` (too many, repeated), `not_found`.
        """
        if len(aids) > MAX_ATTACHMENTS or len(set(aids)) != len(aids):
            raise RequestRefused(
                ErrorCode.BAD_REQUEST, f"at most {MAX_ATTACHMENTS} distinct attachments"
            )
        items = []
        for aid in aids:
            row = await store.get(conn, store.OWN, aid)
            claimable = row is not None and row.complete and row.item_box is not None
            if row is None or not claimable or (row.pid is not None and not again):
                raise RequestRefused(ErrorCode.NOT_FOUND, f"no unsent attachment {aid}")
            assert row.item_box is not None
            items.append(self.item_from_box(pid, row.item_box))
            if not again:
                await store.claim(conn, store.OWN, aid, pid, None)
            await store.link_sent(conn, aid, pid)
        return items

    def item_from_box(self, pid: str, box: bytes) -> AttachmentItem:
        """An item sealed at rest (by the vault, like a body).

        Raises:
            BodyUnavailable: it does not open or is not an item.
        """
        try:
            return AttachmentItem.from_json(self.vault.open(pid, box, None))
        except AttachmentError as exc:
            raise BodyUnavailable(pid) from exc

    async def items_of(self, origin: str, pid: str) -> list[tuple[store.StreamRow, AttachmentItem]]:
        async with self.db.connection() as conn:
            rows = await store.of_packet(conn, origin, pid)
        return [
            (row, self.item_from_box(pid, row.item_box)) for row in rows if row.item_box is not None
        ]

    # --- reading ----------------------------------------------------------------------------

    async def plaintext(self, origin: str, item: AttachmentItem) -> AsyncIterator[bytes]:
        """The decrypted file, piece by piece. The whole stream is checked first
        (a pass that gives out nothing), so a damaged stream yields no byte.

        Raises:
            AttachmentError: "stream_damaged" (before the first byte).
        """
        check = StreamDecryptor(item)
        async with contextlib.aclosing(store.read_pieces(self.db, origin, item.aid)) as pieces:
            async for piece in pieces:
                check.update(piece)
        check.finish()
        return self._decrypting(origin, item)

    async def _decrypting(self, origin: str, item: AttachmentItem) -> AsyncGenerator[bytes]:
        dec = StreamDecryptor(item)
        async with contextlib.aclosing(store.read_pieces(self.db, origin, item.aid)) as pieces:
            async for piece in pieces:
                out = dec.update(piece)
                if out:
                    yield out
        last = dec.finish()
        if last:
            yield last

    # --- housekeeping -----------------------------------------------------------------------

    async def sweep(self) -> int:
        """Delete streams that no packet claimed by their `exp + 5 min`."""
        async with self.db.connection() as conn:
            count = await store.sweep_unclaimed(conn, self.clock(), UNCLAIMED_GRACE_MS)
        if count:
            log.info("attachments_swept", count=count)
        return count
