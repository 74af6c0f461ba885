"""`make demo`: a three-agency federation on this machine, one handover.

Starts `prison.example`, `probation.example` and `exit.example` as real
`handover serve` processes, each with its own embedded PostgreSQL under
./demo-data, pins them to each other, and walks one handover:

  1. the prison sends a release-notice to probation and the exit organisation;
  2. probation sends a condition-update to the prison and the exit organisation;
  3. the exit organisation answers with a care-acknowledgement;

printing each step's delivery status and receipt, then runs
`handover audit verify --peers` on all three nodes, and ends by printing what
to do next: each agency's web interface, a sign-in and an API token.
`--keep` (`make demo ARGS=--keep`) keeps the federation running until Ctrl-C.
Exits 0 when all holds.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from handover.cli.harness import HarnessError, NodeProcess, connect, example, run_cli
from handover.protocol.canonical import b64u_decode

AGENCIES = (
    ("prison.example", "prison"),
    ("probation.example", "probation"),
    ("exit.example", "exit"),
)
ROLE = "admin"  # the demo's one operator per node
WEB_OPERATOR = "officer"  # signs in to the web interface (an admin: every page)


def _example(name: str) -> dict[str, Any]:
    return example(f"handover/{name}/1")


def _send(
    sender: NodeProcess,
    to: list[str],
    schema: str,
    body: dict[str, Any],
    why: str,
    minimise: bool = False,
) -> list[dict[str, Any]]:
    status, answer = sender.api(
        "POST",
        "/api/v1/packets",
        {"to": to, "schema": schema, "body": body, "justification": why, "minimise": minimise},
        role=ROLE,
    )
    if status != 202:
        raise SystemExit(f"demo: {sender.node} refused the submission: {answer}")
    packets: list[dict[str, Any]] = answer["packets"]
    return packets


def _wait_delivered(
    sender: NodeProcess, packets: list[dict[str, Any]], timeout: float = 60
) -> list[dict[str, Any]]:
    """Wait until no delivery of these packets is pending; returns their status."""
    deadline = time.monotonic() + timeout
    done: list[dict[str, Any]] = []
    for packet in packets:
        left = max(0.0, deadline - time.monotonic())
        state = sender.wait_delivered(packet["pid"], timeout=left, role=ROLE)
        state["removed"] = packet.get("removed", [])
        done.append(state)
    return done


def _show(step: str, sender: NodeProcess, packets: list[dict[str, Any]]) -> bool:
    print(f"\n{step}")
    ok = True
    for packet in packets:
        ok = _show_packet(sender, packet) and ok
    return ok


def _show_packet(sender: NodeProcess, packet: dict[str, Any]) -> bool:
    print(f"  {sender.node} sent {packet['schema']} pid={packet['pid']}")
    if packet.get("removed"):
        print(f"    fields withheld by the sharing policy: {', '.join(packet['removed'])}")
    ok = True
    for d in packet["deliveries"]:
        line = f"    -> {d['node']:<18} {d['status']:<9} attempts={d['attempts']}"
        if d["receipt"] is not None:
            rb = json.loads(b64u_decode(d["receipt"]["hp1r"]))
            line += (
                f"  receipt rid={rb['rid']} {rb['status']}"
                f" signed by {rb['from']['node']} at its log seq {rb['log']['seq']}"
            )
        print(line)
        ok = ok and d["status"] == "delivered"
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description="three agencies, one handover")
    parser.add_argument(
        "--keep", action="store_true", help="keep the three nodes running until Ctrl-C"
    )
    args = parser.parse_args(argv)
    base = Path(os.environ.get("HANDOVER_DEMO_DIR", "demo-data")).resolve()
    if base.exists():
        # Stop anything a previous, interrupted demo left running, then start afresh.
        shutil.rmtree(base)
    base.mkdir(parents=True)
    print(f"handover demo: three agencies under {base}")
    try:
        return _walk(base, keep=args.keep)
    except HarnessError as exc:
        raise SystemExit(f"demo: {exc}") from exc


def _next_steps(nodes: dict[str, NodeProcess], passwords: dict[str, str], keep: bool) -> None:
    print("\nWhat next:")
    for n in nodes.values():
        print(f"  {n.node:<18} web interface {n.url}/ui/")
        print(f"  {'':<18} sign in as {WEB_OPERATOR} with password {passwords[n.node]}")
        print(f"  {'':<18} API token (Authorization: Bearer) {n.tokens[ROLE]}")
    if keep:
        print("  the federation keeps running; Ctrl-C stops it")
    else:
        print("  the nodes are stopped now; to keep them running: make demo ARGS=--keep")


def _wait_for_stop() -> None:
    stop = {"now": False}

    def handler(_sig: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop["now"]:
        time.sleep(0.5)


def _walk(base: Path, keep: bool = False) -> int:
    nodes = {
        name: NodeProcess(base, name, kind, log_path=base / name / "node.log")
        for name, kind in AGENCIES
    }
    try:
        for n in nodes.values():
            n.launch(new_session=keep)  # with --keep, Ctrl-C reaches only the demo
        for n in nodes.values():
            n.wait_ready()
            print(f"  {n.node:<18} ({n.kind:<9}) {n.url}  fingerprint {n.fingerprint}")
        connect(nodes.values(), [("demo", ROLE)])
        passwords = {n.node: secrets.token_urlsafe(12) for n in nodes.values()}
        for n in nodes.values():
            # The API token of `demo` stays tokens[ROLE]: this one signs in on the web.
            token = n.tokens[ROLE]
            n.add_operator(WEB_OPERATOR, ROLE, password=passwords[n.node])
            n.tokens[ROLE] = token
        print("  peers pinned by fingerprint; one API operator and one web sign-in per node")

        prison, probation, exit_org = nodes.values()
        release = _example("release-notice")
        case_ref = release["case_ref"]
        pid = _send(
            prison,
            [probation.node, exit_org.node],
            "handover/release-notice/1",
            release,
            f"release planning for case {case_ref}",
            minimise=True,
        )
        ok = _show(
            "1. release-notice (the exit organisation gets a minimised view)",
            prison,
            _wait_delivered(prison, pid),
        )

        consent = dict(
            _example("consent-record"),
            case_ref=case_ref,
            scope="INCLUDE_IN_CONDITIONS",
            recipients=[probation.node, prison.node],
        )
        kpid = _send(
            exit_org,
            [probation.node, prison.node],
            "handover/consent-record/1",
            consent,
            f"client consents to exit-related licence conditions, case {case_ref}",
        )
        ok = _show("2. consent-record", exit_org, _wait_delivered(exit_org, kpid)) and ok

        conditions = dict(_example("condition-update"), case_ref=case_ref)
        cpid = _send(
            probation,
            [prison.node, exit_org.node],
            "handover/condition-update/1",
            conditions,
            f"licence conditions for case {case_ref}",
            minimise=True,
        )
        ok = (
            _show(
                "3. condition-update (exit-related conditions only to the exit organisation)",
                probation,
                _wait_delivered(probation, cpid),
            )
            and ok
        )

        ack = dict(
            _example("care-acknowledgement"),
            case_ref=case_ref,
            in_reply_to=next(p["pid"] for p in pid if exit_org.node in p["to"]),
        )
        apid = _send(
            exit_org,
            [prison.node, probation.node],
            "handover/care-acknowledgement/1",
            ack,
            f"continuity of care for case {case_ref}",
        )
        ok = _show("4. care-acknowledgement", exit_org, _wait_delivered(exit_org, apid)) and ok

        print("\n5. audit verify --peers on every node")
        for n in nodes.values():
            proc = run_cli("audit", "verify", "--dir", str(n.dir), "--peers", check=False)
            report: dict[str, Any] = json.loads(proc.stdout) if proc.stdout else {}
            peers = ", ".join(
                f"{p['node']} ok" if p["ok"] else f"{p['node']} FAILED"
                for p in report.get("peers", [])
            )
            entries = report.get("chain", {}).get("entries", "?")
            verdict = "ok" if proc.returncode == 0 else "FAILED"
            print(f"  {n.node:<18} chain of {entries} entries {verdict}; peers: {peers}")
            ok = ok and proc.returncode == 0
        print(
            "\ndemo "
            + ("completed: every packet delivered, receipted and witnessed" if ok else "FAILED")
        )
        _next_steps(nodes, passwords, keep and ok)
        if keep and ok:
            _wait_for_stop()
    finally:
        for n in nodes.values():
            n.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
