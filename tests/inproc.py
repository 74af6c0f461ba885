"""Real nodes in one process, for unit tests of the node, workflow and web layers.

Each node is a directory made by the real CLI (`handover init`), opened with
`Node.open` (its own embedded PostgreSQL, real migrations) with its audit
writer running, and attached to one shared :class:`MemoryTransport` under its
URL. Peers are pinned by root fingerprint, as `handover peers add` does. The
delivery worker runs only while a test calls :func:`deliver`, so a test can
look at the outbox before and after.

    Cluster(base, clock)            nodes of one test session on one MemoryTransport
    await cluster.add(name, kind)   init and open a node; its URL is http://NAME
    await cluster.pin_all()         every node pins every other one
    await cluster.operator(n, r)    a bearer token for a new operator (`handover operators add`)
    await deliver(node, *pids)      run the delivery worker until those deliveries finish
    seal_from(a, b, schema, body)   a packet sealed by node a to node b (not via a's outbox)
    new_case(), body(schema, ...)   fresh case references and valid example bodies
    CASEWORKER, ADMIN               operators to pass to the workflow directly

Fixtures (registered by tests/conftest.py):

    cluster                         session: prison.test, probation.test, exit.test, pinned
    prison, probation, exit_org     its three nodes
    lone                            module: one node without peers, for tests that damage
                                    its database

The nodes are shared by every test of the session, so each test makes its own
case (`new_case()`) and looks only at its own packets. Tests that use these
fixtures run in the session's event loop:

    pytestmark = pytest.mark.asyncio(loop_scope="session")
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from handover.node.runtime import Node
from handover.node.transport import MemoryTransport
from handover.protocol.attachments import AttachmentItem
from handover.protocol.canonical import cj_dumps
from handover.protocol.packet import Recipient, SealedPacket, seal
from handover.protocol.receipt import Receipt, parse_receipt, verify_receipt
from handover.protocol.timeutil import now_ms
from handover.web.app import create_app
from handover.workflow.access import Operator
from handover.workflow.schemas import default_registry

SRC = Path(__file__).resolve().parents[1] / "src"
PRISON, PROBATION, EXIT = "prison.test", "probation.test", "exit.test"
TRIO = ((PRISON, "prison"), (PROBATION, "probation"), (EXIT, "exit"))
RELEASE_NOTICE = "handover/release-notice/1"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CASEWORKER = Operator("casey", "caseworker")
ADMIN = Operator("ada", "admin")
WHY = "release planning for the case"


class SharedClock:
    """Protocol time for every node of a cluster: the real clock plus an offset
    that only moves forward (`advance`), so a test can skip a retry backoff."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return now_ms() + self.offset

    def advance(self, ms: int) -> None:
        self.offset += ms


def url_of(name: str) -> str:
    return f"http://{name}"


async def run_cli(*args: str) -> str:
    """`python -m handover.cli ARGS` in a subprocess; its stdout (AssertionError on failure)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "handover.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"handover {' '.join(args)} exited {proc.returncode}: {err.decode()}")
    return out.decode()


class Cluster:
    """In-process nodes on one MemoryTransport, sharing one clock."""

    def __init__(self, base: Path, clock: SharedClock | None = None) -> None:
        self.base = base
        self.clock = clock or SharedClock()
        self.transport = MemoryTransport()
        self.nodes: dict[str, Node] = {}
        self.fingerprints: dict[str, str] = {}

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    async def add(self, name: str, kind: str) -> Node:
        """`handover init` a node directory, open the node and attach it to the transport."""
        await self.init(name, kind)
        return await self.open(name)

    async def init(self, name: str, kind: str) -> Path:
        """`handover init` a node directory (several may run at once)."""
        directory = self.base / name
        out = await run_cli(
            "init",
            "--dir",
            str(directory),
            "--node",
            name,
            "--kind",
            kind,
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            url_of(name),
        )
        self.fingerprints[name] = json.loads(out)["fingerprint"]
        return directory

    async def open(self, name: str) -> Node:
        """Open an initialised node, start its audit writer, attach it to the transport.

        One at a time: pgserver cannot start two servers at once in one process.
        """
        node = await Node.open(self.base / name, transport=self.transport, clock=self.clock)
        node.writer.start()
        self.nodes[name] = node
        self.transport.attach(node.config.url, node)
        return node

    async def pin_all(self) -> None:
        for node in self.nodes.values():
            for name, peer in self.nodes.items():
                if name != node.config.node:
                    await node.directory.pin(
                        peer.config.url, self.fingerprints[name], peer.config.kind
                    )

    async def operator(self, node: Node, name: str, role: str) -> str:
        """A new operator of `node` made by `handover operators add`; its bearer token."""
        out = await run_cli(
            "operators", "add", "--dir", str(node.config.directory), name, "--role", role
        )
        return out.strip().splitlines()[-1]

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.close()
        self.nodes.clear()


# --- helpers for tests ----------------------------------------------------------------


def finished(delivery: dict[str, Any]) -> bool:
    return bool(delivery["status"] != "pending")


async def deliver(
    node: Node,
    *pids: str,
    until: Callable[[dict[str, Any]], bool] = finished,
    timeout: float = 20.0,
) -> list[dict[str, Any]]:
    """Run `node`'s delivery worker until `until` holds for every delivery of `pids`
    (by default: none is pending any more); returns the packets' statuses."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    node.delivery.start()
    node.delivery.wake.set()
    try:
        while True:
            statuses = [await node.sender.packet_status(pid) for pid in pids]
            if all(until(d) for s in statuses for d in s["deliveries"]):
                return statuses
            if loop.time() > deadline:
                raise AssertionError(f"deliveries did not finish: {statuses}")
            await asyncio.sleep(0.02)
    finally:
        await node.delivery.stop()


async def send(
    node: Node,
    to: Sequence[str],
    schema: str,
    body: dict[str, Any],
    *,
    minimise: bool = False,
    operator: Operator = CASEWORKER,
) -> list[dict[str, Any]]:
    """Submit through the node's normal path (policy, disclosure entry, outbox)."""
    return await node.sender.submit(
        operator, to=list(to), schema_id=schema, body=body, justification=WHY, minimise=minimise
    )


async def send_delivered(
    node: Node, to: Sequence[str], schema: str, body: dict[str, Any], **kwargs: Any
) -> str:
    """Submit one packet and deliver it; its pid (every delivery must be `delivered`)."""
    (packet,) = await send(node, to, schema, body, **kwargs)
    (status,) = await deliver(node, packet["pid"])
    assert {d["status"] for d in status["deliveries"]} == {"delivered"}, status
    pid: str = packet["pid"]
    return pid


def seal_from(
    sender: Node,
    recipient: Node,
    schema: str,
    body: dict[str, Any],
    *,
    pid: str | None = None,
    now: int | None = None,
    attachments: Sequence[AttachmentItem] = (),
) -> SealedPacket:
    """A packet `sender` seals to `recipient` with its real keys, outside its outbox
    (for tests that post the wire themselves)."""
    at = sender.clock() if now is None else now
    keyset = sender.directory.keyset(recipient.config.node)
    assert keyset is not None, f"{recipient.config.node} is not pinned by {sender.config.node}"
    return seal(
        sender.directory.keys.identity(),
        [Recipient.from_keyset(keyset, at)],
        schema,
        body,
        now=at,
        pid=pid,
        validator=default_registry(),
        attachments=attachments,
    )


def check_receipt(
    sender: Node, packet: SealedPacket, wire: bytes | str, recipient: str | None = None
) -> Receipt:
    """The sender's receipt checks (docs/protocol.md section 4) for the delivery of
    `packet` to `recipient` (default: its first recipient)."""
    return verify_receipt(
        wire,
        sender=sender.config.node,
        pid=packet.pid,
        pd=packet.pd,
        recipient=recipient or packet.to[0],
        keyset_for=sender.directory.keyset,
        now=sender.clock(),
    )


def stored_receipt(delivery: dict[str, Any]) -> Receipt:
    """The receipt a delivery status holds (its JSON form) as a parsed receipt."""
    receipt, _sig = parse_receipt(cj_dumps(delivery["receipt"]))
    return receipt


def new_case() -> str:
    return "HC-" + "".join(secrets.choice(CROCKFORD) for _ in range(26))


def body(schema: str, index: int = 0, **changes: Any) -> dict[str, Any]:
    """A schema example as a fresh copy, on a new case unless `case_ref` is given."""
    out: dict[str, Any] = copy.deepcopy(default_registry().examples(schema)[index])
    out["case_ref"] = new_case()
    out.update(changes)
    return out


def release_notice(case_ref: str | None = None, **changes: Any) -> dict[str, Any]:
    """The release-notice with the most fields, without what needs FAMILY_INVOLVEMENT
    consent (`family_contact`) and without `supersedes` (a case's first notice)."""
    out = body(RELEASE_NOTICE, 3, **changes)
    del out["family_contact"], out["supersedes"]
    if case_ref is not None:
        out["case_ref"] = case_ref
    return out


@contextlib.asynccontextmanager
async def app_client(node: Node) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    """`node`'s web app (local API and /ui) on an aiohttp test server, and a client of it."""
    client = TestClient(TestServer(create_app(node)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def audit_entries(node: Node, *, pid: str | None = None, after: int = 0) -> list[Any]:
    """The node's audit entries (decoded), optionally only those naming `pid`."""
    page = await node.audit.entries(after=after, limit=500, case_ref=None, pid=pid)
    return [item["entry"] for item in page]


async def audit_seq(node: Node) -> int:
    """The sequence number of the node's newest audit entry."""
    after, last = 0, 0
    while True:
        page = await node.audit.entries(after=after, limit=500, case_ref=None, pid=None)
        if not page:
            return last
        last = after = page[-1]["seq"]


# --- fixtures -------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """prison.test, probation.test and exit.test, each pinning the other two."""
    nodes = Cluster(tmp_path_factory.mktemp("inproc"))
    try:
        await asyncio.gather(*(nodes.init(name, kind) for name, kind in TRIO))
        for name, _kind in TRIO:
            await nodes.open(name)
        await nodes.pin_all()
        yield nodes
    finally:
        await nodes.close()


@pytest.fixture
def prison(cluster: Cluster) -> Node:
    return cluster[PRISON]


@pytest.fixture
def probation(cluster: Cluster) -> Node:
    return cluster[PROBATION]


@pytest.fixture
def exit_org(cluster: Cluster) -> Node:
    return cluster[EXIT]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def lone(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    """One node of its own (no peers), for tests that damage its database."""
    nodes = Cluster(tmp_path_factory.mktemp("lone"))
    try:
        yield await nodes.add("lone.test", "prison")
    finally:
        await nodes.close()
