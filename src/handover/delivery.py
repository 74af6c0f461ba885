"""The outbox worker: claim due deliveries, POST them, store the signed receipts.

Rows are claimed in batches with `FOR UPDATE SKIP LOCKED` and leased for
longer than a request can take, so several processes sharing one database
never deliver a row at the same time. Network errors and 5xx answers are
retried with exponential backoff and full jitter until the packet expires;
a signed rejection receipt ends a delivery as `rejected`; a packet that
expires undelivered becomes a dead letter (`expired`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict

import structlog

from handover.audit import Appender, AuditWriter
from handover.canonical import b64u_encode
from handover.config import NodeConfig
from handover.directory import Directory
from handover.errors import InvalidReceipt, TransportError
from handover.metrics import Metrics
from handover.packet import Receipt, parse_receipt, verify_receipt
from handover.store import outbox as outbox_store
from handover.store import timeline as timeline_store
from handover.store.db import Connection, Database
from handover.timeutil import Clock
from handover.transport import HttpTransport, PostResult

log = structlog.get_logger(__name__)
POLL_S = 1.0


class DeliveryWorker:
    def __init__(
        self,
        *,
        config: NodeConfig,
        db: Database,
        writer: AuditWriter,
        directory: Directory,
        transport: HttpTransport,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.config = config
        self.db = db
        self.writer = writer
        self.directory = directory
        self.transport = transport
        self.metrics = metrics
        self.clock = clock
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Lease longer than any request can take (timeout + margin).
        self.lease_ms = int((config.delivery_timeout_s + 30) * 1000)
        self._slots = asyncio.Semaphore(config.delivery_concurrency)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                worked = await self.run_once()
            except Exception as exc:  # keep the worker alive; the rows stay pending
                log.error("delivery_round_failed", error=type(exc).__name__, detail=str(exc))
                worked = False
            if worked:
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), POLL_S)

    async def run_once(self) -> bool:
        """One round: expire dead letters, claim a batch, deliver it. True if it did work."""
        now = self.clock()
        expired = await self._expire(now)
        async with self.db.transaction() as conn:
            claimed = await outbox_store.claim_due(
                conn, now=now, limit=self.config.delivery_batch * 4, lease_ms=self.lease_ms
            )
        if not claimed:
            return expired > 0
        by_node: dict[str, list[outbox_store.Claimed]] = defaultdict(list)
        for row in claimed:
            by_node[row.node].append(row)
        tasks = []
        for node, rows in by_node.items():
            for i in range(0, len(rows), self.config.delivery_batch):
                tasks.append(self._deliver(node, rows[i : i + self.config.delivery_batch]))
        await asyncio.gather(*tasks)
        return True

    async def _expire(self, now: int) -> int:
        async def job(conn: Connection, appender: Appender) -> int:
            rows = await outbox_store.claim_expired(conn, now=now, limit=1000)
            for pid, node in rows:
                await outbox_store.finish(
                    conn,
                    pid=pid,
                    node=node,
                    status="expired",
                    receipt=None,
                    receipt_serial=None,
                    reason="expired",
                    now=now,
                )
                appender.append(
                    "delivery", pid=pid, counterpart=node, status="expired", org=self.config.node
                )
            return len(rows)

        count: int = await self.writer.run(job)
        if count:
            self.metrics.deliveries.inc(count, status="expired")
            log.warning("deliveries_expired", count=count)
        return count

    async def _deliver(self, node: str, rows: list[outbox_store.Claimed]) -> None:
        async with self._slots:
            url = self.directory.url(node)
            if url is None:
                await self._retry_all(rows, "recipient is no longer a pinned peer")
                return
            try:
                results = await self.transport.post_batch(url, [r.wire for r in rows])
            except TransportError as exc:
                self.metrics.attempts.inc(len(rows), outcome="network_error")
                await self._retry_all(rows, str(exc))
                return
            for row, result in zip(rows, results, strict=True):
                await self._handle(row, result)

    async def _handle(self, row: outbox_store.Claimed, result: PostResult) -> None:
        if result.status in (200, 422) and result.receipt is not None:
            receipt = await self._verify(row, result.receipt)
            if receipt is None:
                self.metrics.attempts.inc(outcome="bad_receipt")
                await self._retry_all([row], "the receipt did not verify")
                return
            expected = "accepted" if result.status == 200 else "rejected"
            if receipt.status != expected:
                self.metrics.attempts.inc(outcome="bad_receipt")
                await self._retry_all([row], "receipt status does not match the HTTP status")
                return
            self.metrics.attempts.inc(outcome=receipt.status)
            await self._finish(row, receipt)
        elif result.status == 413:
            self.metrics.attempts.inc(outcome="too_large")
            await self._finish_unsigned(row, "rejected", "too_large")
        else:
            outcome = "invalid_packet" if result.status == 400 else f"http_{result.status}"
            self.metrics.attempts.inc(outcome=outcome)
            await self._retry_all([row], f"peer answered {result.status}")

    async def _verify(self, row: outbox_store.Claimed, wire: bytes) -> Receipt | None:
        def attempt() -> Receipt:
            return verify_receipt(
                wire,
                sender=self.config.node,
                pid=row.pid,
                pd=row.pd,
                recipients=row.recipients,
                keyset_for=self.directory.keyset,
                now=self.clock(),
            )

        try:
            return attempt()
        except InvalidReceipt:
            pass
        # Perhaps the peer rotated keys: refetch its keyset (rate-limited) and retry once.
        try:
            unverified, _sig = parse_receipt(wire)
        except InvalidReceipt as exc:
            log.warning("receipt_invalid", pid=row.pid, peer=row.node, error=str(exc))
            return None
        await self.directory.keyset_for_kid(row.node, unverified.kid)
        try:
            return attempt()
        except InvalidReceipt as exc:
            log.warning("receipt_invalid", pid=row.pid, peer=row.node, error=str(exc))
            return None

    async def _finish(self, row: outbox_store.Claimed, receipt: Receipt) -> None:
        keyset = self.directory.keyset(receipt.signer)
        serial = None if keyset is None else keyset.serial
        now = self.clock()

        async def job(conn: Connection, appender: Appender) -> int | None:
            done = await outbox_store.finish(
                conn,
                pid=row.pid,
                node=row.node,
                status="delivered" if receipt.status == "accepted" else "rejected",
                receipt=receipt.wire,
                receipt_serial=serial,
                reason=None if receipt.reason is None else receipt.reason.value,
                now=now,
            )
            if not done:
                return None
            appender.append(
                "delivery",
                pid=row.pid,
                pd=b64u_encode(row.pd),
                counterpart=row.node,
                status=receipt.status,
                reason=None if receipt.reason is None else receipt.reason.value,
                rid=receipt.rid,
                peer_log=receipt.log.to_json(),
                org=self.config.node,
            )
            case_ref = await conn.fetchval("SELECT case_ref FROM outbox WHERE pid = $1", row.pid)
            if case_ref is not None:
                await timeline_store.add(
                    conn,
                    case_ref=case_ref,
                    at=now,
                    direction="sent",
                    pid=row.pid,
                    schema_id=await conn.fetchval(
                        "SELECT schema_id FROM outbox WHERE pid = $1", row.pid
                    ),
                    counterpart=row.node,
                    event="delivered" if receipt.status == "accepted" else "rejected",
                )
            queued_at: int = await conn.fetchval(
                "SELECT created_at FROM outbox WHERE pid = $1", row.pid
            )
            return queued_at

        queued_at = await self.writer.run(job)
        if queued_at is not None:
            self.metrics.delivery_seconds.observe(max(0, now - queued_at) / 1000)
        self.metrics.deliveries.inc(status=receipt.status)
        log.info(
            "packet_delivered",
            pid=row.pid,
            peer=row.node,
            status=receipt.status,
            reason=None if receipt.reason is None else receipt.reason.value,
        )

    async def _finish_unsigned(self, row: outbox_store.Claimed, status: str, reason: str) -> None:
        now = self.clock()

        async def job(conn: Connection, appender: Appender) -> None:
            if await outbox_store.finish(
                conn,
                pid=row.pid,
                node=row.node,
                status=status,
                receipt=None,
                receipt_serial=None,
                reason=reason,
                now=now,
            ):
                appender.append(
                    "delivery",
                    pid=row.pid,
                    counterpart=row.node,
                    status=status,
                    reason=reason,
                    org=self.config.node,
                )

        await self.writer.run(job)
        self.metrics.deliveries.inc(status=status)

    def backoff_ms(self, attempts: int) -> int:
        """Exponential backoff with jitter: uniform in [0.2, 1] x min(max, base * 2^(n-1))."""
        ceiling = min(self.config.retry_max_s, self.config.retry_base_s * 2 ** max(0, attempts - 1))
        return int(random.uniform(0.2 * ceiling, ceiling) * 1000)  # noqa: S311

    async def _retry_all(self, rows: list[outbox_store.Claimed], error: str) -> None:
        now = self.clock()
        async with self.db.transaction() as conn:
            for row in rows:
                await outbox_store.reschedule(
                    conn,
                    pid=row.pid,
                    node=row.node,
                    at=now + self.backoff_ms(row.attempts),
                    error=error[:300],
                )
        log.info("delivery_retry", peer=rows[0].node, count=len(rows), error=error[:200])
