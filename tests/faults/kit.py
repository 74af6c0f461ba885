"""Fault injection for the fault matrix: real processes, real PostgreSQL, loopback only.

    postmaster(node)              the node's embedded PostgreSQL server process, if running
    kill_postgres(node)           SIGKILL that server and every process it forked
    restart_postgres(node)        start it again as `handover serve` would (pgserver),
                                  while the node keeps running, and wait for the node's
                                  pool to reconnect
    Tmpfs                         a small tmpfs (the receiver's pgdata) that can be filled
    CutProxy                      an HTTP forwarder that loses answers after the receiver
                                  has committed
    faketime_env(offset)          LD_PRELOAD libfaketime for one node process
    Stream                        a paced stream of submissions to a node's local API
    outcome(...)                  lost / duplicated / receipts per case, with assertions
    verify_audit(nodes)           `handover audit verify` on every node, in parallel
    REPORTS                       one line per case, printed at the end of the session

Every wait has a deadline and every loop a bound: nothing here runs on by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from pgserver.utils import PostmasterInfo

from e2e.test_node_delivery import case_ref, submission
from federation import NodeProcess, cli_env
from handover.protocol.canonical import b64u_decode

SOAK = os.environ.get("HANDOVER_SOAK", "") not in ("", "0")
REPORTS: list[str] = []
FINAL = ("delivered", "rejected", "expired")


def report(line: str) -> None:
    """Keep a line for the session summary (and show it with `pytest -s`)."""
    REPORTS.append(line)
    print(line, flush=True)


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


# --- embedded PostgreSQL ---------------------------------------------------------------


def pgdata(node: NodeProcess) -> Path:
    return node.dir / "pgdata"


def postmaster(node: NodeProcess) -> psutil.Process | None:
    """The running postmaster of the node's pgdata (postmaster.pid), or None."""
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata(node))
    except (OSError, AssertionError, ValueError):
        return None
    if info is None or info.process is None:
        return None
    try:
        proc = info.process
        if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != "postgres":
            return None
    except psutil.Error:
        return None
    return proc


def kill_postgres(node: NodeProcess) -> int:
    """SIGKILL the node's PostgreSQL server and all its processes (a crash of the
    database server, as the OOM killer or a power cut would do it). Returns how
    many processes were killed."""
    proc = postmaster(node)
    assert proc is not None, f"{node.node}: PostgreSQL is not running"
    victims = [proc, *proc.children(recursive=True)]
    for victim in victims:
        with contextlib.suppress(psutil.Error):
            victim.send_signal(signal.SIGKILL)
    _gone, alive = psutil.wait_procs(victims, timeout=10)
    alive = [p for p in alive if _alive(p)]
    assert not alive, f"{node.node}: PostgreSQL processes survived SIGKILL: {alive}"
    return len(victims)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


_START_PG = (
    "import sys, warnings\n"
    "warnings.simplefilter('ignore')\n"
    "import pgserver\n"
    "print(pgserver.get_server(sys.argv[1], cleanup_mode=None).get_uri())\n"
)


def restart_postgres(node: NodeProcess, env: dict[str, str] | None = None) -> float:
    """Start the node's PostgreSQL again the way the node does (pgserver, same data
    directory and socket), as a supervisor would, and wait until the running node
    reports its database ready again. Returns the seconds until it did."""
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _START_PG, str(pgdata(node))],
        capture_output=True,
        text=True,
        env=cli_env(**(env or {})),
        timeout=60,
    )
    assert out.returncode == 0, f"{node.node}: PostgreSQL did not start:\n{out.stderr[-2000:]}"
    wait_database(node, 30)
    return time.monotonic() - started


def wait_database(node: NodeProcess, timeout: float) -> None:
    """Wait until the node's /readyz reports its database reachable."""

    def ready() -> bool:
        try:
            _status, body = node.get("/readyz")
        except OSError:
            return False
        return isinstance(body, dict) and bool(body.get("checks", {}).get("database"))

    wait_for(f"{node.node}'s database to be ready", ready, timeout)


def stop_leftover_postgres(node: NodeProcess) -> None:
    """At teardown: a server that the test restarted is not the one the node's
    pgserver handle knows, so the node does not stop it when it exits."""
    proc = postmaster(node)
    if proc is None:
        return
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGINT)  # fast shutdown
        proc.wait(20)
    if postmaster(node) is not None:
        kill_postgres(node)


def ensure_up(node: NodeProcess, env: dict[str, str] | None = None) -> None:
    """The node process and its PostgreSQL both running, whatever a case left behind."""
    if node.proc is not None and node.proc.poll() is None:
        if postmaster(node) is None:
            restart_postgres(node, env)
        return
    node.proc = None
    start_node(node, env)


def start_node(node: NodeProcess, env: dict[str, str] | None = None) -> None:
    """`node.start()` with extra environment variables for the new process only."""
    with extra_env(env or {}):
        node.start()


@contextlib.contextmanager
def extra_env(env: dict[str, str]) -> Iterator[None]:
    """Set variables in os.environ while a child process is started (cli_env copies
    os.environ), then restore them. LD_PRELOAD here affects only later exec()s."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- clocks ------------------------------------------------------------------------------


def faketime_library() -> Path | None:
    """libfaketime: $HANDOVER_LIBFAKETIME, else the `libfaketime` dev dependency (it
    ships the shared library), else Debian's `faketime` package."""
    candidates = []
    if os.environ.get("HANDOVER_LIBFAKETIME"):
        candidates.append(Path(os.environ["HANDOVER_LIBFAKETIME"]))
    spec = importlib.util.find_spec("libfaketime")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "vendor/libfaketime/src/libfaketime.so.1")
    candidates += [
        Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
        Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
        Path("/usr/lib/faketime/libfaketime.so.1"),
    ]
    return next((path for path in candidates if path.exists()), None)


def faketime_env(offset: str) -> dict[str, str]:
    """Environment that moves a process's wall clock by `offset` ("+6m", "-6m").
    Monotonic clocks stay real (timeouts, token buckets)."""
    library = faketime_library()
    assert library is not None
    return {
        "LD_PRELOAD": str(library),
        "FAKETIME": offset,
        "DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }


_PROBE = "import time; time.sleep(0.01); print(round(time.time() * 1000))"


def faketime_problem(offset: str = "-6m") -> str | None:
    """Why libfaketime cannot move a Python process's clock here, or None.
    (Debian's libfaketime 0.9.10 makes Python 3.11's time.sleep fail with EINVAL
    under a negative offset; the one in the `libfaketime` wheel does not.)"""
    library = faketime_library()
    if library is None:
        return "libfaketime not found: pip install libfaketime (a dev dependency)"
    before = time.time() * 1000
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        env={**os.environ, **faketime_env(offset)},
        timeout=30,
    )
    if out.returncode != 0:
        return f"{library} breaks Python here: {out.stderr.strip().splitlines()[-1:]}"
    moved = int(out.stdout) - before
    if abs(moved) < 60_000:
        return f"{library} did not move the clock ({moved:.0f} ms)"
    return None


def node_clock_ms(node: NodeProcess) -> int:
    """The node's wall clock, read from the iat of a fresh signed log checkpoint."""
    status, wire = node.request("GET", "/.well-known/handover/log-head")
    assert status == 200, (status, wire)
    body = json.loads(b64u_decode(json.loads(wire)["hp1c"]))
    return int(body["iat"])


# --- disk ----------------------------------------------------------------------------------


class Tmpfs:
    """A tmpfs mounted on a directory (needs root), which can be filled up and freed."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size
        self.filler = path / "zz-disk-filler"
        self.mounted = False

    def mount(self) -> str | None:
        """Mount it; returns why it could not be mounted, or None."""
        if os.geteuid() != 0:
            return "not root: cannot mount a tmpfs"
        self.path.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            return f"mount -t tmpfs failed: {out.stderr.strip()}"
        self.mounted = True
        return None

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Take every free byte with a root-owned file; returns how many it took."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        written = 0
        try:
            for chunk in (1 << 20, 1 << 12, 1):
                block = b"\0" * chunk
                for _ in range(1 << 16):  # bounded: 64 GiB at the largest chunk
                    try:
                        written += os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def umount(self) -> None:
        if not self.mounted:
            return
        self.free()
        out = subprocess.run(["umount", str(self.path)], capture_output=True, text=True)
        if out.returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
        self.mounted = False


# --- the network between two nodes ---------------------------------------------------------


@dataclass
class ProxyStats:
    requests: int = 0
    packet_posts: int = 0
    cut: int = 0
    # pids the receiver stored (an accepted or rejected receipt in the lost answer)
    cut_after_commit: set[str] = field(default_factory=set)


class CutProxy:
    """An HTTP/1.1 forwarder on 127.0.0.1 in front of one node.

    Each request is forwarded on its own connection; the receiver's whole answer
    is read first. For a share `cut_ratio` of packet posts (single or batch) the
    answer is then thrown away and the sender's connection closed (FIN or RST,
    at random) without a byte of it: the receiver has committed, the sender never
    learns it. Everything else is passed back unchanged.
    """

    def __init__(self, target_url: str, seed: int) -> None:
        host_port = target_url.split("://", 1)[1].rstrip("/")
        self.target_host, port = host_port.rsplit(":", 1)
        self.target_port = int(port)
        self.rng = random.Random(seed)
        self.cut_ratio = 0.0
        self.stats = ProxyStats()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _version = lines[0].split(" ", 2)
            headers = [line for line in lines[1:] if line]
            length = 0
            for line in headers:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
                assert name.strip().lower() != "transfer-encoding", "chunked requests"
            body = await reader.readexactly(length) if length else b""
            kept = [
                h
                for h in headers
                if h.split(":", 1)[0].strip().lower() not in ("connection", "keep-alive")
            ]
            request = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode()
            answer = await self._forward(request + body)
            self.stats.requests += 1
            is_post = method == "POST" and path.startswith("/federation/v1/packets")
            if is_post:
                self.stats.packet_posts += 1
                if self.rng.random() < self.cut_ratio:
                    self.stats.cut += 1
                    self.stats.cut_after_commit |= _stored_pids(answer)
                    if self.rng.random() < 0.5:
                        writer.transport.abort()  # RST
                    return  # FIN in `finally`
            writer.write(answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(self, raw: bytes) -> bytes:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.target_host, self.target_port), 10
        )
        try:
            writer.write(raw)
            await writer.drain()
            return await asyncio.wait_for(reader.read(-1), 60)  # until the receiver closes
        finally:
            writer.close()


def _stored_pids(answer: bytes) -> set[str]:
    """Pids whose receipt the receiver put in an answer (it stored those packets)."""
    _head, _, body = answer.partition(b"\r\n\r\n")
    try:
        data = json.loads(body)
    except ValueError:
        return set()
    receipts = []
    if isinstance(data, dict) and "results" in data:
        receipts = [r["receipt"] for r in data["results"] if r.get("receipt")]
    elif isinstance(data, dict) and "hp1r" in data:
        receipts = [data]
    return {json.loads(b64u_decode(r["hp1r"]))["pid"] for r in receipts}


# --- traffic -------------------------------------------------------------------------------


class Stream:
    """`count` release notices POSTed to `node`'s local API at about `rate` a second
    (a few threads), each for its own case `case_ref(i, series)`.

    A submission counts as accepted on a 202; anything else (connection refused
    while the node is down, 5xx while its database is) is an error: the client
    did not get a pid, though the packet may still have been committed.
    """

    def __init__(
        self, node: NodeProcess, to: str, count: int, series: int, rate: float, workers: int = 4
    ) -> None:
        self.node = node
        self.to = to
        self.count = count
        self.series = series
        self.rate = rate
        self.workers = workers
        self.accepted: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def case_refs(self) -> list[str]:
        return [case_ref(i, self.series) for i in range(self.count)]

    def run(self) -> None:
        started = time.monotonic()

        def one(i: int) -> None:
            delay = started + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            headers = {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.node.tokens['caseworker']}",
            }
            payload = json.dumps(submission([self.to], case=i, series=self.series)).encode()
            try:
                status, raw = self.node.request("POST", "/api/v1/packets", payload, headers, 20)
            except Exception as exc:  # the node or its database is down
                with self._lock:
                    self.errors.append(repr(exc)[:120])
                return
            with self._lock:
                if status == 202:
                    self.accepted.append(json.loads(raw)["packets"][0]["pid"])
                else:
                    self.errors.append(f"{status} {raw[:120]!r}")

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(one, range(self.count)))

    def start(self) -> Stream:
        self._thread = threading.Thread(target=self.run, name=f"stream-{self.series}")
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the submission stream did not finish in time"

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()


# --- outcomes ------------------------------------------------------------------------------


def sent_pids(sender: NodeProcess, case_refs: list[str]) -> list[str]:
    """Every packet the sender committed for these cases (acknowledged or not)."""
    rows = sender.sql("SELECT pid FROM outbox WHERE case_ref = ANY($1)", case_refs)
    return sorted(r["pid"] for r in rows)


def pending_of(sender: NodeProcess, pids: list[str]) -> int:
    (row,) = sender.sql(
        "SELECT count(*) AS n FROM deliveries WHERE status = 'pending' AND pid = ANY($1)", pids
    )
    return int(row["n"])


def wait_settled(sender: NodeProcess, case_refs: list[str], timeout: float) -> list[str]:
    """Wait until no delivery of these cases is pending; returns their pids."""
    deadline = time.monotonic() + timeout
    while True:
        pids = sent_pids(sender, case_refs)
        left = pending_of(sender, pids)
        if not left:
            return pids
        if time.monotonic() > deadline:
            return pids  # `outcome` reports and fails on what is still pending
        time.sleep(0.5)


@dataclass
class Outcome:
    submitted: int
    accepted: int
    unacknowledged: int  # committed, but the client got no 202
    statuses: Counter[str]
    received: int
    duplicated: int
    missing: int
    receipt_mismatch: int
    retried: int
    problems: list[str]

    def line(self) -> str:
        s = self.statuses
        return (
            f"packets {self.accepted} accepted of {self.submitted} submitted"
            f" (+{self.unacknowledged} committed without a 202);"
            f" delivered {s['delivered']} rejected {s['rejected']} expired {s['expired']}"
            f" pending {s['pending']}; received {self.received}, duplicated {self.duplicated},"
            f" lost {self.missing}, receipts differing {self.receipt_mismatch},"
            f" retried {self.retried}"
        )


def _per_pid(node: NodeProcess, sql: str, *args: Any) -> Counter[str]:
    return Counter({r["pid"]: int(r["n"]) for r in node.sql(sql, *args)})


def outcome(
    sender: NodeProcess,
    receiver: NodeProcess,
    stream: Stream,
    *,
    expect: tuple[str, ...] = ("delivered",),
) -> Outcome:
    """Lost, duplicated and receipts for one case's packets, without asserting.

    lost: a committed packet whose delivery is not final, or final as delivered
    without the receiver holding it, or accepted (202) but not in the outbox, or
    disclosed without an outbox row. duplicated: a pid held or logged more than
    once by the receiver (received rows, collection or rejection entries), or
    its delivery logged more than once by the sender.
    """
    pids = sent_pids(sender, stream.case_refs)
    problems: list[str] = []
    rows = sender.sql(
        "SELECT pid, status, attempts, receipt FROM deliveries WHERE pid = ANY($1) AND node = $2",
        pids,
        receiver.node,
    )
    by_pid = {r["pid"]: r for r in rows}
    statuses = Counter(r["status"] for r in rows)
    missing = [p for p in pids if p not in by_pid]
    missing += [p for p in stream.accepted if p not in set(pids)]
    disclosed = {
        r["pid"]
        for r in sender.sql(
            "SELECT pid FROM audit_log WHERE op = 'disclosure' AND case_ref = ANY($1)",
            stream.case_refs,
        )
    }
    if disclosed != set(pids):
        problems.append(f"disclosures without outbox rows: {sorted(disclosed - set(pids))[:5]}")
    held = {
        r["pid"]: bytes(r["receipt"])
        for r in receiver.sql(
            "SELECT pid, receipt FROM received WHERE sender = $1 AND pid = ANY($2)",
            sender.node,
            pids,
        )
    }
    counts = [
        _per_pid(
            receiver,
            "SELECT pid, count(*) AS n FROM received WHERE sender = $1 AND pid = ANY($2)"
            " GROUP BY pid",
            sender.node,
            pids,
        ),
        _per_pid(
            receiver,
            "SELECT pid, count(*) AS n FROM audit_log WHERE op IN ('collection', 'rejection')"
            " AND pid = ANY($1) GROUP BY pid",
            pids,
        ),
        _per_pid(
            sender,
            "SELECT pid, count(*) AS n FROM audit_log WHERE op = 'delivery'"
            " AND pid = ANY($1) GROUP BY pid",
            pids,
        ),
    ]
    duplicated = {p for c in counts for p, n in c.items() if n > 1}
    mismatch = 0
    for pid, row in by_pid.items():
        if row["status"] not in FINAL:
            missing.append(pid)
            continue
        if row["status"] == "delivered":
            if pid not in held:
                missing.append(pid)
            elif row["receipt"] is None or bytes(row["receipt"]) != held[pid]:
                mismatch += 1
        if row["status"] not in expect:
            problems.append(f"{pid} ended {row['status']}, expected one of {expect}")
    return Outcome(
        submitted=stream.count,
        accepted=len(stream.accepted),
        unacknowledged=len(set(pids) - set(stream.accepted)),
        statuses=statuses,
        received=len(held),
        duplicated=len(duplicated),
        missing=len(set(missing)),
        receipt_mismatch=mismatch,
        retried=sum(1 for r in rows if r["attempts"] > 1),
        problems=problems[:10],
    )


def assert_exactly_once(result: Outcome) -> None:
    assert result.missing == 0, f"lost packets: {result.line()}"
    assert result.duplicated == 0, f"duplicated packets: {result.line()}"
    assert result.receipt_mismatch == 0, f"receipts differ: {result.line()}"
    assert not result.problems, result.problems


def refusals(receiver: NodeProcess, pids: list[str]) -> Counter[str]:
    """The receiver's audited refusals of these packets, by reason."""
    rows = receiver.sql(
        "SELECT e ->> 'reason' AS reason, count(*) AS n FROM"
        " (SELECT convert_from(entry, 'UTF8')::jsonb AS e FROM audit_log"
        "  WHERE op = 'rejection') r WHERE e ->> 'unverified_pid' = ANY($1) GROUP BY 1",
        pids,
    )
    return Counter({r["reason"]: int(r["n"]) for r in rows})


def verify_audit(nodes: list[NodeProcess], peers: bool = True) -> dict[str, str]:
    """`handover audit verify --dir DIR [--peers]` on every node at once; returns
    "ok" or the failure per node (exit code and output)."""
    procs = {
        node.node: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "handover.cli",
                "audit",
                "verify",
                "--dir",
                str(node.dir),
                *(["--peers"] if peers else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        for node in nodes
    }
    results = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[name] = (
            "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {out[-800:]}{err[-800:]}"
        )
    return results
