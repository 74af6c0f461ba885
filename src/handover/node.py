"""The composition root: builds a node from its directory and runs it.

Nothing else constructs collaborators; everything reaches its peers through
the :class:`Node` built here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from handover import auditchain, keystore, witness
from handover.audit import AuditWriter, verify_chain
from handover.budget import ByteBudget
from handover.canonical import b64u_encode, cj_loads
from handover.cases import Cases
from handover.config import NodeConfig, load_config
from handover.delivery import DeliveryWorker
from handover.directory import Directory
from handover.errors import ConfigError, HandoverError
from handover.metrics import Metrics
from handover.policy import Policy
from handover.rectification import Rectification
from handover.retention import Retention
from handover.schemas import SchemaRegistry, default_registry
from handover.service import Operator, Service
from handover.store import audit as audit_store
from handover.store import cases as case_store
from handover.store import operators as operator_store
from handover.store import outbox as outbox_store
from handover.store.db import Database
from handover.subject_access import SubjectAccess
from handover.timeutil import Clock, now_ms
from handover.transport import HttpTransport
from handover.web.app import create_app
from handover.workflow import Workflow

log = structlog.get_logger(__name__)
CHANNELS = ("handover_outbox", "handover_peers", "handover_keys")
MAINTENANCE_S = 60.0
TOKEN_CACHE_S = 5.0
WORK_BUDGET_BYTES = 32 * 1024 * 1024


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Node:
    def __init__(
        self,
        *,
        config: NodeConfig,
        db: Database,
        directory: Directory,
        transport: HttpTransport,
        writer: AuditWriter,
        registry: SchemaRegistry,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.config = config
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
            config=config,
            policy=self.policy,
            directory=directory,
            registry=registry,
            clock=clock,
        )
        self.service = Service(
            config=config,
            db=db,
            writer=writer,
            directory=directory,
            registry=registry,
            metrics=metrics,
            clock=clock,
            storage_key=keystore.storage_key(config.keys_dir),
            workflow=self.workflow,
        )
        self.cases = Cases(db, self.service, clock)
        # Retention reviews and rectification hook into the workflow's send/receive path.
        self.retention = Retention(self.service)
        self.rectification = Rectification(self.service, self.retention)
        self.workflow.sent_hooks.append(self.retention.on_sent)
        self.workflow.received_hooks += [self.rectification.on_received, self.retention.on_received]
        self.workflow.receive_checks.append(self.rectification.check)
        self.subject_access = SubjectAccess(self.service, self.cases)
        self.delivery = DeliveryWorker(
            config=config,
            db=db,
            writer=writer,
            directory=directory,
            transport=transport,
            metrics=metrics,
            clock=clock,
        )
        # Bytes of packets being sealed or opened at once (memory, not request count,
        # is what large packets exhaust).
        self.budget = ByteBudget(WORK_BUDGET_BYTES)
        self._tasks: list[asyncio.Task[None]] = []
        self._tokens: dict[str, tuple[Operator, float]] = {}
        self._listener: Any = None

    @classmethod
    async def open(cls, directory: Path, clock: Clock = now_ms) -> Node:
        """Build a node from `directory` (config, keys, database). Does not start
        background work; see :meth:`start`.

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
        transport = HttpTransport(timeout_s=config.delivery_timeout_s)
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
            clock=clock,
        )

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self.writer.start()
        self.directory.maintain_own_keyset()
        await self._listen()
        self.delivery.start()
        self._tasks.append(asyncio.create_task(self._maintenance(), name="maintenance"))
        self._tasks.append(asyncio.create_task(self._witness_loop(), name="witness"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.delivery.stop()
        await self.writer.stop()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        await self.transport.close()
        await self.db.close()

    async def _listen(self) -> None:
        """LISTEN for new outbox rows, pins and key rotations from any process."""
        self._listener = await self.db.pool.acquire()

        def on_notify(_conn: object, _pid: int, channel: str, _payload: str) -> None:
            if channel == "handover_outbox":
                self.delivery.wake.set()
            elif channel == "handover_peers":
                asyncio.get_running_loop().create_task(self.directory.load())
            elif channel == "handover_keys":
                self._reload_keys()

        for channel in CHANNELS:
            await self._listener.add_listener(channel, on_notify)

    def _reload_keys(self) -> None:
        try:
            self.directory.reload_keys()
            log.info("keys_reloaded", serial=self.directory.keys.keyset.serial)
        except ConfigError as exc:
            log.error("keys_reload_failed", error=str(exc))

    async def _maintenance(self) -> None:
        while True:
            try:
                if self.directory.maintain_own_keyset():
                    log.info("own_keyset_resigned", serial=self.directory.keys.keyset.serial)
                await self.directory.refresh_due()
                await self.retention.sweep()
            except HandoverError as exc:
                log.error("maintenance_failed", error=str(exc))
            await asyncio.sleep(MAINTENANCE_S)

    async def _witness_loop(self) -> None:
        await asyncio.sleep(min(60.0, self.config.checkpoint_check_s))
        while True:
            try:
                reports = await witness.verify_peers(
                    self.db, self.directory, self.transport, self.clock
                )
                for report in reports:
                    if not report.ok:
                        log.error("peer_log_check_failed", **report.to_json())
            except (HandoverError, asyncpg.PostgresError) as exc:
                log.error("peer_log_check_error", error=str(exc))
            await asyncio.sleep(self.config.checkpoint_check_s)

    # --- used by the web layer -----------------------------------------------------

    async def authenticate(self, token: str) -> Operator | None:
        """The operator holding this bearer token. Answers are cached for a few
        seconds (a disabled operator loses access within TOKEN_CACHE_S)."""
        now = time.monotonic()
        cached = self._tokens.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        digest = token_hash(token)
        async with self.db.connection() as conn:
            found = await operator_store.by_token_hash(conn, digest)
        operator = None if found is None else Operator(*found)
        if operator is not None:
            if len(self._tokens) > 1000:
                self._tokens.clear()
            self._tokens[token] = (operator, now + TOKEN_CACHE_S)
        return operator

    async def checkpoint(self) -> bytes:
        async with self.db.connection() as conn:
            seq, head = await audit_store.last_head(conn)
        identity = self.directory.keys.identity()
        return auditchain.make_checkpoint(
            node=self.config.node,
            kid=identity.kid,
            key=identity.key,
            position=auditchain.LogPosition(seq, head),
            now=self.clock(),
        )

    async def entry_digests(self, after: int, limit: int) -> list[bytes]:
        async with self.db.connection() as conn:
            rows = await audit_store.entries(conn, after, limit)
        return [auditchain.entry_digest(entry) for _seq, entry, _head in rows]

    async def audit_entries(
        self, *, after: int, limit: int, case_ref: str | None, pid: str | None
    ) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            rows = await audit_store.page(
                conn, after=after, limit=limit, case_ref=case_ref, pid=pid
            )
        return [
            {"seq": r["seq"], "entry": cj_loads(r["entry"]), "head": b64u_encode(r["head"])}
            for r in rows
        ]

    async def verify_audit(self, *, peers: bool) -> dict[str, Any]:
        chain = await verify_chain(self.db)
        out: dict[str, Any] = {"ok": chain.ok, "chain": chain.to_json()}
        if peers:
            reports = await witness.verify_peers(
                self.db, self.directory, self.transport, self.clock
            )
            out["peers"] = [r.to_json() for r in reports]
            out["ok"] = chain.ok and all(r.ok for r in reports)
        return out

    async def readiness(self) -> dict[str, bool]:
        keys_ok = True
        try:
            self.directory.keys.identity()
            keys_ok = self.clock() <= self.directory.keys.keyset.exp
        except ConfigError:
            keys_ok = False
        return {"database": await self.db.ping(), "keys": keys_ok}

    async def refresh_gauges(self) -> None:
        with contextlib.suppress(HandoverError):
            async with self.db.connection() as conn:
                self.metrics.outbox_depth.set(await outbox_store.depth(conn))
                self.metrics.overdue.set(await case_store.overdue_count(conn, self.clock()))


async def serve(directory: Path) -> None:
    """Run a node until SIGINT/SIGTERM: HTTP server, delivery worker, maintenance."""
    node = await Node.open(directory)
    await node.start()
    app = create_app(node)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, node.config.host, node.config.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await node.close()
        raise ConfigError(f"cannot listen on {node.config.listen}: {exc.strerror}") from exc
    log.info(
        "node_started",
        node=node.config.node,
        kind=node.config.kind,
        listen=node.config.listen,
        url=node.config.url,
        fingerprint=node.directory.keys.fingerprint,
        embedded_db=node.db.embedded is not None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("node_stopping", node=node.config.node)
    await runner.cleanup()
    await node.close()
