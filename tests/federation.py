"""Real node processes for end-to-end tests.

`NodeProcess` wraps one `handover serve` subprocess with its own directory and
embedded PostgreSQL; `Federation` sets up several, pins them to each other and
creates operators. Everything talks real HTTP on 127.0.0.1.

    fed = Federation(tmp_path, [("prison.example", "prison"), ("probation.example", "probation")])
    fed.start()
    status, body = fed["prison.example"].api("POST", "/api/v1/packets", {...})
    fed.stop()
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
RELEASE_NOTICE = "handover/release-notice/1"


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HANDOVER_LOG_FORMAT", "json")
    env.update(extra)
    return env


def run_cli(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `handover ARGS` in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "handover.cli", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"handover {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def example(schema: str, index: int = 0) -> dict[str, Any]:
    name = schema.split("/")[1]
    doc = json.loads((ROOT / "schemas" / f"{name}.v1.json").read_text("utf-8"))
    body: dict[str, Any] = doc["examples"][index]
    return body


class NodeProcess:
    def __init__(self, base: Path, node: str, kind: str) -> None:
        self.node = node
        self.kind = kind
        self.dir = base / node
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = base / f"{node}.log"
        self.tokens: dict[str, str] = {}
        out = run_cli(
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
        self.fingerprint: str = json.loads(out.stdout)["fingerprint"]

    # --- process ---------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "handover.cli", "serve", "--dir", str(self.dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.node} exited at start:\n{self.log()}")
            try:
                status, _ = self.get("/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.node} did not become ready:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace") if self.log_path.exists() else ""

    # --- HTTP --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        status, raw = self.request("GET", path, headers=headers)
        return status, _decode(raw)

    def api(
        self,
        method: str,
        path: str,
        payload: Any = None,
        role: str = "caseworker",
        token: str | None = None,
    ) -> tuple[int, Any]:
        tok = token if token is not None else self.tokens.get(role)
        headers = {"Content-Type": "application/json"}
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        body = None if payload is None else json.dumps(payload).encode()
        status, raw = self.request(method, path, body, headers)
        return status, _decode(raw)

    def send(
        self,
        to: list[str],
        schema: str = RELEASE_NOTICE,
        body: dict[str, Any] | None = None,
        justification: str = "release planning for the shared case",
    ) -> str:
        status, answer = self.api(
            "POST",
            "/api/v1/packets",
            {
                "to": to,
                "schema": schema,
                "body": body if body is not None else example(schema),
                "justification": justification,
            },
        )
        assert status == 202, (status, answer)
        pid: str = answer["packets"][0]["pid"]
        return pid

    def packet(self, pid: str) -> dict[str, Any]:
        status, answer = self.api("GET", f"/api/v1/packets/{pid}")
        assert status == 200, (status, answer)
        result: dict[str, Any] = answer
        return result

    def wait_delivered(self, pid: str, timeout: float = 30) -> dict[str, Any]:
        """Wait until no delivery of `pid` is pending; returns the packet status."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self.packet(pid)
            if all(d["status"] != "pending" for d in packet["deliveries"]):
                return packet
            if time.monotonic() > deadline:
                raise AssertionError(f"{pid} still pending: {packet}")
            time.sleep(0.1)

    # --- database ------------------------------------------------------------------------

    def dsn(self) -> str:
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.dir / "pgdata")
        assert info is not None and info.is_running(), "embedded PostgreSQL is not running"
        uri: str = info.get_uri()
        return uri

    def sql(self, query: str, *args: Any) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.dsn())
            try:
                return [dict(r) for r in await conn.fetch(query, *args)]
            finally:
                await conn.close()

        return asyncio.run(go())


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


class Federation:
    def __init__(self, base: Path, nodes: list[tuple[str, str]]) -> None:
        self.base = base
        self.nodes = {name: NodeProcess(base, name, kind) for name, kind in nodes}

    def __getitem__(self, name: str) -> NodeProcess:
        return self.nodes[name]

    def start(self, roles: tuple[str, ...] = ("admin", "caseworker", "auditor")) -> None:
        for node in self.nodes.values():
            node.start()
        for node in self.nodes.values():
            for other in self.nodes.values():
                if other is not node:
                    run_cli(
                        "peers",
                        "add",
                        "--dir",
                        str(node.dir),
                        "--url",
                        other.url,
                        f"--fingerprint={other.fingerprint}",
                        "--kind",
                        other.kind,
                    )
            for role in roles:
                out = run_cli(
                    "operators", "add", "--dir", str(node.dir), f"{role}-1", "--role", role
                )
                node.tokens[role] = out.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
