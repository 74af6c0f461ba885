"""The benchmark's further modes (issue 14): bulk submission, open-loop latency,
and the concurrency sweep.

- **bulk**: the same packets submitted through `POST /api/v1/packets:batch`,
  `--bulk-size` submissions per request (default 128), `--bulk-concurrency`
  requests in flight (default 4); measured like the single mode, from the
  first request to the last receipt stored.
- **open loop**: single submissions sent on a fixed schedule (`rate` per
  second, evenly spaced) whatever the answers, so a slow answer does not slow
  the offered load; each packet's latency runs from the moment its request was
  due (not when it left: a request the client had to hold back still counts
  its wait) to its receipt being stored on the sender. This is the latency a
  user at that load sees; the single mode's figures are at saturation.
- **concurrency sweep**: the single mode and the baseline at several
  concurrencies, with CPU per packet by process.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import load
from procs import BenchFailure, Measured, Node, cpu_per_packet, cpu_snapshot


def _items(payload: bytes, first: int, n: int) -> list[bytes]:
    """`n` copies of one submission, each on a case of its own (numbered from `first`)."""
    case = load.CASE_REF_RE.search(payload)
    if case is None:
        return [payload] * n
    return [payload.replace(case.group(0), load.case_ref(first + i)) for i in range(n)]


def _text(body: bytes) -> str:
    return body[:500].decode("utf-8", "replace")


# Case numbers per mode, far apart so runs on the same nodes never share a case.
BULK_CASES = 10_000_000
OPEN_LOOP_CASES = 20_000_000


async def submit_bulk(
    url: str,
    payload: bytes,
    count: int,
    size: int,
    concurrency: int,
    *,
    token: str,
    out: load.Submitted,
) -> load.Submitted:
    """Submit `count` packets in batches of `size`, `concurrency` batches in flight.

    Raises:
        BenchFailure: a batch not answered 200, or an item not 202.
    """
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    batches = [(start, min(size, count - start)) for start in range(0, count, size)]
    queue = list(reversed(batches))
    async with load.sessions(url, concurrency) as pool:

        async def worker(session: aiohttp.ClientSession) -> None:
            while queue:
                start, n = queue.pop()
                data = b'{"submissions":[' + b",".join(_items(payload, BULK_CASES + start, n))
                data += b"]}"
                sent = load.now_ms()
                async with session.post(url, data=data, headers=headers) as resp:
                    body = await resp.read()
                    answered = load.now_ms()
                    if resp.status != 200:
                        raise BenchFailure(f"POST {url} answered {resp.status}: {_text(body)}")
                for result in json.loads(body)["results"]:
                    if result["status"] != 202:
                        raise BenchFailure(f"a batch item was answered {result}")
                    pid = result["packets"][0]["pid"]
                    out.accepted[pid] = answered
                    out.sent[pid] = sent
                out.latencies_ms.append(answered - sent)

        out.started_ms = load.now_ms()
        await asyncio.gather(*(worker(pool[i % len(pool)]) for i in range(concurrency)))
        out.finished_ms = load.now_ms()
    return out


async def submit_open_loop(
    url: str, payload: bytes, count: int, rate: float, *, token: str, out: load.Submitted
) -> load.Submitted:
    """Submit `count` packets at `rate` per second on a fixed schedule.

    Raises:
        BenchFailure: an answer other than 202.
    """
    # Earlier phases' records must not make the client's own full collections
    # (tens of ms) part of what this phase measures.
    gc.freeze()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    items = _items(payload, OPEN_LOOP_CASES, count)
    interval_ms = 1000.0 / rate
    async with load.sessions(url, 256) as pool:

        async def one(i: int, due: float) -> None:
            session = pool[i % len(pool)]
            async with session.post(url, data=items[i], headers=headers) as resp:
                body = await resp.read()
                answered = load.now_ms()
                if resp.status != 202:
                    raise BenchFailure(f"POST {url} answered {resp.status}: {_text(body)}")
            pid = json.loads(body)["packets"][0]["pid"]
            out.accepted[pid] = answered
            out.sent[pid] = due
            out.latencies_ms.append(answered - due)

        out.started_ms = start = load.now_ms()
        tasks = []
        for i in range(count):
            due = start + i * interval_ms
            delay = (due - load.now_ms()) / 1000
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        for task in asyncio.as_completed(tasks):
            await task  # the first failure ends the run
        out.finished_ms = load.now_ms()
    return out


@dataclass
class Driven:
    """One submitter's run: what it submitted, the receipts, and its cost."""

    submitted: load.Submitted
    receipts: load.Receipts
    pids: list[str]
    seconds: float  # from the first request to the last receipt stored
    cpu_ms: dict[str, float]  # per packet, by process


async def drive(
    sender: Node, receiver: Node, submit: Callable[[load.Submitted], Awaitable[Any]]
) -> Driven:
    """Run one submitter until every receipt is stored; verify both databases."""
    dsn = sender.dsn()
    after = await load.audit_head(dsn)
    submitted = load.Submitted()
    done = asyncio.Event()
    servers: dict[str, Measured] = {"sender": sender, "receiver": receiver}
    cpu_before = cpu_snapshot(servers)

    async def run() -> None:
        await submit(submitted)
        done.set()

    _, receipts = await load.first_failure(run(), load.watch_receipts(dsn, after, submitted, done))
    cpu_after = cpu_snapshot(servers)
    pids = list(submitted.accepted)
    await load.verify_handover(dsn, receiver.dsn(), sender.node, pids)
    end = max(receipts.seen_ms[p] for p in pids)
    seconds = (end - submitted.started_ms) / 1000
    cpu_ms = cpu_per_packet(cpu_before, cpu_after, len(pids), seconds)
    return Driven(submitted, receipts, pids, seconds, cpu_ms)


async def measured(
    sender: Node, receiver: Node, submit: Callable[[load.Submitted], Awaitable[Any]]
) -> dict[str, Any]:
    """:func:`drive`, with latencies from the answer (`p50_ms`, as the single
    mode) and from the request being due (`p50_from_submit_ms`)."""
    run = await drive(sender, receiver, submit)
    submitted, receipts, pids = run.submitted, run.receipts, run.pids
    from_answer = [max(0.0, receipts.seen_ms[p] - submitted.accepted[p]) for p in pids]
    from_submit = [max(0.0, receipts.seen_ms[p] - submitted.sent[p]) for p in pids]
    return {
        "packets": len(pids),
        "seconds": round(run.seconds, 3),
        "pps": round(len(pids) / run.seconds, 1),
        "p50_ms": round(load.percentile(from_answer, 50), 1),
        "p99_ms": round(load.percentile(from_answer, 99), 1),
        "p50_from_submit_ms": round(load.percentile(from_submit, 50), 1),
        "p99_from_submit_ms": round(load.percentile(from_submit, 99), 1),
        "max_from_submit_ms": round(max(from_submit), 1),
        "answer_p99_ms": round(load.percentile(submitted.latencies_ms, 99), 1),
        "cpu_ms_per_packet": run.cpu_ms,
    }
