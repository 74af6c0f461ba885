"""`make bench ARGS=--attachments`: one large attachment between two node processes.

The sender and receiver are `handover serve` processes with their own embedded
PostgreSQL, as in the main benchmark. One file of `--attachment-mb` MiB
(default 1024) of seeded random bytes is

  1. uploaded to the sender's local API (`POST /api/v1/attachments`: encrypted
     as it arrives, stored in 1 MiB rows),
  2. sent: `POST /api/v1/packets` with `"attachments": [aid]`, then timed until
     the delivery is `delivered` (HEAD/PATCH uploads of 16 MiB to the
     receiver, its hash check, then the packet and its check 8a),
  3. downloaded from the receiver's inbox (checked whole, then decrypted).

For comparison, the same bytes are POSTed to the baseline server's `/upload`,
which streams them into PostgreSQL in 1 MiB rows, one commit each: a plain HTTP
upload into the same storage. `ratio` is the delivery leg's MB/s over the
baseline's (target >= 0.5). Peak RSS is the VmHWM of each node process.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any
from urllib.parse import quote

from procs import BenchFailure, Node, Server

from handover.cli.harness import example
from handover.cli.harness_stream import MIB, download_sha256, upload_random

SEED = 20_261_204
WHY = "benchmark: release planning for the shared case"


def _mbps(size: int, seconds: float) -> float:
    return round(size / 1e6 / seconds, 1) if seconds > 0 else 0.0


def _wait_delivered(sender: Node, pid: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, packet = sender.api("GET", f"/api/v1/packets/{pid}")
        if status == 200 and all(d["status"] != "pending" for d in packet["deliveries"]):
            if [d["status"] for d in packet["deliveries"]] != ["delivered"]:
                raise BenchFailure(f"the packet was not delivered: {packet}")
            return
        time.sleep(0.2)
    raise BenchFailure(f"the packet was still pending after {timeout:.0f} s")


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, sender: Node, receiver: Node, baseline: Server) -> dict[str, Any]:
    size = int(args.attachment_mb * MIB)
    token = sender.tokens["caseworker"]
    say(f"uploading {size / MIB:.0f} MiB to the sender's local API ...")
    started = time.monotonic()
    status, answer, sha = upload_random(sender.url, token, size, "bench.bin", seed=SEED)
    if status != 201:
        raise BenchFailure(f"upload answered {status}: {answer}")
    uploaded = time.monotonic()
    status, submitted = sender.api(
        "POST",
        "/api/v1/packets",
        {
            "to": [receiver.node],
            "schema": "handover/release-notice/1",
            "body": example("handover/release-notice/1"),
            "justification": WHY,
            "attachments": [answer["aid"]],
        },
    )
    if status != 202:
        raise BenchFailure(f"submission answered {status}: {submitted}")
    pid = submitted["packets"][0]["pid"]
    say("sending (uploads to the receiver, then the packet) ...")
    _wait_delivered(sender, pid, timeout=args.timeout)
    delivered = time.monotonic()
    path = f"/api/v1/inbox/{pid}/attachments/{answer['aid']}?justification={quote(WHY)}"
    got, got_sha, total, _headers = download_sha256(
        receiver.url, receiver.tokens["caseworker"], path, timeout=args.timeout
    )
    downloaded = time.monotonic()
    if (got, total, got_sha) != (200, size, sha):
        raise BenchFailure(
            f"download answered {got} with {total} bytes (sha match: {got_sha == sha})"
        )
    say("the same bytes to the baseline's /upload ...")
    base_started = time.monotonic()
    status, base_answer, base_sha = upload_random(
        baseline.url, "", size, "bench.bin", seed=SEED, path="/upload"
    )
    base_seconds = time.monotonic() - base_started
    if status != 201 or base_sha != sha:
        raise BenchFailure(f"baseline upload answered {status}: {base_answer}")
    delivery_mbps = _mbps(size, delivered - uploaded)
    baseline_mbps = _mbps(size, base_seconds)
    return {
        "mode": "attachments",
        "bytes": size,
        "local_upload_mbps": _mbps(size, uploaded - started),
        "delivery_mbps": delivery_mbps,
        "end_to_end_mbps": _mbps(size, delivered - started),
        "download_mbps": _mbps(size, downloaded - delivered),
        "baseline_upload_mbps": baseline_mbps,
        "ratio": round(delivery_mbps / baseline_mbps, 2) if baseline_mbps else None,
        "peak_rss_mb": {n.name: round(n.peak_rss_mb(), 1) for n in (sender, receiver)},
        "baseline_peak_rss_mb": round(baseline.peak_rss_mb(), 1),
    }


def print_table(r: dict[str, Any]) -> None:
    print(f"attachment of {r['bytes'] / MIB:.0f} MiB between two nodes")
    for key in ("local_upload_mbps", "delivery_mbps", "end_to_end_mbps", "download_mbps"):
        print(f"  {key:<22} {r[key]:>8} MB/s")
    baseline = r["baseline_upload_mbps"]
    print(f"  {'baseline_upload_mbps':<22} {baseline:>8} MB/s (plain HTTP into PostgreSQL)")
    print(f"  {'ratio':<22} {r['ratio']:>8} (delivery / baseline; target >= 0.5)")
    for name, mb in r["peak_rss_mb"].items():
        print(f"  peak RSS {name:<30} {mb:>8} MB (bound: 250)")
