"""Scanning received attachments before anyone may read them (`attachment_scan_command`).

With a scan command set, a received stream is bound to its packet as `pending`;
this loop decrypts each pending stream (checked whole first), pipes the
plaintext to the command's standard input and records `clean` (exit 0) or
`quarantined` (exit 1). Any other outcome (the command missing, a crash, a
timeout) leaves it pending and is retried on the next round. Downloads of a
pending or quarantined attachment are refused; the inbox shows the state.
The command gets no file name, no identifiers and no personal data in its
arguments: only the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex

import structlog

from handover.node.attachments import Attachments
from handover.protocol.attachments import AttachmentError
from handover.protocol.errors import HandoverError
from handover.store import attachments as store
from handover.store.db import Database

log = structlog.get_logger(__name__)
ROUND_S = 5.0
BATCH = 8
SCAN_TIMEOUT_S = 600.0


def parse_command(setting: str) -> tuple[str, ...]:
    return tuple(shlex.split(setting))


class Scanner:
    def __init__(self, *, db: Database, attachments: Attachments, command: tuple[str, ...]) -> None:
        self.db = db
        self.attachments = attachments
        self.command = command
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await self.scan_pending()
            except HandoverError as exc:
                log.error("attachment_scan_round_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ROUND_S):
                    await self.wake.wait()
            self.wake.clear()

    async def scan_pending(self) -> int:
        """Scan every pending stream once; the number that got a verdict."""
        async with self.db.connection() as conn:
            rows = await store.pending_scans(conn, BATCH)
        done = 0
        for row in rows:
            verdict = await self._scan(row)
            if verdict is None:
                continue
            async with self.db.connection() as conn:
                await store.set_scan(conn, row.origin, row.aid, verdict)
            done += 1
            if verdict == "quarantined":
                log.warning("attachment_quarantined", pid=row.pid, aid=row.aid, sender=row.origin)
        return done

    async def _scan(self, row: store.StreamRow) -> str | None:
        if row.pid is None or row.item_box is None:
            return None
        try:
            item = self.attachments.item_from_box(row.pid, row.item_box)
            chunks = await self.attachments.plaintext(row.origin, item)
        except (AttachmentError, HandoverError):
            return "quarantined"  # a stream that does not open is never given out
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            log.error("attachment_scan_unavailable", error=type(exc).__name__)
            return None
        assert proc.stdin is not None
        try:
            async with asyncio.timeout(SCAN_TIMEOUT_S):
                try:
                    async for piece in chunks:
                        proc.stdin.write(piece)
                        await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the scanner decided early; its exit status says what
                proc.stdin.close()
                code = await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.error("attachment_scan_timeout", aid=row.aid)
            return None
        if code == 0:
            return "clean"
        if code == 1:
            return "quarantined"
        log.error("attachment_scan_failed", aid=row.aid, exit_code=code)
        return None
