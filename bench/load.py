"""The load: one aiohttp client at a fixed concurrency, and the receipt watcher.

`submit_all` POSTs the same request bytes N times through `concurrency`
workers sharing one ClientSession, and records when each answer arrived
(wall clock, ms since the epoch, the clock the nodes use too).

`watch_receipts` follows the sender's audit log. Every stored receipt is
recorded by the node as a `delivery` entry in the same transaction as the
receipt itself, and the chain's sequence numbers commit in order (one writer
holds the audit lock until its commit), so `seq > last` polling sees every
stored receipt exactly once, when it has committed. A receipt counts as
stored at the poll that first sees it (`seen_ms`: the poll runs as soon as the
commit's NOTIFY of `handover_events` arrives, else every POLL_S); the entry's
own timestamp (`at`, taken inside the transaction, before the commit) is kept
as the node-stamped figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from procs import BenchFailure

POLL_S = 0.02
EVENTS_CHANNEL = "handover_events"  # the node's NOTIFY channel for committed events
STALL_S = 120.0  # no receipt stored for this long: give up


CASE_REF_RE = re.compile(rb"HC-[0-9A-HJKMNP-TV-Z]{26}")
CROCKFORD = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def case_ref(n: int) -> bytes:
    """A distinct, schema-valid shared case reference for packet number n."""
    digits = bytearray()
    for _ in range(26):
        n, r = divmod(n, 32)
        digits.append(CROCKFORD[r])
    return b"HC-" + bytes(reversed(digits))


def now_ms() -> float:
    return time.time() * 1000


# A node takes at most 128 request bodies at once from one address (web/app.py);
# more requests in flight than this come from further loopback addresses.
PER_SOURCE = 100


@contextlib.asynccontextmanager
async def sessions(url: str, concurrency: int) -> AsyncIterator[list[aiohttp.ClientSession]]:
    """Client sessions for `concurrency` requests in flight: one per PER_SOURCE,
    each from its own loopback source address (127.0.0.1, .2, ...)."""
    n = max(1, -(-concurrency // PER_SOURCE)) if "//127.0.0.1:" in url else 1
    timeout = aiohttp.ClientTimeout(total=300)
    async with contextlib.AsyncExitStack() as stack:
        pool = []
        for i in range(n):
            connector = aiohttp.TCPConnector(
                limit=-(-concurrency // n), local_addr=(f"127.0.0.{i + 1}", 0) if n > 1 else None
            )
            pool.append(
                await stack.enter_async_context(
                    aiohttp.ClientSession(connector=connector, timeout=timeout)
                )
            )
        yield pool


@dataclass
class Submitted:
    started_ms: float = 0.0  # first request sent
    finished_ms: float = 0.0  # last answer received
    accepted: dict[str, float] = field(default_factory=dict)  # pid -> answer time (handover)
    latencies_ms: list[float] = field(default_factory=list)  # request -> answer (baseline)
    sent: dict[str, float] = field(default_factory=dict)  # pid -> when its request was due


async def submit_all(
    url: str,
    payload: bytes,
    count: int,
    concurrency: int,
    *,
    token: str | None,
    expect: int,
    pid_of: Callable[[Any], str] | None,
    out: Submitted,
) -> Submitted:
    """POST `payload` `count` times with `concurrency` requests in flight.

    Raises:
        BenchFailure: an answer other than `expect`.
    """
    # Earlier phases' records must not make the client's own full collections
    # (tens of ms) part of what this phase measures.
    gc.freeze()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    remaining = count

    # Each packet is about another person: a case reference of its own (the
    # same length, so the body size stays the same).
    case = CASE_REF_RE.search(payload)
    serial = 0

    async with sessions(url, concurrency) as pool:

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal remaining, serial
            while remaining > 0:
                remaining -= 1
                serial += 1
                data = payload
                if case is not None:
                    data = payload.replace(case.group(0), case_ref(serial))
                sent = now_ms()
                async with session.post(url, data=data, headers=headers) as resp:
                    body = await resp.read()
                    answered = now_ms()
                    if resp.status != expect:
                        raise BenchFailure(
                            f"POST {url} answered {resp.status}, not {expect}: "
                            f"{body[:500].decode('utf-8', 'replace')}"
                        )
                if pid_of is not None:
                    pid = pid_of(json.loads(body))
                    out.accepted[pid] = answered
                    out.sent[pid] = sent
                out.latencies_ms.append(answered - sent)

        out.started_ms = now_ms()
        await asyncio.gather(*(worker(pool[i % len(pool)]) for i in range(min(concurrency, count))))
        out.finished_ms = now_ms()
    return out


@dataclass
class Receipts:
    seen_ms: dict[str, float] = field(default_factory=dict)  # pid -> first poll that saw it
    at_ms: dict[str, int] = field(default_factory=dict)  # pid -> the entry's own time
    polls: int = 0


async def audit_head(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM audit_log"))
    finally:
        await conn.close()


async def watch_receipts(
    dsn: str, after_seq: int, submitted: Submitted, done_submitting: asyncio.Event
) -> Receipts:
    """Poll the sender's audit log until every accepted pid has a stored receipt.

    Raises:
        BenchFailure: no progress for STALL_S seconds.
    """
    out = Receipts()
    conn = await asyncpg.connect(dsn)
    # Each stored receipt's commit also writes a `delivery` event, whose NOTIFY
    # wakes this watcher at once; the poll interval is only the fallback.
    committed = asyncio.Event()
    await conn.add_listener(EVENTS_CHANNEL, lambda *_: committed.set())
    last = after_seq
    progress_at = time.monotonic()
    try:
        while True:
            committed.clear()
            rows = await conn.fetch(
                "SELECT seq, op, pid, at FROM audit_log WHERE seq > $1 ORDER BY seq", last
            )
            seen = now_ms()
            out.polls += 1
            for row in rows:
                last = row["seq"]
                if row["op"] == "delivery" and row["pid"] is not None:
                    out.seen_ms.setdefault(row["pid"], seen)
                    out.at_ms.setdefault(row["pid"], row["at"])
            if rows:
                progress_at = time.monotonic()
            if (
                done_submitting.is_set()
                and len(out.seen_ms) >= len(submitted.accepted)
                and all(p in out.seen_ms for p in submitted.accepted)
            ):
                return out
            if time.monotonic() - progress_at > STALL_S:
                pending = [p for p in submitted.accepted if p not in out.seen_ms]
                detail = await conn.fetch(
                    "SELECT status, attempts, last_error FROM deliveries"
                    " WHERE pid = ANY($1::text[]) LIMIT 5",
                    pending,
                )
                raise BenchFailure(
                    f"{len(pending)} receipts not stored after {STALL_S:.0f} s without progress;"
                    f" e.g. {[dict(r) for r in detail]}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(committed.wait(), POLL_S)
    finally:
        await conn.close()


async def first_failure(*aws: Awaitable[Any]) -> list[Any]:
    """Run concurrently; on the first exception cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [t.result() for t in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --- verification ------------------------------------------------------------------------------


async def verify_handover(
    sender_dsn: str, receiver_dsn: str, sender: str, pids: list[str]
) -> dict[str, int]:
    """Every packet delivered with a stored receipt and logged on both sides.

    Raises:
        BenchFailure: naming what is missing.
    """
    n = len(pids)
    problems = []
    s = await asyncpg.connect(sender_dsn)
    try:
        statuses = {
            f"{status}/{reason}" if reason else status: count
            for status, reason, count in await s.fetch(
                "SELECT status, reason, count(*) FROM deliveries WHERE pid = ANY($1::text[])"
                " AND (status <> 'delivered' OR receipt IS NOT NULL) GROUP BY status, reason",
                pids,
            )
        }
        outbox = await s.fetchval("SELECT count(*) FROM outbox WHERE pid = ANY($1::text[])", pids)
        sender_ops = dict(
            await s.fetch(
                "SELECT op, count(*) FROM audit_log WHERE pid = ANY($1::text[]) GROUP BY op", pids
            )
        )
    finally:
        await s.close()
    r = await asyncpg.connect(receiver_dsn)
    try:
        received = await r.fetchval(
            "SELECT count(*) FROM received WHERE sender = $1 AND pid = ANY($2::text[])"
            " AND status = 'accepted' AND body_box IS NOT NULL",
            sender,
            pids,
        )
        receiver_ops = dict(
            await r.fetch(
                "SELECT op, count(*) FROM audit_log WHERE pid = ANY($1::text[]) GROUP BY op", pids
            )
        )
    finally:
        await r.close()
    if outbox != n:
        problems.append(f"sender outbox holds {outbox} of {n} packets")
    if statuses.get("delivered", 0) != n:
        problems.append(f"sender deliveries with a stored receipt: {statuses} (want {n})")
    for op in ("disclosure", "delivery"):
        if sender_ops.get(op, 0) != n:
            problems.append(f"sender audit log has {sender_ops.get(op, 0)} {op} entries, not {n}")
    if received != n:
        problems.append(f"receiver holds {received} accepted packets, not {n}")
    if receiver_ops.get("collection", 0) != n:
        problems.append(
            f"receiver audit log has {receiver_ops.get('collection', 0)} collection entries,"
            f" not {n}"
        )
    if statuses.get("rejected/too_large"):
        problems.append(
            "deliveries rejected as too_large were refused as a whole batch (the sender's"
            " delivery batch exceeded the receiver's request size limit), not one by one;"
            " see bench/README.md"
        )
    if problems:
        raise BenchFailure("; ".join(problems))
    return {"delivered": n, "received": received}


async def baseline_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM ingest"))
    finally:
        await conn.close()
