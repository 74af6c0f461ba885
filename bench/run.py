"""`make bench`: handover's throughput and latency next to a baseline and a ceiling.

A sender and a receiver node run as separate `handover serve` processes on
this machine, each with its own embedded PostgreSQL and default settings. One
client submits N release-notice packets through the sender's local API at a
fixed concurrency and waits until every receipt is stored on the sender; each
packet is validated, sealed, audit-logged, delivered, opened, stored and
receipted exactly as in normal operation. For comparison, in the same run:

  baseline  the same client POSTs the same request bytes to a minimal aiohttp
            server that INSERTs each into its own PostgreSQL (one durable
            commit each): what a team would build without handover;
  ceiling   the isolated CPU cost of one packet's validation, sealing,
            opening and receipt on both sides, measured in this process:
            ceiling_pps = cores / cost.

Prints a table, then as the last line one JSON object. Exits 1 if anything
failed (a refused submission, a packet not delivered, a row missing).

    python bench/run.py [--packets N] [--concurrency C] [--sweep] [--keep] ...

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import asyncpg
import attachments
import bodies
import ceiling
import load
import modes
import procs
from procs import BenchFailure, Node, Processes, Server

from handover.cli.harness import HarnessError

SENDER = ("prison.bench.example", "prison")
RECEIVER = ("probation.bench.example", "probation")
JUSTIFICATION = "benchmark: release planning for the shared case"
SWEEP_SIZES = (1024, 16 * 1024, 256 * 1024, 1024 * 1024)


class Interrupted(Exception):
    """SIGTERM or the global timeout."""


# --- one measured run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    packets: int
    seconds: float
    pps: float
    submit_pps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    p50_node_ms: float = 0.0
    p99_node_ms: float = 0.0
    cpu_ms: dict[str, float] = dataclasses.field(default_factory=dict)  # per packet


def submission(body: dict[str, Any]) -> bytes:
    payload = {
        "to": [RECEIVER[0]],
        "schema": bodies.SCHEMA_ID,
        "body": body,
        "justification": JUSTIFICATION,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def handover_run(
    sender: Node, receiver: Node, payload: bytes, count: int, concurrency: int
) -> Run:
    """Submit `count` packets and wait for every receipt; verify both databases."""

    async def submit(out: load.Submitted) -> None:
        await load.submit_all(
            sender.url + "/api/v1/packets",
            payload,
            count,
            concurrency,
            token=sender.tokens["caseworker"],
            expect=202,
            pid_of=lambda answer: answer["packets"][0]["pid"],
            out=out,
        )

    run = await modes.drive(sender, receiver, submit)
    submitted, receipts = run.submitted, run.receipts
    latencies = [max(0.0, receipts.seen_ms[p] - submitted.accepted[p]) for p in run.pids]
    node_stamped = [max(0.0, receipts.at_ms[p] - submitted.accepted[p]) for p in run.pids]
    submit_seconds = (submitted.finished_ms - submitted.started_ms) / 1000
    return Run(
        packets=count,
        seconds=run.seconds,
        pps=count / run.seconds,
        submit_pps=count / submit_seconds,
        p50_ms=load.percentile(latencies, 50),
        p99_ms=load.percentile(latencies, 99),
        max_ms=max(latencies),
        p50_node_ms=load.percentile(node_stamped, 50),
        p99_node_ms=load.percentile(node_stamped, 99),
        cpu_ms=run.cpu_ms,
    )


async def baseline_run(server: Server, payload: bytes, count: int, concurrency: int) -> Run:
    """POST `count` times to the baseline server; verify the rows are there."""
    dsn = server.dsn()
    before = await load.baseline_rows(dsn)
    cpu_before = procs.cpu_snapshot({"server": server})
    submitted = await load.submit_all(
        server.url + "/ingest",
        payload,
        count,
        concurrency,
        token=None,
        expect=201,
        pid_of=None,
        out=load.Submitted(),
    )
    cpu_after = procs.cpu_snapshot({"server": server})
    rows = await load.baseline_rows(dsn) - before
    if rows != count:
        raise BenchFailure(f"the baseline stored {rows} rows, not {count}")
    seconds = (submitted.finished_ms - submitted.started_ms) / 1000
    return Run(
        packets=count,
        seconds=seconds,
        pps=count / seconds,
        submit_pps=count / seconds,
        p50_ms=load.percentile(submitted.latencies_ms, 50),
        p99_ms=load.percentile(submitted.latencies_ms, 99),
        max_ms=max(submitted.latencies_ms),
        cpu_ms=procs.cpu_per_packet(cpu_before, cpu_after, count, seconds),
    )


# --- setting up ----------------------------------------------------------------------------------


def node_settings(args: argparse.Namespace) -> dict[str, int]:
    return {} if args.delivery_batch is None else {"delivery_batch": args.delivery_batch}


def start_nodes(processes: Processes, settings: dict[str, int]) -> tuple[Node, Node]:
    say("starting sender and receiver nodes (handover init + serve, embedded PostgreSQL) ...")
    if settings:
        say(f"NOT the default settings: {settings}")
    sender = processes.node(*SENDER, settings)
    receiver = processes.node(*RECEIVER, settings)
    sender.wait_ready(timeout=120)
    receiver.wait_ready(timeout=120)
    procs.pin_and_authorise(sender, receiver)
    return sender, receiver


def start_baseline(processes: Processes) -> Server:
    say("starting the baseline server (aiohttp + asyncpg, embedded PostgreSQL) ...")
    server = processes.baseline()
    server.wait_ready("/healthz")
    return server


def attempt_outcomes(node: Node) -> dict[str, int]:
    """The sender's delivery attempts by outcome, from its /metrics."""
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith('handover_delivery_attempts_total{outcome="'):
            label = line.split('"')[1]
            out[label] = int(float(line.rsplit(" ", 1)[1]))
    return out


def audit_verify(node: Node) -> None:
    report = json.loads(procs.cli("audit", "verify", "--dir", str(node.dir)))
    if not report.get("ok"):
        raise BenchFailure(f"handover audit verify failed on {node.node}: {report}")


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def ceiling_iterations(size: int, requested: int) -> int:
    return max(20, min(requested, (4 * 1024 * 1024) // max(size, 1)))


# --- the two modes -----------------------------------------------------------------------------


def run_main(args: argparse.Namespace, processes: Processes) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    body = bodies.example_body()
    size = bodies.canonical_size(body)
    payload = submission(body)

    say(f"ceiling: {args.ceiling_iterations} packets in-process ...")
    ceil = ceiling.measure(body, args.ceiling_iterations)

    sender, receiver = start_nodes(processes, node_settings(args))
    say(f"handover: warm-up {args.warmup}, then {args.packets} packets at {args.concurrency} ...")
    if args.warmup:
        asyncio.run(handover_run(sender, receiver, payload, args.warmup, args.concurrency))
    ho = asyncio.run(handover_run(sender, receiver, payload, args.packets, args.concurrency))
    bulk = None
    if args.bulk_size:
        say(
            f"bulk: {args.packets} packets, {args.bulk_size} per request,"
            f" {args.bulk_concurrency} requests in flight ..."
        )
        bulk = asyncio.run(
            modes.measured(
                sender,
                receiver,
                lambda out: modes.submit_bulk(
                    sender.url + "/api/v1/packets:batch",
                    payload,
                    args.packets,
                    args.bulk_size,
                    args.bulk_concurrency,
                    token=sender.tokens["caseworker"],
                    out=out,
                ),
            )
        )
    open_loop = None
    if args.open_loop is None or args.open_loop > 0:
        rate = args.open_loop or ho.pps / 2
        count = max(100, int(rate * args.open_loop_seconds))
        say(f"open loop: {count} packets offered at {rate:.0f}/s ...")
        open_loop = asyncio.run(
            modes.measured(
                sender,
                receiver,
                lambda out: modes.submit_open_loop(
                    sender.url + "/api/v1/packets",
                    payload,
                    count,
                    rate,
                    token=sender.tokens["caseworker"],
                    out=out,
                ),
            )
        )
        open_loop["offered_pps"] = round(rate, 1)
        open_loop["basis"] = "fixed" if args.open_loop else "half the saturated rate"
    attempts = attempt_outcomes(sender)
    sender_rss, receiver_rss = sender.peak_rss_mb(), receiver.peak_rss_mb()
    sender_pg, receiver_pg = sender.postgres_mb(), receiver.postgres_mb()
    say("handover audit verify on both nodes ...")
    audit_verify(sender)
    audit_verify(receiver)
    processes.stop(sender)
    processes.stop(receiver)

    baseline_server = start_baseline(processes)
    say(f"baseline: warm-up {args.warmup}, then {args.packets} requests ...")
    if args.warmup:
        asyncio.run(baseline_run(baseline_server, payload, args.warmup, args.concurrency))
    base = asyncio.run(baseline_run(baseline_server, payload, args.packets, args.concurrency))
    baseline_rss = baseline_server.peak_rss_mb()
    baseline_pg = baseline_server.postgres_mb()
    processes.stop(baseline_server)

    ceiling_pps = ceil.pps(cores)
    result = {
        "packets": ho.packets,
        "concurrency": args.concurrency,
        "body_bytes": size,
        "wire_bytes": ceil.wire_bytes,
        "seconds": round(ho.seconds, 3),
        "throughput_pps": round(ho.pps, 1),
        "submit_pps": round(ho.submit_pps, 1),
        "p50_ms": round(ho.p50_ms, 1),
        "p99_ms": round(ho.p99_ms, 1),
        "max_ms": round(ho.max_ms, 1),
        "p50_node_ms": round(ho.p50_node_ms, 1),
        "p99_node_ms": round(ho.p99_node_ms, 1),
        "cpu_ms_per_packet": ho.cpu_ms,
        "delivery_attempts": attempts,
        "node_settings": node_settings(args) or "default",
        "baseline_pps": round(base.pps, 1),
        "baseline_p50_ms": round(base.p50_ms, 1),
        "baseline_p99_ms": round(base.p99_ms, 1),
        "baseline_cpu_ms_per_packet": base.cpu_ms,
        "ratio_to_baseline": round(ho.pps / base.pps, 3),
        "ceiling_cost_us": round(ceil.cost_s * 1e6, 1),
        "ceiling_pps": round(ceiling_pps, 1),
        "ratio_to_ceiling": round(ho.pps / ceiling_pps, 3),
        "sender_rss_mb": round(sender_rss, 1),
        "receiver_rss_mb": round(receiver_rss, 1),
        "sender_pg_mb": round(sender_pg, 1),
        "receiver_pg_mb": round(receiver_pg, 1),
        "baseline_rss_mb": round(baseline_rss, 1),
        "baseline_pg_mb": round(baseline_pg, 1),
        "cores": cores,
    }
    if bulk is not None:
        result.update(
            {
                "bulk_size": args.bulk_size,
                "bulk_concurrency": args.bulk_concurrency,
                "bulk_throughput_pps": bulk["pps"],
                "bulk_ratio_to_baseline": round(bulk["pps"] / base.pps, 3),
                "bulk_p50_ms": bulk["p50_ms"],
                "bulk_p99_ms": bulk["p99_ms"],
                "bulk_cpu_ms_per_packet": bulk["cpu_ms_per_packet"],
            }
        )
    if open_loop is not None:
        result.update(
            {
                "open_loop_offered_pps": open_loop["offered_pps"],
                "open_loop_basis": open_loop["basis"],
                "open_loop_packets": open_loop["packets"],
                "open_loop_pps": open_loop["pps"],
                "open_loop_p50_ms": open_loop["p50_from_submit_ms"],
                "open_loop_p99_ms": open_loop["p99_from_submit_ms"],
                "open_loop_max_ms": open_loop["max_from_submit_ms"],
                "open_loop_answer_p99_ms": open_loop["answer_p99_ms"],
                "open_loop_cpu_ms_per_packet": open_loop["cpu_ms_per_packet"],
            }
        )
    print_main_table(result)
    return result


def print_main_table(r: dict[str, Any]) -> None:
    def row(name: str, pps: Any, p50: Any = "", p99: Any = "", note: str = "") -> str:
        return f"{name:<30} {pps:>10} {p50:>9} {p99:>9}  {note}"

    print(
        f"handover bench: {r['packets']} release-notice packets, {r['body_bytes']}-byte body"
        f" ({r['wire_bytes']}-byte packet), concurrency {r['concurrency']}, {r['cores']} cores"
    )
    print(row("", "packets/s", "p50 ms", "p99 ms"))
    print(
        row(
            "handover submit -> receipt",
            r["throughput_pps"],
            r["p50_ms"],
            r["p99_ms"],
            f"max {r['max_ms']} ms; {r['seconds']} s in all",
        )
    )
    print(
        row(
            "  node-stamped receipt time",
            "",
            r["p50_node_ms"],
            r["p99_node_ms"],
            "(delivery entry's own time)",
        )
    )
    print(row("  submissions accepted (202)", r["submit_pps"]))
    print(
        row(
            "baseline POST -> commit",
            r["baseline_pps"],
            r["baseline_p50_ms"],
            r["baseline_p99_ms"],
            "plain JSON, one INSERT each",
        )
    )
    print(
        row(
            "ceiling (CPU only)",
            r["ceiling_pps"],
            note=f"{r['ceiling_cost_us']} us/packet, both sides, x {r['cores']} cores",
        )
    )
    if "bulk_throughput_pps" in r:
        print(
            row(
                "handover bulk (packets:batch)",
                r["bulk_throughput_pps"],
                r["bulk_p50_ms"],
                r["bulk_p99_ms"],
                f"{r['bulk_size']} per request, {r['bulk_concurrency']} in flight;"
                f" ratio to baseline {r['bulk_ratio_to_baseline']};"
                f" CPU {r['bulk_cpu_ms_per_packet']['total']} ms/packet",
            )
        )
    if "open_loop_p99_ms" in r:
        print(
            row(
                "open loop, submit -> receipt",
                r["open_loop_pps"],
                r["open_loop_p50_ms"],
                r["open_loop_p99_ms"],
                f"offered {r['open_loop_offered_pps']}/s ({r['open_loop_basis']});"
                f" max {r['open_loop_max_ms']} ms",
            )
        )
    print("  (handover and baseline rows above: saturated, closed loop; open loop: fixed load)")
    print(f"{'ratio to baseline':<30} {r['ratio_to_baseline']:>10}")
    print(f"{'ratio to ceiling':<30} {r['ratio_to_ceiling']:>10}")
    print(
        f"memory (MB)  sender node {r['sender_rss_mb']} peak RSS + PostgreSQL {r['sender_pg_mb']};"
        f" receiver node {r['receiver_rss_mb']} + PostgreSQL {r['receiver_pg_mb']};"
        f" baseline {r['baseline_rss_mb']} + PostgreSQL {r['baseline_pg_mb']}"
    )
    c, b = r["cpu_ms_per_packet"], r["baseline_cpu_ms_per_packet"]
    print(
        f"CPU ms/packet  handover: sender node {c['sender']} + PostgreSQL {c['sender_pg']},"
        f" receiver node {c['receiver']} + PostgreSQL {c['receiver_pg']}, client {c['client']}"
        f" = {c['total']}, keeping {c['cores_busy']:.0%} of all cores busy"
    )
    print(
        f"               baseline: server {b['server']} + PostgreSQL {b['server_pg']},"
        f" client {b['client']} = {b['total']}, keeping {b['cores_busy']:.0%} of all cores busy"
    )
    attempts = ", ".join(f"{k} {v}" for k, v in sorted(r["delivery_attempts"].items()))
    print(f"delivery attempts (incl. warm-up): {attempts}; node settings: {r['node_settings']}")


def run_sweep(args: argparse.Namespace, processes: Processes) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    sized = [bodies.sized_body(target) for target in args.sizes]
    counts = [
        max(args.min_packets, min(args.packets, int(args.sweep_mb * 1e6) // s.size)) for s in sized
    ]
    ceilings = []
    for s in sized:
        say(f"ceiling for {s.size} bytes ...")
        ceilings.append(
            ceiling.measure(s.body, ceiling_iterations(s.size, args.ceiling_iterations))
        )

    sender, receiver = start_nodes(processes, node_settings(args))
    runs = []
    for s, count in zip(sized, counts, strict=True):
        payload = submission(s.body)
        say(f"handover: {count} packets of {s.size} bytes ...")
        if args.warmup:
            asyncio.run(handover_run(sender, receiver, payload, args.warmup, args.concurrency))
        runs.append(asyncio.run(handover_run(sender, receiver, payload, count, args.concurrency)))
    attempts = attempt_outcomes(sender)
    sender_rss, receiver_rss = sender.peak_rss_mb(), receiver.peak_rss_mb()
    audit_verify(sender)
    audit_verify(receiver)
    processes.stop(sender)
    processes.stop(receiver)

    baseline_server = start_baseline(processes)
    base_runs = []
    for s, count in zip(sized, counts, strict=True):
        payload = submission(s.body)
        say(f"baseline: {count} requests of {s.size} bytes ...")
        if args.warmup:
            asyncio.run(baseline_run(baseline_server, payload, args.warmup, args.concurrency))
        base_runs.append(
            asyncio.run(baseline_run(baseline_server, payload, count, args.concurrency))
        )
    processes.stop(baseline_server)

    rows = []
    for s, ceil, ho, base in zip(sized, ceilings, runs, base_runs, strict=True):
        rows.append(
            {
                "target_bytes": s.target,
                "body_bytes": s.size,
                "wire_bytes": ceil.wire_bytes,
                "capped": s.capped,
                "utf8_bytes_per_char": s.char_bytes,
                "packets": ho.packets,
                "throughput_pps": round(ho.pps, 1),
                "mb_per_s": round(ho.pps * s.size / 1e6, 2),
                "p50_ms": round(ho.p50_ms, 1),
                "p99_ms": round(ho.p99_ms, 1),
                "baseline_pps": round(base.pps, 1),
                "baseline_mb_per_s": round(base.pps * s.size / 1e6, 2),
                "ratio_to_baseline": round(ho.pps / base.pps, 3),
                "cpu_ms_per_packet": ho.cpu_ms["total"],
                "cpu_ms_by_process": ho.cpu_ms,
                "cores_busy": ho.cpu_ms["cores_busy"],
                "baseline_cpu_ms_per_packet": base.cpu_ms["total"],
                "ceiling_cost_us": round(ceil.cost_s * 1e6, 1),
                "ceiling_pps": round(ceil.pps(cores), 1),
                "ratio_to_ceiling": round(ho.pps / ceil.pps(cores), 3),
            }
        )
    result = {
        "sweep": rows,
        "concurrency": args.concurrency,
        "delivery_attempts": attempts,
        "node_settings": node_settings(args) or "default",
        "sender_rss_mb": round(sender_rss, 1),
        "receiver_rss_mb": round(receiver_rss, 1),
        "cores": cores,
    }
    print_sweep_table(result)
    return result


def run_attachments(args: argparse.Namespace, processes: Processes) -> dict[str, Any]:
    sender, receiver = start_nodes(processes, node_settings(args))
    baseline = start_baseline(processes)
    result = attachments.run(args, sender, receiver, baseline)
    attachments.print_table(result)
    return result


def print_sweep_table(r: dict[str, Any]) -> None:
    print(
        "handover size sweep: release-notice bodies,"
        f" concurrency {r['concurrency']}, {r['cores']} cores"
    )
    head = (
        f"{'target':>8} {'body B':>8} {'packet B':>9} {'n':>6} {'pkt/s':>8} {'MB/s':>7}"
        f" {'p50 ms':>8} {'p99 ms':>8} {'CPU ms':>7} {'busy':>5} {'base pkt/s':>10}"
        f" {'base MB/s':>9} {'ceil pkt/s':>10}"
    )
    print(head)
    notes = []
    for row in r["sweep"]:
        mark = "*" if row["capped"] else " "
        print(
            f"{_kib(row['target_bytes']):>8} {row['body_bytes']:>7}{mark} {row['wire_bytes']:>9}"
            f" {row['packets']:>6} {row['throughput_pps']:>8} {row['mb_per_s']:>7}"
            f" {row['p50_ms']:>8} {row['p99_ms']:>8} {row['cpu_ms_per_packet']:>7.1f}"
            f" {row['cores_busy']:>5.0%} {row['baseline_pps']:>10}"
            f" {row['baseline_mb_per_s']:>9} {row['ceiling_pps']:>10}"
        )
        if row["utf8_bytes_per_char"] > 1:
            notes.append(
                f"{_kib(row['target_bytes'])}: free text in {row['utf8_bytes_per_char']}-byte"
                " UTF-8 letters (maxLength counts characters)"
            )
        if row["capped"]:
            notes.append(
                f"* {_kib(row['target_bytes'])} is out of reach: {row['body_bytes']} bytes is the"
                " largest schema-valid release-notice (every text field at its maxLength)"
            )
    for note in notes:
        print(f"  {note}")
    for row in r["sweep"]:
        c = row["cpu_ms_by_process"]
        print(
            f"  CPU ms/packet at {_kib(row['target_bytes'])}: sender {c['sender']} + PostgreSQL"
            f" {c['sender_pg']}, receiver {c['receiver']} + PostgreSQL {c['receiver_pg']},"
            f" client {c['client']}"
        )
    print(
        f"memory (MB, peak RSS): sender node {r['sender_rss_mb']}, receiver node"
        f" {r['receiver_rss_mb']}; MB/s = packets/s x body bytes / 1e6;"
        " CPU ms = all processes' CPU per packet; busy = share of all cores used"
    )
    attempts = ", ".join(f"{k} {v}" for k, v in sorted(r["delivery_attempts"].items()))
    print(f"delivery attempts (incl. warm-up): {attempts}; node settings: {r['node_settings']}")


def run_concurrency_sweep(args: argparse.Namespace, processes: Processes) -> dict[str, Any]:
    body = bodies.example_body()
    payload = submission(body)
    sender, receiver = start_nodes(processes, node_settings(args))
    runs = []
    for c in args.concurrencies:
        count = max(args.min_packets, min(args.packets, 200 * c))
        say(f"handover: {count} packets at concurrency {c} ...")
        if args.warmup:
            asyncio.run(handover_run(sender, receiver, payload, args.warmup, c))
        runs.append(asyncio.run(handover_run(sender, receiver, payload, count, c)))
    sender_rss, receiver_rss = sender.peak_rss_mb(), receiver.peak_rss_mb()
    audit_verify(sender)
    audit_verify(receiver)
    processes.stop(sender)
    processes.stop(receiver)
    baseline_server = start_baseline(processes)
    base_runs = []
    for c, ho in zip(args.concurrencies, runs, strict=True):
        say(f"baseline: {ho.packets} requests at concurrency {c} ...")
        if args.warmup:
            asyncio.run(baseline_run(baseline_server, payload, args.warmup, c))
        base_runs.append(asyncio.run(baseline_run(baseline_server, payload, ho.packets, c)))
    processes.stop(baseline_server)
    rows = [
        {
            "concurrency": c,
            "packets": ho.packets,
            "throughput_pps": round(ho.pps, 1),
            "p50_ms": round(ho.p50_ms, 1),
            "p99_ms": round(ho.p99_ms, 1),
            "cpu_ms_per_packet": ho.cpu_ms,
            "baseline_pps": round(base.pps, 1),
            "baseline_p99_ms": round(base.p99_ms, 1),
            "baseline_cpu_ms_per_packet": base.cpu_ms,
            "ratio_to_baseline": round(ho.pps / base.pps, 3),
        }
        for c, ho, base in zip(args.concurrencies, runs, base_runs, strict=True)
    ]
    print(f"handover concurrency sweep: {bodies.canonical_size(body)}-byte release-notice bodies")
    print(
        f"{'conc':>5} {'n':>6} {'pkt/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'sender':>7}"
        f" {'s_pg':>6} {'recv':>6} {'r_pg':>6} {'client':>7} {'total':>6} {'busy':>5}"
        f" {'base pkt/s':>10} {'base CPU':>8} {'ratio':>6}"
    )
    for r in rows:
        c = r["cpu_ms_per_packet"]
        print(
            f"{r['concurrency']:>5} {r['packets']:>6} {r['throughput_pps']:>8} {r['p50_ms']:>8}"
            f" {r['p99_ms']:>8} {c['sender']:>7} {c['sender_pg']:>6} {c['receiver']:>6}"
            f" {c['receiver_pg']:>6} {c['client']:>7} {c['total']:>6} {c['cores_busy']:>5.0%}"
            f" {r['baseline_pps']:>10} {r['baseline_cpu_ms_per_packet']['total']:>8}"
            f" {r['ratio_to_baseline']:>6}"
        )
    print("CPU columns: ms per packet by process (s_pg, r_pg: each node's PostgreSQL)")
    return {
        "concurrency_sweep": rows,
        "sender_rss_mb": round(sender_rss, 1),
        "receiver_rss_mb": round(receiver_rss, 1),
        "cores": os.cpu_count() or 1,
    }


def _kib(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


# --- entry point ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py", description=(__doc__ or "").split("\n\n")[0].strip()
    )
    p.add_argument("--packets", type=int, help="packets per run (default 10000; sweep 2000)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    p.add_argument("--warmup", type=int, default=50, help="unmeasured packets first (default 50)")
    p.add_argument(
        "--ceiling-iterations", type=int, default=2000, help="ceiling packets (default 2000)"
    )
    p.add_argument("--sweep", action="store_true", help="body sizes 1 KiB .. 1 MiB instead")
    p.add_argument(
        "--attachments",
        action="store_true",
        help="one large attachment between the nodes, against a plain HTTP upload instead",
    )
    p.add_argument(
        "--attachment-mb", type=float, default=1024.0, help="attachment size in MiB (default 1024)"
    )
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(SWEEP_SIZES),
        help="sweep body sizes in bytes, comma-separated (default 1024,16384,262144,1048576)",
    )
    p.add_argument(
        "--sweep-mb",
        type=float,
        default=256.0,
        help="sweep: at most this many MB of bodies per size (default 256)",
    )
    p.add_argument("--min-packets", type=int, default=50, help="sweep: at least this many")
    p.add_argument(
        "--delivery-batch",
        type=int,
        metavar="N",
        help="set the nodes' delivery_batch (1-256; default: leave the node default)",
    )
    p.add_argument(
        "--bulk-size",
        type=int,
        default=128,
        help="bulk mode: submissions per packets:batch request (1-256; 0 skips; default 128)",
    )
    p.add_argument(
        "--bulk-concurrency",
        type=int,
        default=4,
        help="bulk mode: batch requests in flight (default 4)",
    )
    p.add_argument(
        "--open-loop",
        type=float,
        nargs="?",
        const=None,
        default=None,
        metavar="PPS",
        help="open-loop offered load in packets/s (default, and with no value: half the"
        " saturated throughput measured just before; 0 skips the open-loop run)",
    )
    p.add_argument(
        "--open-loop-seconds",
        type=float,
        default=20.0,
        help="open loop: offer load for about this long (default 20)",
    )
    p.add_argument(
        "--concurrencies",
        type=lambda s: [int(x) for x in s.split(",")],
        metavar="C,C,...",
        help="concurrency sweep instead: the single mode and the baseline at each"
        " concurrency (e.g. 1,8,64,256), CPU per packet by process",
    )
    p.add_argument("--timeout", type=int, default=900, help="give up after SECONDS (default 900)")
    p.add_argument("--dir", type=Path, help="working directory (default: a new temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the working directory and logs")
    p.add_argument(
        "--profile",
        action="store_true",
        help="run the nodes under cProfile (slower); keeps DIR/<node>.prof",
    )
    args = p.parse_args(argv)
    if args.packets is None:
        args.packets = 2000 if args.sweep else 10_000
    if args.packets < 1 or args.concurrency < 1 or args.warmup < 0:
        p.error("--packets and --concurrency must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        base = Path(tempfile.mkdtemp(prefix="run-", dir=args.dir.resolve()))
    else:
        base = Path(tempfile.mkdtemp(prefix="handover-bench-"))
    processes = Processes(base, profile=args.profile)

    def interrupted(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(
            {signal.SIGALRM: "timed out", signal.SIGINT: "interrupted"}.get(signum, "terminated")
        )

    # SIGINT explicitly too: a shell starts background jobs with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(sig, interrupted)
    signal.alarm(args.timeout)
    started = time.monotonic()
    outcome = "failed"
    result: dict[str, Any] | None = None
    try:
        if args.attachments:
            result = run_attachments(args, processes)
        elif args.sweep:
            result = run_sweep(args, processes)
        elif args.concurrencies:
            result = run_concurrency_sweep(args, processes)
        else:
            result = run_main(args, processes)
        outcome = "ok"
    except (BenchFailure, HarnessError) as exc:
        say(f"FAILED: {exc}")
    except (aiohttp.ClientError, asyncpg.PostgresError, OSError) as exc:
        say(f"FAILED: {type(exc).__name__}: {exc}")
    except Interrupted as exc:
        say(f"FAILED: {exc} after {time.monotonic() - started:.0f} s")
        outcome = "failed" if str(exc) == "timed out" else "interrupted"
    finally:
        signal.alarm(0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # let the clean-up finish
        if outcome == "failed":
            for server in processes.servers:
                tail = server.log_tail(10)
                if tail:
                    say(f"last lines of {server.log_path}:\n{tail}")
        processes.stop_all()
        if outcome == "failed" or args.keep or args.profile:
            say(f"working directory kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    if result is None:
        return 1
    print(json.dumps(result, separators=(", ", ": ")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
