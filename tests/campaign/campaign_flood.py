"""A bounded flood of abusive requests at one node, from several loopback addresses.

    python campaign_flood.py PORT SECONDS SEED  ->  JSON statistics on stdout

Run by test_campaign_abuse.py in its own process (so the flood's CPU use does
not skew the latencies the test measures). Loopback only: every connection goes
to 127.0.0.1:PORT, bound to a source address 127.0.0.2 ... 127.0.0.9. New
requests stop after SECONDS; requests still open then get GRACE_S more to be
answered, and anything left is cut. The junk comes from a seeded generator.

    127.0.0.2-3   junk single packets      POST /federation/v1/packets
    127.0.0.4-5   junk batches (256 items)  POST /federation/v1/packets:batch
    127.0.0.6-7   slow bodies: 16 MiB declared, a byte every 0.5 s
    127.0.0.8-9   digest requests           GET /federation/v1/log/digests
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import sys
import time
from collections import Counter
from typing import Any

GRACE_S = 8.0
PACKETS = "/federation/v1/packets"
BATCH = "/federation/v1/packets:batch"
DIGESTS = "/federation/v1/log/digests"
SOURCES = {
    "single": ("127.0.0.2", "127.0.0.3"),
    "batch": ("127.0.0.4", "127.0.0.5"),
    "slow": ("127.0.0.6", "127.0.0.7"),
    "digests": ("127.0.0.8", "127.0.0.9"),
}
WORKERS = {"single": 4, "batch": 2, "slow": 20, "digests": 2}


class Stats:
    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()  # "route status" -> count
        self.errors: Counter[str] = Counter()
        self.bytes_sent = 0

    def as_json(self) -> dict[str, Any]:
        refused = sum(
            n for key, n in self.statuses.items() if int(key.rsplit(" ", 1)[1]) >= 400
        ) + sum(self.errors.values())
        return {
            "sent": dict(self.sent),
            "requests": sum(self.sent.values()),
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "refused": refused,
            "bytes_sent": self.bytes_sent,
        }


def b64(rng: random.Random, n: int) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(n)).decode().rstrip("=")


def wire(hp1: str, sig: str, ct: str) -> bytes:
    return json.dumps({"hp1": hp1, "sig": sig, "ct": ct}).encode()


def junk_packet(rng: random.Random) -> bytes:
    """Something that looks like a packet to a varying depth, never a valid one."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 4096))
    if kind == 1:  # a well-formed wire object around garbage
        return json.dumps(
            {"hp1": b64(rng, 300), "sig": b64(rng, 64), "ct": b64(rng, 4112)}
        ).encode()
    if kind == 2:  # a header that parses as JSON but is nothing like an hp1 header
        header = base64.urlsafe_b64encode(json.dumps({"typ": "hp1.packet", "v": 1}).encode())
        return json.dumps(
            {"hp1": header.decode().rstrip("="), "sig": b64(rng, 64), "ct": ""}
        ).encode()
    if kind == 3:  # a large body of base64 garbage (1 MiB)
        return json.dumps(
            {"hp1": b64(rng, 48), "sig": b64(rng, 64), "ct": b64(rng, 786_432)}
        ).encode()
    if kind == 4:  # duplicate keys and deep nesting
        return b'{"hp1":"a","hp1":"b","sig":' + b"[" * 5000 + b"]" * 5000 + b',"ct":""}'
    return b'{"hp1":"' + b"\xff\xfe" * 100 + b'"}'


def junk_item(rng: random.Random) -> Any:
    if rng.random() < 0.7:
        return rng.choice((1, "x", None, [], {"hp1": "", "sig": "", "ct": ""}))
    try:
        return json.loads(junk_packet(rng))
    except (ValueError, RecursionError):
        return {"hp1": b64(rng, 30), "sig": b64(rng, 64), "ct": b64(rng, 100)}


def junk_batch(rng: random.Random) -> bytes:
    return json.dumps({"packets": [junk_item(rng) for _ in range(256)]}).encode()


async def exchange(
    stats: Stats, source: str, port: int, route: str, head: bytes, body: bytes, timeout: float
) -> None:
    """One request on a fresh connection; the status (or the failure) is counted."""
    key = route.split("?")[0]
    stats.sent[key] += 1
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            writer.write(head)
            try:
                writer.write(body)
                await writer.drain()
                stats.bytes_sent += len(head) + len(body)
            except ConnectionError:
                pass  # answered (and closed) before the body was read: read the answer
            line = await reader.readline()
            if not line:
                stats.errors[f"{key} closed"] += 1
                return
            stats.statuses[f"{key} {int(line.split()[1])}"] += 1
            with contextlib.suppress(ConnectionError):
                await reader.read()
    except TimeoutError:
        stats.errors[f"{key} timeout"] += 1
    except ConnectionError:
        stats.errors[f"{key} reset"] += 1
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def post_head(path: str, length: int, content_type: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: node\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


async def singles(stats: Stats, port: int, source: str, rng: random.Random, end: float) -> None:
    while time.monotonic() < end:
        body = junk_packet(rng)
        head = post_head(PACKETS, len(body), "application/vnd.handover.packet+json")
        await exchange(stats, source, port, PACKETS, head, body, 30)


async def batches(stats: Stats, port: int, source: str, rng: random.Random, end: float) -> None:
    while time.monotonic() < end:
        body = junk_batch(rng)
        await exchange(stats, source, port, BATCH, post_head(BATCH, len(body)), body, 30)


async def digests(stats: Stats, port: int, source: str, rng: random.Random, end: float) -> None:
    while time.monotonic() < end:
        path = f"{DIGESTS}?after={rng.randrange(0, 5)}&limit=10000"
        head = f"GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n".encode()
        await exchange(stats, source, port, DIGESTS, head, b"", 30)


async def slow(stats: Stats, port: int, source: str, rng: random.Random, end: float) -> None:
    """Declare 16 MiB and trickle a byte every 0.5 s until the node answers."""
    while time.monotonic() < end:
        stats.sent[f"{PACKETS} (slow)"] += 1
        writer = None
        try:
            async with asyncio.timeout(end + GRACE_S - time.monotonic()):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(source, 0)
                )
                writer.write(post_head(PACKETS, 16 * 1024 * 1024) + b"{")
                answer = asyncio.ensure_future(reader.readline())
                while not answer.done():
                    await asyncio.wait([answer], timeout=0.5)
                    if not answer.done():
                        writer.write(b" ")
                        await writer.drain()
                line = answer.result()
                await asyncio.sleep(0.2)  # a refused slow client comes back, not at once
                if line:
                    stats.statuses[f"{PACKETS} (slow) {int(line.split()[1])}"] += 1
                else:
                    stats.errors[f"{PACKETS} (slow) closed"] += 1
        except TimeoutError:
            stats.errors[f"{PACKETS} (slow) unanswered at the end"] += 1
        except ConnectionError:
            stats.errors[f"{PACKETS} (slow) reset"] += 1
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


async def flood(port: int, seconds: float, seed: int) -> dict[str, Any]:
    stats = Stats()
    started = time.monotonic()
    end = started + seconds
    kinds = {"single": singles, "batch": batches, "slow": slow, "digests": digests}
    tasks = [
        asyncio.create_task(kinds[kind](stats, port, source, random.Random(f"{seed}-{n}"), end))
        for kind, sources in SOURCES.items()
        for source in sources
        for n in range(WORKERS[kind])
    ]
    done, pending = await asyncio.wait(tasks, timeout=seconds + GRACE_S + 2)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            stats.errors[f"worker {type(task.exception()).__name__}"] += 1
    result = stats.as_json()
    result["seconds"] = round(time.monotonic() - started, 1)
    result["cut_workers"] = len(pending)
    return result


def main() -> None:
    port, seconds, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(flood(port, seconds, seed))))


if __name__ == "__main__":
    main()
