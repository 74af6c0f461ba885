"""The node's audit log: batched appends to the hash chain, and verification.

Every write that must be logged (disclosure, collection, delivery, ...) runs
as a *job* through :class:`AuditWriter`. The writer takes whatever jobs are
queued, runs them in ONE transaction that holds the node-wide advisory lock
(so the chain stays exact across processes sharing the database), each job in
its own savepoint, and resolves each job's future only after the commit: the
group commit makes one durable fsync serve many requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from handover.protocol import auditchain
from handover.protocol.auditchain import LogPosition
from handover.protocol.canonical import b64u_encode, cj_loads
from handover.protocol.errors import EncodingError, HandoverError
from handover.protocol.timeutil import Clock
from handover.store import audit as audit_store
from handover.store.db import AUDIT_LOCK, Connection, Database, Deferred, translate

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Appender:
    """Appends entries inside a transaction that holds the audit lock, and
    collects the deferred writes of the jobs in the same group commit."""

    def __init__(self, seq: int, head: bytes, clock: Clock) -> None:
        self.seq = seq
        self.head = head
        self.clock = clock
        self.rows: list[audit_store.AuditRow] = []
        self.deferred = Deferred()

    def append(
        self, op: str, *, pid: str | None = None, case_ref: str | None = None, **fields: Any
    ) -> LogPosition:
        """Add an entry; returns the chain position after it.

        Fields hold identifiers and field names, never personal data values.
        `pid` and `case_ref` are also indexed for per-packet and per-case queries,
        and so is `purpose`: given, or the code a `justification` begins with.
        """
        at = self.clock()
        extra = {k: v for k, v in fields.items() if v is not None}
        purpose = extra.get("purpose") or audit_store.purpose_of(extra.get("justification"))
        if purpose is not None:
            extra["purpose"] = purpose
        if pid is not None:
            extra["pid"] = pid
        if case_ref is not None:
            extra["case"] = case_ref
        entry = auditchain.entry_bytes(self.seq + 1, at, op, **extra)
        self.seq += 1
        self.head = auditchain.next_head(self.head, entry)
        self.rows.append((self.seq, at, op, entry, self.head, pid, case_ref, purpose))
        return LogPosition(self.seq, self.head)

    def mark(self) -> tuple[int, bytes, int, dict[str, int]]:
        return self.seq, self.head, len(self.rows), self.deferred.mark()

    def reset(self, mark: tuple[int, bytes, int, dict[str, int]]) -> None:
        self.seq, self.head, n, deferred = mark
        del self.rows[n:]
        self.deferred.reset(deferred)

    async def flush(self, conn: Connection) -> None:
        await self.deferred.flush(conn)
        if self.rows:
            await audit_store.insert(conn, self.rows)
            self.rows = []


Job = Callable[[Connection, Appender], Awaitable[Any]]


@dataclass
class _Pending:
    job: Job
    future: asyncio.Future[Any]
    # The submitter's structlog context (request id, ...), so events a job logs
    # in the writer task still name the request they belong to.
    log_context: dict[str, Any] = field(default_factory=dict)


class _Retry(Exception):
    """The fast path failed: roll back and run the batch again, job by job."""


class _JobFailed(Exception):
    """A lone job (or its writes) failed: roll its transaction back, report the cause."""


class AuditWriter:
    """Serialises audit appends and batches them into group commits.

    Fast path: all jobs of a batch run in one transaction, their deferred writes
    and audit rows flushed once at the end. If any job or the flush fails, the
    transaction is rolled back and the batch runs again on the safe path, each
    job in its own savepoint and flushed on its own, so one failing job cannot
    harm the others. Jobs must therefore be safe to run twice until they commit:
    no side effects outside the transaction (log and count after `run` returns).
    """

    def __init__(self, db: Database, clock: Clock, max_batch: int = 512) -> None:
        self.db = db
        self.clock = clock
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.jobs = 0
        self.retries = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="audit-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(HandoverError("node is shutting down"))

    async def run(self, job: Job) -> Any:
        """Run `job(conn, appender)` in the next group commit; returns its result
        once committed, or raises what the job raised (its writes rolled back)."""
        if self._task is None:
            # No writer loop (CLI tools): run alone in our own transaction.
            return await self.run_alone(job)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(job, future, structlog.contextvars.get_contextvars()))
        return await future

    async def run_alone(self, job: Job) -> Any:
        async with self.db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK)
            seq, head = await audit_store.last_head(conn)
            appender = Appender(seq, head, self.clock)
            result = await job(conn, appender)
            await appender.flush(conn)
            return result

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) == 1:
                outcomes = await self._attempt_alone(batch[0])
            else:
                outcomes = await self._attempt(batch, safe=False)
        except _Retry as retry:
            self.retries += 1
            cause = retry.__cause__
            log.info(
                "group_commit_retried",
                jobs=len(batch),
                cause=type(cause).__name__,
                detail=str(cause)[:200] if isinstance(cause, HandoverError) else None,
            )
            try:
                outcomes = await self._attempt(batch, safe=True)
            except Exception as exc:
                self._fail(batch, exc)
                return
        except Exception as exc:
            self._fail(batch, exc)
            return
        self.batches += 1
        self.jobs += len(batch)
        for pending, result, error in outcomes:
            if pending.future.done():
                continue
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(result)

    def _fail(self, batch: list[_Pending], exc: Exception) -> None:
        log.error("audit_commit_failed", error=type(exc).__name__, jobs=len(batch))
        error = translate(exc)
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)

    async def _attempt_alone(
        self, pending: _Pending
    ) -> list[tuple[_Pending, Any, BaseException | None]]:
        """One job in its commit: no savepoint, its failure rolls the transaction back."""
        try:
            async with self.db.transaction() as conn:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK)
                seq, head = await audit_store.last_head(conn)
                appender = Appender(seq, head, self.clock)
                with structlog.contextvars.bound_contextvars(**pending.log_context):
                    try:
                        result = await pending.job(conn, appender)
                        await appender.flush(conn)
                    except Exception as exc:
                        raise _JobFailed from exc
        except _JobFailed as failed:
            cause = failed.__cause__
            assert isinstance(cause, Exception)
            return [(pending, None, translate(cause))]
        return [(pending, result, None)]

    async def _attempt(
        self, batch: list[_Pending], *, safe: bool
    ) -> list[tuple[_Pending, Any, BaseException | None]]:
        outcomes: list[tuple[_Pending, Any, BaseException | None]] = []
        async with self.db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK)
            seq, head = await audit_store.last_head(conn)
            appender = Appender(seq, head, self.clock)
            for pending in batch:
                with structlog.contextvars.bound_contextvars(**pending.log_context):
                    if not safe:
                        try:
                            result = await pending.job(conn, appender)
                        except Exception as exc:
                            raise _Retry from exc
                        outcomes.append((pending, result, None))
                        continue
                    mark = appender.mark()
                    try:
                        async with conn.transaction():  # a savepoint per job
                            result = await pending.job(conn, appender)
                            await appender.flush(conn)
                        outcomes.append((pending, result, None))
                    except Exception as exc:  # the job's own failure: others go on
                        appender.reset(mark)
                        outcomes.append((pending, None, translate(exc)))
            if not safe:
                try:
                    await appender.flush(conn)
                except Exception as exc:
                    raise _Retry from exc
        return outcomes


# --- verification --------------------------------------------------------------


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    head: bytes
    bad_seq: int | None = None
    problem: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "entries": self.entries,
            "head": b64u_encode(self.head),
        }
        if not self.ok:
            out["bad_seq"] = self.bad_seq
            out["problem"] = self.problem
        return out


async def verify_chain(
    db: Database, page_size: int = 5000, *, tail: int | None = None
) -> ChainReport:
    """Recompute the chain from the stored entry bytes; name the first bad entry.

    With `tail`, only the last `tail` entries are recomputed, starting from the
    head stored before them (the check `handover serve` makes at start).
    """
    head = auditchain.ZERO_HEAD
    expected_seq = 1
    async with db.connection() as conn:
        if tail is not None:
            last, _ = await audit_store.last_head(conn)
            start = max(0, last - tail)
            if start:
                (before,) = await audit_store.entries(conn, start - 1, 1)
                head = before.head
                expected_seq = start + 1
        while True:
            rows = await audit_store.entries(conn, expected_seq - 1, page_size)
            for row in rows:
                seq, entry = row.seq, row.entry
                if seq != expected_seq:
                    return ChainReport(False, seq - 1, head, expected_seq, "entry is missing")
                try:
                    parsed = cj_loads(entry)
                except EncodingError:
                    return ChainReport(False, seq - 1, head, seq, "entry is not canonical JSON")
                if not isinstance(parsed, dict) or parsed.get("seq") != seq:
                    return ChainReport(False, seq - 1, head, seq, "entry seq does not match")
                head = auditchain.next_head(head, entry)
                if head != row.head:
                    return ChainReport(
                        False, seq - 1, head, seq, "stored head does not match the recomputed chain"
                    )
                expected_seq += 1
            if len(rows) < page_size:
                return ChainReport(True, expected_seq - 1, head)
