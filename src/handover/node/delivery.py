"""The outbox worker: claim due deliveries, POST them, store the signed receipts.

Rows are claimed in batches with `FOR UPDATE SKIP LOCKED` and leased for
longer than a request can take, so several processes sharing one database
never deliver a row at the same time. Up to `delivery_concurrency` batches
are in flight at once; the receipts of one batch are verified and stored in
one audit-writer job. Network errors and 5xx answers are retried with
exponential backoff and jitter until the packet expires; a signed rejection
receipt ends a delivery as `rejected`; a packet that expires undelivered
becomes a dead letter (`expired`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections import defaultdict
from dataclasses import dataclass

import structlog

from handover.node.config import NodeConfig
from handover.node.directory import Directory
from handover.node.errors import TransportError
from handover.node.metrics import Metrics
from handover.node.transport import Answer, Outcome, Transport
from handover.node.uploading import Uploader
from handover.protocol.canonical import b64u_encode
from handover.protocol.errors import InvalidReceipt
from handover.protocol.receipt import Receipt, parse_receipt, verify_receipt
from handover.protocol.timeutil import Clock
from handover.store import events as event_store
from handover.store import outbox as outbox_store
from handover.store import peers as peer_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database

log = structlog.get_logger(__name__)
POLL_S = 1.0
COALESCE_S = 0.02
COALESCE_MAX_BYTES = 1024 * 1024
EXPIRY_CHECK_MS = 5_000
# Packets held in memory for delivery at once (claims stop above it): large
# packets are claimed a few at a time, small ones a full batch at a time. Each
# claimed byte is held twice (the wire and the batch request), and what is in
# flight (at most MAX_INFLIGHT_BYTES + MAX_CLAIM_BYTES) stays within a
# receiver's 32 MiB budget, which would otherwise answer `busy` (issue 14).
MAX_INFLIGHT_BYTES = 16 * 1024 * 1024
MAX_CLAIM_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class _Final:
    """A delivery's final state, ready to store."""

    row: outbox_store.Claimed
    status: str  # delivered | rejected
    receipt: Receipt | None
    reason: str | None


class DeliveryWorker:
    def __init__(
        self,
        *,
        config: NodeConfig,
        db: Database,
        writer: AuditWriter,
        directory: Directory,
        transport: Transport,
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
        self._inflight: set[asyncio.Task[None]] = set()
        self._inflight_bytes = 0
        # Lease longer than any request can take (timeout + margin).
        self.lease_ms = int((config.delivery_timeout_s + 30) * 1000)
        self._last_expiry = 0
        # Set by the composition root: uploads each packet's attachments first.
        self.uploader: Uploader | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="delivery")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._inflight.clear()

    async def _loop(self) -> None:
        while True:
            self.wake.clear()
            claimed = False
            try:
                claimed = await self.run_once()
            except Exception as exc:  # keep the worker alive; the rows stay pending
                log.error("delivery_round_failed", error=type(exc).__name__, detail=str(exc))
            if (
                claimed
                and len(self._inflight) < self.config.delivery_concurrency
                and self._inflight_bytes < MAX_INFLIGHT_BYTES
            ):
                continue  # more may be due
            waker = asyncio.ensure_future(self.wake.wait())
            try:
                await asyncio.wait(
                    {waker, *self._inflight}, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waker.cancel()
            if (
                waker.done()
                and not waker.cancelled()
                and self._inflight
                and self._inflight_bytes < COALESCE_MAX_BYTES
            ):
                # New rows while a batch is on its way and nothing was left over: let
                # them gather until that batch is answered (at most COALESCE_S), so
                # moderate load goes in fewer, fuller batches instead of one POST,
                # one receiving commit and one finishing commit per packet or two.
                # Not for large packets: their fixed costs are small beside their
                # size, and fuller batches of them only raise the receiver's peak.
                await asyncio.wait(
                    self._inflight, timeout=COALESCE_S, return_when=asyncio.FIRST_COMPLETED
                )

    async def run_once(self) -> bool:
        """Expire dead letters (every few seconds), then claim batches until the
        in-flight limit is reached or nothing more is due. True if more may be
        due (the last claim was cut by its limit or byte budget)."""
        now = self.clock()
        if now - self._last_expiry >= EXPIRY_CHECK_MS:
            self._last_expiry = now
            await self._expire(now)
        claimed_any = False
        more = True
        while (
            more
            and len(self._inflight) < self.config.delivery_concurrency
            and self._inflight_bytes < MAX_INFLIGHT_BYTES
        ):
            async with self.db.connection() as conn:
                claimed, more = await outbox_store.claim_batch(
                    conn,
                    now=self.clock(),
                    limit=self.config.delivery_batch,
                    lease_ms=self.lease_ms,
                    max_bytes=MAX_CLAIM_BYTES,
                )
            if not claimed:
                break
            claimed_any = True
            by_node: dict[str, list[outbox_store.Claimed]] = defaultdict(list)
            for row in claimed:
                by_node[row.node].append(row)
            for node, rows in by_node.items():
                size = sum(len(r.wire) for r in rows)
                self._inflight_bytes += size
                task = asyncio.create_task(self._deliver(node, rows), name=f"deliver-{node}")
                self._inflight.add(task)
                task.add_done_callback(functools.partial(self._done, size=size))
        return claimed_any and more

    def _done(self, task: asyncio.Task[None], *, size: int) -> None:
        self._inflight.discard(task)
        self._inflight_bytes -= size

    async def _expire(self, now: int) -> int:
        async def job(conn: Connection, appender: Appender) -> list[str]:
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
                await event_store.add(
                    conn,
                    appender.deferred,
                    "delivery",
                    at=now,
                    pid=pid,
                    node=node,
                    status="expired",
                )
            return [node for _pid, node in rows]

        async with self.db.connection() as conn:
            if not await outbox_store.any_expired(conn, now):
                return 0
        peers: list[str] = await self.writer.run(job)
        for peer in peers:
            self.metrics.dead_letters.inc(peer=peer)
        if peers:
            self.metrics.deliveries.inc(len(peers), status="expired")
            log.warning("deliveries_expired", count=len(peers))
        return len(peers)

    async def _deliver(self, node: str, rows: list[outbox_store.Claimed]) -> None:
        try:
            url = self.directory.url(node)
            if url is None:
                await self._retry(rows, "recipient is no longer a pinned peer")
                return
            rows = await self._upload_attachments(url, node, rows)
            if not rows:
                return
            try:
                results = await self.transport.post_batch(url, [r.wire for r in rows])
            except TransportError as exc:
                self.metrics.attempts.inc(len(rows), outcome="network_error")
                await self._retry(rows, str(exc))
                return
            finals: list[_Final] = []
            retries: dict[str, list[outbox_store.Claimed]] = defaultdict(list)
            for row, result in zip(rows, results, strict=True):
                outcome = await self._classify(row, result)
                if isinstance(outcome, _Final):
                    finals.append(outcome)
                else:
                    retries[outcome].append(row)
            if finals:
                await self._finish(finals)
            for error, again in retries.items():
                await self._retry(again, error)
        except Exception as exc:  # the lease expires and the rows are claimed again
            log.error("delivery_failed", peer=node, error=type(exc).__name__, detail=str(exc))

    async def _upload_attachments(
        self, url: str, node: str, rows: list[outbox_store.Claimed]
    ) -> list[outbox_store.Claimed]:
        """Section 8 step 4: each packet's attachments go to the recipient before
        the packet. Rows whose uploads did not complete are retried later."""
        if self.uploader is None:
            return rows
        ready = []
        for row in rows:
            if not row.carrying:
                ready.append(row)
                continue
            error = await self.uploader.upload_all(url, node, row.pid, row.exp)
            if error is None:
                ready.append(row)
            else:
                self.metrics.attempts.inc(outcome="attachment_upload")
                await self._retry([row], error)
        return ready

    async def _classify(self, row: outbox_store.Claimed, answer: Answer) -> _Final | str:
        """A final state for this delivery, or the error text to retry with."""
        if answer.outcome in (Outcome.ACCEPTED, Outcome.REJECTED) and answer.receipt is not None:
            receipt = await self._verify(row, answer.receipt)
            if receipt is None:
                self.metrics.attempts.inc(outcome="bad_receipt")
                return "the receipt did not verify"
            if receipt.status != answer.outcome.value:
                self.metrics.attempts.inc(outcome="bad_receipt")
                return "the receipt's status does not match the answer"
            self.metrics.attempts.inc(outcome=receipt.status)
            return _Final(
                row,
                "delivered" if receipt.status == "accepted" else "rejected",
                receipt,
                None if receipt.reason is None else receipt.reason.value,
            )
        if answer.outcome is Outcome.TOO_LARGE:
            self.metrics.attempts.inc(outcome="too_large")
            return _Final(row, "rejected", None, "too_large")
        self.metrics.attempts.inc(outcome=answer.outcome.value)
        return f"peer answered {answer.outcome.value}" + (
            f" ({answer.detail})" if answer.detail else ""
        )

    async def _verify(self, row: outbox_store.Claimed, wire: bytes) -> Receipt | None:
        def attempt() -> Receipt:
            return verify_receipt(
                wire,
                sender=self.config.node,
                pid=row.pid,
                pd=row.pd,
                recipient=row.node,
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

    async def _finish(self, finals: list[_Final]) -> None:
        """Store the final states of one batch, each with its audit entry, in one job."""
        now = self.clock()
        serials = {}
        for final in finals:
            if final.receipt is not None:
                keyset = self.directory.keyset(final.receipt.signer)
                serials[final.row.pid] = None if keyset is None else keyset.serial

        async def job(conn: Connection, appender: Appender) -> list[tuple[_Final, int]]:
            updated = await outbox_store.finish_many(
                conn,
                [
                    (
                        f.row.pid,
                        f.row.node,
                        f.status,
                        None if f.receipt is None else f.receipt.wire,
                        serials.get(f.row.pid),
                        f.reason,
                    )
                    for f in finals
                ],
                now=now,
            )
            done = []
            for final in finals:
                info = updated.get((final.row.pid, final.row.node))
                if info is None:
                    continue  # no longer pending: finished by another worker
                queued_at = info
                receipt = final.receipt
                appender.append(
                    "delivery",
                    pid=final.row.pid,
                    pd=b64u_encode(final.row.pd),
                    counterpart=final.row.node,
                    status=final.status if receipt is None else receipt.status,
                    reason=final.reason,
                    rid=None if receipt is None else receipt.rid,
                    peer_log=None if receipt is None else receipt.log.to_json(),
                    org=self.config.node,
                )
                await event_store.add(
                    conn,
                    appender.deferred,
                    "delivery",
                    at=now,
                    pid=final.row.pid,
                    node=final.row.node,
                    status=final.status,
                )
                done.append((final, queued_at))
            # In the same commit: one more autocommitted statement per batch otherwise.
            for peer in sorted({f.row.node for f, _ in done if f.receipt is not None}):
                await peer_store.note_success(conn, peer, now)
            return done

        done: list[tuple[_Final, int]] = await self.writer.run(job)
        for final, queued_at in done:
            peer = final.row.node
            self.metrics.deliveries.inc(status=final.status)
            self.metrics.delivery_seconds.observe(max(0, now - queued_at) / 1000)
            self.metrics.peer_delivery_seconds.observe(max(0, now - queued_at) / 1000, peer=peer)
            if final.receipt is not None:
                self.metrics.peer_last_success.set(now / 1000, peer=peer)
            log.info(
                "packet_delivered",
                pid=final.row.pid,
                peer=final.row.node,
                status=final.status,
                reason=final.reason,
            )

    def backoff_ms(self, attempts: int) -> int:
        """Exponential backoff with jitter: uniform in [0.2, 1] x min(max, base * 2^(n-1))."""
        ceiling = min(self.config.retry_max_s, self.config.retry_base_s * 2 ** max(0, attempts - 1))
        return int(random.uniform(0.2 * ceiling, ceiling) * 1000)  # noqa: S311

    async def _retry(self, rows: list[outbox_store.Claimed], error: str) -> None:
        now = self.clock()
        self.metrics.peer_failures.inc(len(rows), peer=rows[0].node)
        async with self.db.connection() as conn:
            await outbox_store.reschedule_many(
                conn,
                [(r.pid, r.node, now + self.backoff_ms(r.attempts)) for r in rows],
                error=error[:300],
            )
            await peer_store.note_failure(conn, rows[0].node, error, now)
        log.info("delivery_retry", peer=rows[0].node, count=len(rows), error=error[:200])
