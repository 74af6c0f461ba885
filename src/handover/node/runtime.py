"""The composition root: builds a node from its directory and runs its background work.

Nothing else constructs collaborators: every object gets what it needs through
its constructor here, hooks included. `handover serve` (web/server.py) puts
the HTTP listener in front; the CLI opens a node for administration; tests
open nodes on a :class:`MemoryTransport`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable
from pathlib import Path

import structlog

from handover.node import keystore
from handover.node.assignment import Assignments
from handover.node.attachment_access import AttachmentAccess
from handover.node.attachments import Attachments
from handover.node.auditing import AuditLog
from handover.node.auth import Authenticator, Refusal
from handover.node.budget import ByteBudget
from handover.node.config import NodeConfig, load_config
from handover.node.consultation import Consultations
from handover.node.delivery import DeliveryWorker
from handover.node.directory import Directory
from handover.node.events import EventFeed
from handover.node.inbox import Inbox
from handover.node.metrics import Metrics
from handover.node.pairing import Identity, Pairing
from handover.node.profiles import Profiles
from handover.node.receiving import Receiver
from handover.node.scanning import Scanner, parse_command
from handover.node.security import SecurityLog, TokenBuckets
from handover.node.sending import Sender
from handover.node.sessions import WebSessions
from handover.node.shredding import wrap_legacy
from handover.node.transport import Answer, Transport, UploadAnswer
from handover.node.uploading import Uploader
from handover.node.webhooks import WebhookWorker
from handover.protocol.errors import ConfigError, HandoverError
from handover.protocol.timeutil import DAY_MS, Clock, now_ms
from handover.store import continuity as continuity_store
from handover.store import events as event_store
from handover.store import outbox as outbox_store
from handover.store.auditlog import AuditWriter, verify_chain
from handover.store.db import Database
from handover.workflow.access import Operator
from handover.workflow.cases import Cases
from handover.workflow.corrections import Corrections
from handover.workflow.engine import Workflow
from handover.workflow.policy import Policy
from handover.workflow.rectification import Rectification
from handover.workflow.retention import Retention
from handover.workflow.reviews import Reviews
from handover.workflow.schemas import SchemaRegistry, default_registry
from handover.workflow.subject_access import SubjectAccess
from handover.workflow.subject_rules import SubjectSettings
from handover.workflow.vault import Vault

log = structlog.get_logger(__name__)
MAINTENANCE_S = 60.0
SECURITY_FLUSH_S = 5.0
# Entries of the own chain recomputed at start (a full check: `handover audit verify`).
AUDIT_TAIL_CHECK = 10_000
# Bytes of packets being read, sealed or opened at once (memory, not request
# count, is what large packets exhaust): one budget for what partner nodes
# send, one for local submissions, so neither can starve the other.
# A local submission is held in about five forms while it is sealed and queued
# (request, parsed body, canonical bytes, wire, stored box): 8 MiB of them
# keeps a node with the largest packets under 250 MB (issue 14).
WORK_BUDGET_BYTES = 32 * 1024 * 1024
LOCAL_BUDGET_BYTES = 8 * 1024 * 1024


class Node:
    def __init__(
        self,
        *,
        config: NodeConfig,
        db: Database,
        directory: Directory,
        transport: Transport,
        writer: AuditWriter,
        registry: SchemaRegistry,
        metrics: Metrics,
        vault: Vault,
        clock: Clock,
    ) -> None:
        self.config = config
        self.vault = vault
        self.db = db
        self.directory = directory
        self.transport = transport
        self.writer = writer
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self.policy = Policy.load(
            config.directory / config.policy_file if config.policy_file else None, registry.ids()
        )
        self.workflow = Workflow(
            node=config.node,
            kind=config.kind,
            policy=self.policy,
            peers=directory,
            registry=registry,
            clock=clock,
        )
        self.retention = Retention(
            node=config.node, db=db, writer=writer, policy=self.policy, vault=vault, clock=clock
        )
        self.security = SecurityLog(db, clock)
        self.attachments = Attachments(
            node=config.node,
            db=db,
            directory=directory,
            vault=vault,
            clock=clock,
            max_bytes=config.max_attachment_bytes,
            quota_bytes=config.attachment_quota_bytes,
        )
        corrections = Corrections(
            node=config.node,
            workflow=self.workflow,
            retention=self.retention,
            vault=vault,
            clock=clock,
        )
        self.sender = Sender(
            node=config.node,
            db=db,
            writer=writer,
            directory=directory,
            registry=registry,
            metrics=metrics,
            vault=vault,
            workflow=self.workflow,
            clock=clock,
            ttl_ms=config.ttl_days * DAY_MS,
            sent_hooks=[self.retention.on_sent],
            attachments=self.attachments,
        )
        self.receiver = Receiver(
            node=config.node,
            db=db,
            writer=writer,
            directory=directory,
            registry=registry,
            metrics=metrics,
            vault=vault,
            workflow=self.workflow,
            clock=clock,
            security=self.security,
            received_hooks=[corrections.on_received, self.retention.on_received],
            receive_checks=[corrections.check],
            attachments=self.attachments,
        )
        self.inbox = Inbox(
            node=config.node, db=db, writer=writer, vault=vault, purposes=self.policy.purposes
        )
        self.consultations = Consultations(
            node=config.node, writer=writer, purposes=self.policy.purposes
        )
        self.assignments = Assignments(
            node=config.node,
            db=db,
            writer=writer,
            clock=clock,
            required=config.case_assignment == "required",
            purposes=self.policy.purposes,
        )
        self.attachments.scan_command = parse_command(config.attachment_scan_command)
        self.scanner = Scanner(
            db=db, attachments=self.attachments, command=self.attachments.scan_command
        )
        self.attachment_access = AttachmentAccess(
            node=config.node, db=db, writer=writer, attachments=self.attachments, clock=clock
        )
        self.rectification = Rectification(
            db=db,
            writer=writer,
            workflow=self.workflow,
            peers=directory,
            corrections=corrections,
            submitter=self.sender,
            clock=clock,
        )
        self.reviews = Reviews(
            db=db,
            writer=writer,
            policy=self.policy,
            retention=self.retention,
            rectification=self.rectification,
            clock=clock,
        )
        self.cases = Cases(node=config.node, db=db, vault=vault, submitter=self.sender, clock=clock)
        self.subject_access = SubjectAccess(
            node=config.node,
            kind=config.kind,
            db=db,
            writer=writer,
            policy=self.policy,
            peers=directory,
            vault=vault,
            cases=self.cases,
            clock=clock,
            settings=SubjectSettings(
                legal_basis=config.subject_legal_basis,
                supervisory_authority=config.supervisory_authority,
                quote_third_party=config.subject_quote_third_party,
                name_staff=config.subject_name_staff,
            ),
        )
        self.delivery = DeliveryWorker(
            config=config,
            db=db,
            writer=writer,
            directory=directory,
            transport=transport,
            metrics=metrics,
            clock=clock,
        )
        self.delivery.uploader = Uploader(
            db=db,
            directory=directory,
            transport=transport,
            metrics=metrics,
            clock=clock,
            lease_ms=self.delivery.lease_ms,
        )
        self.audit = AuditLog(
            node=config.node, db=db, directory=directory, transport=transport, clock=clock
        )
        self.auth = Authenticator(db, clock)
        self._refusal_log = TokenBuckets(capacity=20, rate=1.0, max_keys=16)
        self.web_sessions = WebSessions(db, writer, clock, config.node)
        self.events = EventFeed(db=db, writer=writer, clock=clock)
        self.webhooks = WebhookWorker(
            db=db, storage_key=keystore.storage_key(config.keys_dir), clock=clock
        )
        self.profiles = Profiles(
            node=config.node, kind=config.kind, db=db, writer=writer, directory=directory,
            transport=transport, clock=clock,
        )  # fmt: skip
        self.pairing = Pairing(
            identity=Identity(config.node, config.kind, config.url), writer=writer,
            directory=directory, profiles=self.profiles, transport=transport,
            storage_key=keystore.storage_key(config.keys_dir), clock=clock,
        )  # fmt: skip
        self.chain_ok = True
        self.budget = ByteBudget(WORK_BUDGET_BYTES)
        self.local_budget = ByteBudget(LOCAL_BUDGET_BYTES)
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(cls, directory: Path, *, transport: Transport, clock: Clock = now_ms) -> Node:
        """Build a node from `directory` (config, keys, database) that talks to its
        peers through `transport`. Does not start background work; see :meth:`start`.

        Raises:
            ConfigError, StoreError: the node cannot be assembled.
        """
        config = load_config(directory)
        keys = keystore.load_keys(config.keys_dir)
        if keys.node != config.node:
            raise ConfigError(
                f"the keys in {config.keys_dir} are for {keys.node}, not {config.node}"
            )
        db = await Database.open(config.dsn, config.pgdata)
        node_directory = Directory(db, transport, keys, clock)
        await node_directory.load()
        return cls(
            config=config,
            db=db,
            directory=node_directory,
            transport=transport,
            writer=AuditWriter(db, clock),
            registry=default_registry(),
            metrics=Metrics(),
            vault=Vault(keystore.storage_key(config.keys_dir)),
            clock=clock,
        )

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        # A node whose recent audit entries were edited stays not ready until
        # someone looks (`handover audit verify` names the entry).
        tail = await verify_chain(self.db, tail=AUDIT_TAIL_CHECK)
        self.chain_ok = tail.ok
        self.metrics.audit_chain_ok.set(1 if tail.ok else 0)
        if not tail.ok:
            log.error("audit_chain_broken", bad_seq=tail.bad_seq, problem=tail.problem)
        self.writer.start()
        await wrap_legacy(self.db, self.vault)
        self.directory.maintain_own_keyset()
        await self.db.listen(
            outbox=self.delivery.wake.set,
            peers=lambda: asyncio.get_running_loop().create_task(self.directory.reload()),
            keys=self._reload_keys,
            events=self._events_committed,
            operators=self.auth.forget,
        )
        self.delivery.start()
        self.webhooks.start()
        self._tasks.append(asyncio.create_task(self._maintenance(), name="maintenance"))
        self._tasks.append(asyncio.create_task(self._witness_loop(), name="witness"))
        self._tasks.append(asyncio.create_task(self._flush_security(), name="security"))
        if self.scanner.command:
            self._tasks.append(asyncio.create_task(self.scanner.run(), name="scanner"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.delivery.stop()
        await self.webhooks.stop()
        with contextlib.suppress(HandoverError):
            await self.security.flush()
        await self.writer.stop()
        await self.transport.close()
        await self.db.close()

    def _events_committed(self) -> None:
        self.events.wake()
        self.webhooks.wake.set()

    def _reload_keys(self) -> None:
        try:
            self.directory.reload_keys()
            # After `keys rotate-storage`: data keys are now wrapped by the new key.
            self.vault.rekey(keystore.storage_key(self.config.keys_dir))
            log.info("keys_reloaded", serial=self.directory.keys.keyset.serial)
        except ConfigError as exc:
            log.error("keys_reload_failed", error=str(exc))

    async def _maintenance(self) -> None:
        while True:
            try:
                if self.directory.maintain_own_keyset():
                    log.info("own_keyset_resigned", serial=self.directory.keys.keyset.serial)
                await self.directory.refresh_due()
                await self.profiles.refresh_due()
                await self.retention.sweep()
                await self.rectification.retry()
                await self.attachments.sweep()
                await self.security.prune()
                await self.events.note_overdue()
                await self.events.prune()
            except HandoverError as exc:
                log.error("maintenance_failed", error=str(exc))
            # Every minute, or soon after a case's review dates were cleared (the
            # pause lets the transaction that cleared them commit first).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MAINTENANCE_S):
                    await self.retention.undated.wait()
                await asyncio.sleep(1.0)
            self.retention.undated.clear()

    async def _flush_security(self) -> None:
        while True:
            await asyncio.sleep(SECURITY_FLUSH_S)
            try:
                await self.security.flush()
            except HandoverError as exc:
                log.error("security_log_flush_failed", error=str(exc))

    async def _witness_loop(self) -> None:
        await asyncio.sleep(min(60.0, self.config.checkpoint_check_s))
        while True:
            try:
                for report in await self.audit.witness_peers():
                    if not report.ok:
                        log.error("peer_log_check_failed", **report.to_json())
            except HandoverError as exc:
                log.error("peer_log_check_error", error=str(exc))
            await asyncio.sleep(self.config.checkpoint_check_s)

    # --- what peers reach (the Endpoint of node/transport.py) ----------------------

    def keyset_wire(self) -> bytes:
        return self.directory.keys.keyset.wire

    async def checkpoint(self) -> bytes:
        return await self.audit.checkpoint()

    async def entry_digests(self, after: int, limit: int) -> list[bytes]:
        return await self.audit.entry_digests(after, limit)

    async def fork_declarations(self) -> list[bytes]:
        return await self.audit.fork_declarations()

    async def receive_many(self, wires: list[bytes], source: str = "memory") -> list[Answer]:
        return await self.receiver.receive_many(wires, source)

    async def upload_head(self, aid: str, ticket: str) -> UploadAnswer:
        return await self.attachments.head_answer(aid, ticket)

    async def upload_patch(
        self, aid: str, ticket: str, offset: int, body: AsyncIterable[bytes]
    ) -> UploadAnswer:
        return await self.attachments.patch_answer(aid, ticket, offset, body)

    async def profile_wire(self) -> bytes | None:
        return await self.profiles.own_wire()

    async def pairing_answer(self, message: bytes) -> bytes:
        return await self.pairing.answer(message)

    # --- used by the web layer -----------------------------------------------------

    async def authenticate(self, token: str) -> Operator | None:
        return await self.auth.authenticate(token)

    async def check_token(self, token: str) -> Operator | Refusal:
        """The operator holding `token`, or why it may not be used."""
        return await self.auth.check(token)

    def note_refused_access(
        self, code: str, reason: str, route: str, operator: str | None = None
    ) -> None:
        """Count and log a local API request refused at the edge (`unauthorized`,
        `forbidden`): the error code, why, the route and the operator if known;
        never the token."""
        self.metrics.access_refused.inc(code=code, reason=reason)
        # Logged up to 20 at once and 1 a second after, per reason: a client
        # retrying with a bad token cannot flood the log (the metric counts all).
        if self._refusal_log.take(reason):
            log.warning("access_refused", error=code, reason=reason, route=route, operator=operator)

    async def readiness(self) -> dict[str, bool]:
        keys_ok = True
        try:
            self.directory.keys.identity()
            keys_ok = self.clock() <= self.directory.keys.keyset.exp
        except ConfigError:
            keys_ok = False
        return {
            "database": await self.db.ping(),
            "keys": keys_ok,
            # False while work waits for memory: the node is at its limit.
            "budget": not (self.budget.exhausted or self.local_budget.exhausted),
            "audit_chain": self.chain_ok,
        }

    async def refresh_gauges(self) -> None:
        for name, budget in (("federation", self.budget), ("local", self.local_budget)):
            self.metrics.budget_in_use.set(budget.in_use, budget=name)
            self.metrics.budget_exhausted.set(budget.exhausted_total, budget=name)
        self.metrics.security_refusals.set(self.security.noted)
        now = self.clock()
        for node, peer in self.directory.peers.items():
            if peer.keyset is not None:
                self.metrics.peer_keyset_expiry.set(peer.keyset.exp / 1000, peer=node)
        with contextlib.suppress(HandoverError):
            async with self.db.connection() as conn:
                self.metrics.outbox_depth.set(await outbox_store.depth(conn))
                oldest = await outbox_store.oldest_pending(conn)
                self.metrics.outbox_oldest.set(0 if oldest is None else (now - oldest) / 1000)
                self.metrics.overdue.set(await continuity_store.overdue_count(conn, self.clock()))
                pending, failed = await event_store.queue_counts(conn)
                self.metrics.webhook_queue.set(pending, state="pending")
                self.metrics.webhook_queue.set(failed, state="failed")
        self.metrics.event_waits.set(self.events.open_streams)
