"""The benchmark's processes: two handover nodes and the baseline server.

Nodes are set up exactly as an operator would, with the real CLI
(`handover init`, `serve`, `peers add`, `operators add`), through the
node-process harness the demo and the end-to-end tests use
(src/handover/cli/harness.py): each in its own directory with its own embedded
PostgreSQL, default settings. Every process is started in its own session (so
a Ctrl-C reaches only the benchmark, which then stops them in order) and
remembered; `Processes.stop_all` ends them with SIGTERM, then SIGKILL, and
stops any PostgreSQL left behind, by its pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from handover.cli import harness
from handover.cli.harness import cli_env, free_port

BENCH_DIR = Path(__file__).resolve().parent


class BenchFailure(Exception):
    """The run cannot go on or its result is wrong; the message says why."""


def cli(*args: str, timeout: float = 180) -> str:
    """Run `handover ARGS`; returns stdout, raises HarnessError on a non-zero exit."""
    return harness.run_cli(*args, timeout=timeout).stdout


# --- memory --------------------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set so far."""
    return _status_kb(pid, "VmHWM") / 1024


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(entry.name))
    return out


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def postgres_pss_mb(pgdata: Path) -> float:
    """Proportional set size of a PostgreSQL server now (postmaster and its
    backends; shared buffers counted once)."""
    pid = postmaster_pid(pgdata)
    if pid is None:
        return 0.0
    return sum(_pss_kb(p) for p in [pid, *_children(pid)]) / 1024


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU time of a process (and of its children it has waited for)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def postgres_cpu_seconds(pgdata: Path) -> float:
    """CPU time of a PostgreSQL server: postmaster, live backends, exited backends."""
    pid = postmaster_pid(pgdata)
    if pid is None:
        return 0.0
    return cpu_seconds(pid, reaped_children=True) + sum(cpu_seconds(c) for c in _children(pid))


# --- PostgreSQL left behind ---------------------------------------------------------------------


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def postgres_dsn(pgdata: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        raise BenchFailure(f"the PostgreSQL in {pgdata} is not running")
    uri: str = info.get_uri()
    return uri


def stop_postgres(pgdata: Path, timeout: float = 20) -> None:
    """Fast shutdown (SIGINT) of a server its owner did not stop; SIGKILL if it hangs."""
    pid = postmaster_pid(pgdata)
    if pid is None:
        return
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if postmaster_pid(pgdata) != pid:
                return
            time.sleep(0.1)


# --- processes -------------------------------------------------------------------------------


class Measured:
    """CPU and memory of a server process and of its PostgreSQL."""

    proc: subprocess.Popen[bytes] | None
    pgdata: Path

    def peak_rss_mb(self) -> float:
        return 0.0 if self.proc is None else peak_rss_mb(self.proc.pid)

    def cpu_seconds(self) -> tuple[float, float]:
        """(this server's process, its PostgreSQL) CPU seconds so far."""
        own = 0.0 if self.proc is None else cpu_seconds(self.proc.pid)
        return own, postgres_cpu_seconds(self.pgdata)

    def postgres_mb(self) -> float:
        return postgres_pss_mb(self.pgdata)


def cpu_snapshot(servers: dict[str, Measured]) -> dict[str, float]:
    """CPU seconds so far of each server process, its PostgreSQL, and this client."""
    out = {"client": time.process_time()}
    for name, server in servers.items():
        out[name], out[f"{name}_pg"] = server.cpu_seconds()
    return out


def cpu_per_packet(
    before: dict[str, float], after: dict[str, float], packets: int, seconds: float
) -> dict[str, float]:
    """CPU ms per packet by process, their total, and the share of all cores they used."""
    out = {k: round((after[k] - before[k]) * 1000 / packets, 3) for k in before}
    total = sum(after[k] - before[k] for k in before)
    out["total"] = round(total * 1000 / packets, 3)
    out["cores_busy"] = round(total / (seconds * (os.cpu_count() or 1)), 3)
    return out


class Node(harness.NodeProcess, Measured):
    """A handover node of the harness, measured."""

    @property
    def name(self) -> str:
        return self.node


@dataclass
class Server(Measured):
    """The baseline server (bench/baseline_server.py)."""

    name: str
    directory: Path
    port: int
    log_path: Path
    pgdata: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, path: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise BenchFailure(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                if harness.http("GET", self.url + path, timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise BenchFailure(f"{self.name} was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.proc = None

    def dsn(self) -> str:
        return postgres_dsn(self.pgdata)


@dataclass
class Processes:
    base: Path
    servers: list[Node | Server] = field(default_factory=list)
    profile: bool = False  # run nodes under cProfile, writing BASE/NODE.prof at exit

    def node(self, name: str, kind: str, settings: dict[str, int] | None = None) -> Node:
        """`handover init` a node directory and start `handover serve` on it.

        `settings` are appended to its handover.toml, as an operator would edit it
        (none by default: the benchmark runs nodes with their default settings)."""
        node = Node(self.base, name, kind)
        if settings:
            node.configure(**settings)
        profile = ["-m", "cProfile", "-o", str(self.base / f"{name}.prof")] if self.profile else []
        self.servers.append(node)
        node.launch(python_options=profile, new_session=True)
        return node

    def baseline(self) -> Server:
        directory = self.base / "baseline"
        server = Server(
            name="baseline",
            directory=directory,
            port=free_port(),
            log_path=self.base / "baseline.log",
            pgdata=directory / "pgdata",
        )
        argv = [sys.executable, str(BENCH_DIR / "baseline_server.py")]
        self.servers.append(server)
        with open(server.log_path, "ab") as log:
            server.proc = subprocess.Popen(
                [*argv, "--dir", str(directory), "--port", str(server.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=cli_env(),
                start_new_session=True,  # Ctrl-C reaches the bench only; it stops us in order
            )
        return server

    def stop(self, server: Node | Server) -> None:
        server.stop()
        stop_postgres(server.pgdata)

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            try:
                self.stop(server)
            except (OSError, subprocess.SubprocessError) as exc:
                print(f"bench: could not stop {server.name}: {exc}", file=sys.stderr)
        self.servers.clear()


def pin_and_authorise(sender: Node, receiver: Node) -> None:
    """Pin the nodes to each other and give each a caseworker operator."""
    harness.connect([sender, receiver], [("bench-1", "caseworker")])
