"""`make demo`: a three-agency federation on this machine, one handover.

Starts `prison.example`, `probation.example` and `exit.example` as real
`handover serve` processes, each with its own embedded PostgreSQL under
./demo-data, pins them to each other, and walks one handover:

  1. the prison sends a release-notice to probation and the exit organisation;
  2. probation sends a condition-update to the prison and the exit organisation;
  3. the exit organisation answers with a care-acknowledgement;

printing each step's delivery status and receipt, then runs
`handover audit verify --peers` on all three nodes. Exits 0 when all holds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

from handover.protocol.canonical import b64u_decode

AGENCIES = (
    ("prison.example", "prison"),
    ("probation.example", "probation"),
    ("exit.example", "exit"),
)


def _cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "handover.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise SystemExit(f"demo: handover {args[0]} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _example(name: str) -> dict[str, Any]:
    folder = resources.files("handover") / "schemas"
    if not folder.is_dir():
        folder = Path(__file__).resolve().parents[3] / "schemas"
    doc = json.loads((folder / f"{name}.v1.json").read_text("utf-8"))
    body: dict[str, Any] = doc["examples"][0]
    return body


class DemoNode:
    def __init__(self, base: Path, node: str, kind: str) -> None:
        self.node = node
        self.kind = kind
        self.dir = base / node
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        info = json.loads(
            _cli(
                "init",
                "--node",
                node,
                "--dir",
                str(self.dir),
                "--kind",
                kind,
                "--listen",
                f"127.0.0.1:{self.port}",
            )
        )
        self.fingerprint: str = info["fingerprint"]
        self.token = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.dir / "node.log", "ab")  # noqa: SIM115 - lives as long as the process
        env = dict(os.environ, HANDOVER_LOG_FORMAT="json")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "handover.cli", "serve", "--dir", str(self.dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"demo: {self.node} stopped; see {self.dir / 'node.log'}")
            try:
                if self.call("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"demo: {self.node} did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def call(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.url + path  # always http://127.0.0.1:PORT/...
        req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def send(
        self, to: list[str], schema: str, body: dict[str, Any], why: str, minimise: bool = False
    ) -> list[dict[str, Any]]:
        status, answer = self.call(
            "POST",
            "/api/v1/packets",
            {"to": to, "schema": schema, "body": body, "justification": why, "minimise": minimise},
        )
        if status != 202:
            raise SystemExit(f"demo: {self.node} refused the submission: {answer}")
        packets: list[dict[str, Any]] = answer["packets"]
        return packets

    def wait_delivered(
        self, packets: list[dict[str, Any]], timeout: float = 60
    ) -> list[dict[str, Any]]:
        """Wait until no delivery of these packets is pending; returns their status."""
        deadline = time.monotonic() + timeout
        done: list[dict[str, Any]] = []
        for packet in packets:
            while True:
                status, state = self.call("GET", f"/api/v1/packets/{packet['pid']}")
                if status == 200 and all(d["status"] != "pending" for d in state["deliveries"]):
                    state["removed"] = packet.get("removed", [])
                    done.append(state)
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"demo: packet {packet['pid']} was not delivered in time")
                time.sleep(0.1)
        return done


def _show(step: str, sender: DemoNode, packets: list[dict[str, Any]]) -> bool:
    print(f"\n{step}")
    ok = True
    for packet in packets:
        ok = _show_packet(sender, packet) and ok
    return ok


def _show_packet(sender: DemoNode, packet: dict[str, Any]) -> bool:
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


def main() -> int:
    base = Path(os.environ.get("HANDOVER_DEMO_DIR", "demo-data")).resolve()
    if base.exists():
        # Stop anything a previous, interrupted demo left running, then start afresh.
        shutil.rmtree(base)
    base.mkdir(parents=True)
    print(f"handover demo: three agencies under {base}")
    nodes = {name: DemoNode(base, name, kind) for name, kind in AGENCIES}
    try:
        for n in nodes.values():
            n.start()
        for n in nodes.values():
            n.wait_ready()
            print(f"  {n.node:<18} ({n.kind:<9}) {n.url}  fingerprint {n.fingerprint}")
        for n in nodes.values():
            for other in nodes.values():
                if other is not n:
                    _cli(
                        "peers",
                        "add",
                        "--dir",
                        str(n.dir),
                        "--url",
                        other.url,
                        f"--fingerprint={other.fingerprint}",
                        "--kind",
                        other.kind,
                    )
            n.token = _cli("operators", "add", "--dir", str(n.dir), "demo", "--role", "admin")
            n.token = n.token.strip().splitlines()[-1]
        print("  peers pinned by fingerprint; one operator per node")

        prison, probation, exit_org = nodes.values()
        release = _example("release-notice")
        case_ref = release["case_ref"]
        pid = prison.send(
            [probation.node, exit_org.node],
            "handover/release-notice/1",
            release,
            f"release planning for case {case_ref}",
            minimise=True,
        )
        ok = _show(
            "1. release-notice (the exit organisation gets a minimised view)",
            prison,
            prison.wait_delivered(pid),
        )

        consent = dict(
            _example("consent-record"),
            case_ref=case_ref,
            scope="INCLUDE_IN_CONDITIONS",
            recipients=[probation.node, prison.node],
        )
        kpid = exit_org.send(
            [probation.node, prison.node],
            "handover/consent-record/1",
            consent,
            f"client consents to exit-related licence conditions, case {case_ref}",
        )
        ok = _show("2. consent-record", exit_org, exit_org.wait_delivered(kpid)) and ok

        conditions = dict(_example("condition-update"), case_ref=case_ref)
        cpid = probation.send(
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
                probation.wait_delivered(cpid),
            )
            and ok
        )

        ack = dict(
            _example("care-acknowledgement"),
            case_ref=case_ref,
            in_reply_to=next(p["pid"] for p in pid if exit_org.node in p["to"]),
        )
        apid = exit_org.send(
            [prison.node, probation.node],
            "handover/care-acknowledgement/1",
            ack,
            f"continuity of care for case {case_ref}",
        )
        ok = _show("4. care-acknowledgement", exit_org, exit_org.wait_delivered(apid)) and ok

        print("\n5. audit verify --peers on every node")
        for n in nodes.values():
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "handover.cli",
                    "audit",
                    "verify",
                    "--dir",
                    str(n.dir),
                    "--peers",
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            report: dict[str, Any] = json.loads(proc.stdout) if proc.stdout else {}
            peers = ", ".join(
                f"{p['node']} ok" if p["ok"] else f"{p['node']} FAILED"
                for p in report.get("peers", [])
            )
            entries = report.get("chain", {}).get("entries", "?")
            verdict = "ok" if proc.returncode == 0 else "FAILED"
            print(f"  {n.node:<18} chain of {entries} entries {verdict}; peers: {peers}")
            ok = ok and proc.returncode == 0
    finally:
        for n in nodes.values():
            n.stop()
    print(
        "\ndemo "
        + ("completed: every packet delivered, receipted and witnessed" if ok else "FAILED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
