"""Real node processes on this machine, for the demo, the end-to-end tests and the benchmark.

A :class:`NodeProcess` is a node directory set up with `handover init` and
the `handover serve` process that runs it, with its own embedded PostgreSQL,
listening on a free port of 127.0.0.1. :class:`Federation` sets up several,
pins them to each other and gives each an operator per role. Everything goes
through the real CLI (in subprocesses, running the same `handover` package as
the caller) and real HTTP, as an operator would::

    fed = Federation(base, [("prison.example", "prison"), ("probation.example", "probation")])
    fed.start()
    status, answer = fed["prison.example"].api("POST", "/api/v1/packets", submission)
    fed["prison.example"].wait_delivered(answer["packets"][0]["pid"])
    fed.stop()

When a process or a command does not do what is needed, :class:`HarnessError`
says what, with the end of the node's log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import handover
from handover.workflow.schemas import default_registry

# Settings a node reads from the environment before its handover.toml
# (node/config.py): not passed on, since every node here has its own.
_PER_NODE_ENV = ("HANDOVER_DSN", "HANDOVER_LISTEN", "HANDOVER_PUBLIC_URL")
ROLES = ("admin", "caseworker", "auditor")
_T = TypeVar("_T")


class HarnessError(Exception):
    """A node process or a `handover` command did not do what was needed."""


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for `handover` subprocesses: this process's, with JSON
    logs (readiness is read from the log), without per-node settings, and with
    this `handover` package first on the path; then `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _PER_NODE_ENV}
    root = Path(handover.__file__).resolve().parents[1]
    # A checkout's src/ goes first; an installed package's site-packages is on
    # the path anyway, and must not go before the standard library.
    if root.name not in ("site-packages", "dist-packages"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    env["HANDOVER_LOG_FORMAT"] = "json"
    env.update(extra)
    return env


def run_cli(
    *args: str,
    check: bool = True,
    timeout: float = 120,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `handover ARGS` in a subprocess (`stdin` its standard input) and wait for it.

    Raises:
        HarnessError: it took over `timeout` seconds, or (with `check`) it
            exited non-zero; the message holds its output.
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "handover.cli", *args],
            capture_output=True,
            text=True,
            input=stdin,
            env=cli_env() if env is None else env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"handover {' '.join(args[:2])} took over {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        raise HarnessError(
            f"handover {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


_given_ports: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (it may be taken later),
    never one this process was given before."""
    with _ports_lock:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _given_ports:
                _given_ports.add(port)
                return port


def example(schema_id: str, index: int = 0) -> dict[str, Any]:
    """An example body of a schema, as `handover schemas example` prints it."""
    return default_registry().examples(schema_id)[index]


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    """One HTTP request; any status comes back as (status, body), not raised.

    Raises:
        OSError: no answer (refused, reset, timed out).
    """
    # S310: the URLs are the harness's own http://127.0.0.1 ones.
    req = urllib.request.Request(url, body, headers or {}, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _decode(raw: bytes) -> Any:
    """An answer as JSON, or as text when it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


class NodeProcess:
    """One node: its directory under `base` (set up now) and, once started, its process.

    Args:
        base: where the node directory (`base/NODE`) is made.
        node: node id, e.g. `prison.example`.
        kind: the agency's kind (`prison`, `probation`, `exit`).
        log_path: where the process's output goes (default `base/NODE.log`).
    """

    def __init__(self, base: Path, node: str, kind: str, *, log_path: Path | None = None) -> None:
        self.node = node
        self.kind = kind
        self.dir = base / node
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path if log_path is not None else base / f"{node}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.tokens: dict[str, str] = {}  # role -> bearer token
        self._log_start = 0  # where this process's lines begin in the log
        listen = f"127.0.0.1:{self.port}"
        out = run_cli(
            "init", "--node", node, "--dir", str(self.dir), "--kind", kind, "--listen", listen
        )
        self.fingerprint: str = json.loads(out.stdout)["fingerprint"]

    @property
    def pgdata(self) -> Path:
        """The embedded PostgreSQL's data directory."""
        return self.dir / "pgdata"

    def configure(self, **settings: str | int | float | bool) -> None:
        """Add settings to the node's handover.toml, as an operator would (before start)."""
        with open(self.dir / "handover.toml", "a", encoding="utf-8") as config:
            config.writelines(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())

    # --- process ---------------------------------------------------------------------

    def launch(
        self,
        *,
        python_options: Sequence[str] = (),
        new_session: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start `handover serve` without waiting for it; see :meth:`wait_ready`.

        Args:
            python_options: put before `-m handover.cli`, e.g. a profiler's
                `-m cProfile -o FILE`.
            new_session: start it in a session of its own, so that a Ctrl-C in
                the terminal reaches only the caller, who then stops it.
            env: the environment (default :func:`cli_env`).
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, *python_options, "-m", "handover.cli", "serve", "--dir"]
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            self.proc = subprocess.Popen(
                [*argv, str(self.dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=cli_env() if env is None else env,
                start_new_session=new_session,
            )

    def wait_ready(self, timeout: float = 90) -> None:
        """Wait until the process :meth:`launch` started logged `node_started` (so
        it, not something else on this machine, holds the port) and answers /readyz.

        Raises:
            HarnessError: it exited, or was not ready after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise HarnessError(f"{self.node} exited at start:\n{self.log_tail()}")
            if b'"node_started"' in self._own_log():
                try:
                    if self.get("/readyz")[0] == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        raise HarnessError(f"{self.node} was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def start(self, timeout: float = 90) -> None:
        """:meth:`launch`, then :meth:`wait_ready`."""
        self.launch()
        self.wait_ready(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Stop the process with `sig` (SIGTERM: a clean stop, PostgreSQL too);
        SIGKILL if it takes over `timeout` seconds."""
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
        """Stop the process at once (SIGKILL): no clean stop, its PostgreSQL keeps running."""
        self.stop(signal.SIGKILL)

    def _own_log(self) -> bytes:
        """What the process :meth:`launch` started last has logged so far."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                return log.read()
        except OSError:
            return b""

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # --- administration (the CLI) ------------------------------------------------------

    def pin(self, other: NodeProcess) -> None:
        """`handover peers add` `other` to this node, with its fingerprint."""
        run_cli(
            "peers", "add", "--dir", str(self.dir), "--url", other.url,
            f"--fingerprint={other.fingerprint}", "--kind", other.kind,
        )  # fmt: skip

    def add_operator(self, name: str, role: str, password: str | None = None) -> str:
        """`handover operators add` (with a web sign-in `password` if given); returns
        the bearer token, also kept as `tokens[role]`."""
        extra = ("--password-stdin",) if password is not None else ()
        out = run_cli(
            "operators", "add", "--dir", str(self.dir), name, "--role", role, *extra,
            stdin=None if password is None else password + "\n",
        )  # fmt: skip
        token = out.stdout.strip().splitlines()[-1]
        self.tokens[role] = token
        return token

    def dsn(self) -> str:
        """The DSN of the running embedded PostgreSQL.

        Raises:
            HarnessError: it is not running.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is None or not info.is_running():
            raise HarnessError(f"the embedded PostgreSQL of {self.node} is not running")
        uri: str = info.get_uri()
        return uri

    # --- HTTP ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, bytes]:
        """One request to this node; any status comes back as (status, body).

        Raises:
            OSError: no answer.
        """
        return http(method, self.url + path, body, headers, timeout)

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
        """A local API call as the operator of `role` (or with `token`); JSON both ways."""
        bearer = token if token is not None else self.tokens.get(role)
        headers = {"Content-Type": "application/json"}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        body = None if payload is None else json.dumps(payload).encode()
        status, raw = self.request(method, path, body, headers)
        return status, _decode(raw)

    def wait_delivered(
        self, pid: str, timeout: float = 30, role: str = "caseworker"
    ) -> dict[str, Any]:
        """Wait until no delivery of the sent packet `pid` is pending; returns its status.

        Raises:
            HarnessError: the node does not know the packet, or a delivery is
                still pending after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            status, packet = self.api("GET", f"/api/v1/packets/{pid}", role=role)
            if status != 200:
                raise HarnessError(f"{self.node} answered {status} for packet {pid}: {packet}")
            if all(d["status"] != "pending" for d in packet["deliveries"]):
                result: dict[str, Any] = packet
                return result
            if time.monotonic() > deadline:
                raise HarnessError(f"{pid} still pending after {timeout:.0f} s: {packet}")
            time.sleep(0.1)


def connect(nodes: Iterable[NodeProcess], operators: Iterable[tuple[str, str]]) -> None:
    """Each node (running) pins every other one, then gets the `operators` (name, role).

    Each node's commands run one after another, the nodes side by side (a
    command is a process of its own, most of it Python starting up).
    """
    nodes, operators = list(nodes), list(operators)

    def one(node: NodeProcess) -> None:
        for other in nodes:
            if other is not node:
                node.pin(other)
        for name, role in operators:
            node.add_operator(name, role)

    _each(one, nodes)


def _each(work: Callable[[_T], object], items: Sequence[_T]) -> None:
    """`work(item)` for every item, side by side; the first failure is raised."""
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        for future in [pool.submit(work, item) for item in items]:
            future.result()


class Federation:
    """Several nodes under `base`, set up now; :meth:`start` runs and connects them."""

    node_class: type[NodeProcess] = NodeProcess  # a subclass may add helpers to its nodes

    def __init__(self, base: Path, nodes: Iterable[tuple[str, str]]) -> None:
        self.base = base
        made: dict[str, NodeProcess] = {}

        def make(spec: tuple[str, str]) -> None:
            made[spec[0]] = self.node_class(base, *spec)

        specs = list(nodes)
        _each(make, specs)
        self.nodes = {name: made[name] for name, _ in specs}

    def __getitem__(self, name: str) -> NodeProcess:
        return self.nodes[name]

    def start(self, roles: Iterable[str] = ROLES) -> None:
        """Start every node (all at once), pin them to each other and give each
        one operator per role, named `ROLE-1`."""
        for node in self.nodes.values():
            node.launch()
        for node in self.nodes.values():
            node.wait_ready()
        connect(self.nodes.values(), [(f"{role}-1", role) for role in roles])

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
