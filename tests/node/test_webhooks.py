"""Webhooks (node/webhooks.py, `handover webhooks`) with a real receiver: an aiohttp
server on 127.0.0.1 in the test. Every event of the kinds asked for arrives,
signed; a receiver that is down gets the events later, in order; a tampered body
or a wrong secret fails the verification integrators use (the copy printed in
docs/integrators.md is the one run here)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from handover.node import keystore
from handover.node.runtime import Node
from handover.node.webhook_signature import verify
from handover.node.webhooks import WebhookWorker
from inproc import (
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    SRC,
    SharedClock,
    audit_entries,
    audit_seq,
    release_notice,
    run_cli,
    send_delivered,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrators.md"
SECRET = b"whsec_" + b"k" * 32


class Receiver:
    """A webhook receiver on 127.0.0.1 that records what it is sent; it can be
    stopped and started again on the same port."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/handover", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/handover"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for _headers, raw in self.got]


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        if r._runner is not None:
            await r.stop()


def secret_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "webhook.secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(mode)
    return path


async def add_webhook(node: Node, url: str, events: str, secret: Path) -> int:
    out = await run_cli(
        "webhooks",
        "add",
        "--dir",
        str(node.config.directory),
        "--url",
        url,
        "--events",
        events,
        "--secret-file",
        str(secret),
    )
    answer = json.loads(out)
    assert answer["url"] == url
    return int(answer["id"])


async def listed(node: Node, webhook_id: int) -> dict[str, Any]:
    out = json.loads(await run_cli("webhooks", "list", "--dir", str(node.config.directory)))
    (item,) = [w for w in out if w["id"] == webhook_id]
    return dict(item)


def worker(node: Node, clock: SharedClock | None = None) -> WebhookWorker:
    return WebhookWorker(
        db=node.db,
        storage_key=keystore.storage_key(node.config.keys_dir),
        clock=clock or node.clock,
    )


async def run_until(w: WebhookWorker, done: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            await w.run_once()
            await asyncio.sleep(0.05)


async def test_every_event_arrives_signed(
    tmp_path: Path, receiver: Receiver, prison: Node, probation: Node
) -> None:
    hook = await add_webhook(probation, receiver.url, "inbox,delivery", secret_file(tmp_path))
    pids = [
        await send_delivered(prison, [PROBATION], RELEASE_NOTICE, release_notice())
        for _ in range(3)
    ]
    w = worker(probation)
    try:
        await run_until(
            w,
            lambda: {e.get("pid") for e in receiver.events() if e["type"] == "inbox"} >= set(pids),
        )
    finally:
        await w.stop()
    inbox = [e for e in receiver.events() if e["type"] == "inbox" and e["pid"] in pids]
    assert [e["pid"] for e in inbox] == pids  # each once, in order
    assert all(e["node"] == PRISON and e["schema"] == RELEASE_NOTICE for e in inbox)
    for headers, raw in receiver.got:
        event = json.loads(raw)
        assert headers["Handover-Event-Id"] == str(event["id"])
        assert headers["Handover-Webhook-Id"] == str(hook)
        assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", headers["Handover-Signature"])
        # The receiver's clock is the node's (the session's clock may run ahead).
        assert verify(SECRET, raw, headers["Handover-Signature"], now=probation.clock() / 1000)
    # Nothing left in the queue; the secret is stored sealed, never in clear.
    assert (await listed(probation, hook))["pending"] == 0
    async with probation.db.connection() as conn:
        box = await conn.fetchval("SELECT secret_box FROM webhooks WHERE id = $1", hook)
    assert SECRET not in bytes(box)
    await run_cli("webhooks", "remove", "--dir", str(probation.config.directory), str(hook))
    # Adding and removing are audited, naming the target's host only.
    changes = [
        e
        for e in await audit_entries(probation, after=await audit_seq(probation) - 50)
        if e["op"] == "key" and e.get("webhook") == hook
    ]
    assert [e["action"] for e in changes] == ["webhook_added", "webhook_removed"]
    assert changes[0]["target"] == f"http://127.0.0.1:{receiver.port}"
    assert "/hooks" not in json.dumps(changes)
    remaining = json.loads(
        await run_cli("webhooks", "list", "--dir", str(probation.config.directory))
    )
    assert hook not in [w["id"] for w in remaining]


async def test_a_receiver_that_was_down_gets_the_events_later_in_order(
    tmp_path: Path, receiver: Receiver, prison: Node, probation: Node
) -> None:
    hook = await add_webhook(prison, receiver.url, "delivery", secret_file(tmp_path))
    await receiver.stop()
    pids = [
        await send_delivered(prison, [PROBATION], RELEASE_NOTICE, release_notice())
        for _ in range(2)
    ]
    clock = SharedClock()
    clock.offset = prison.clock() - clock()
    w = worker(prison, clock)
    try:
        assert await w.run_once() == 0  # connection refused: both wait
        state = await listed(prison, hook)
        assert (state["pending"], state["failed"]) == (2, 0)
        async with prison.db.connection() as conn:
            errors = await conn.fetch(
                "SELECT attempts, last_error FROM webhook_queue WHERE webhook_id = $1"
                " ORDER BY event_id",
                hook,
            )
        assert errors[0]["attempts"] == 1 and "refused" in errors[0]["last_error"].lower()
        assert await w.run_once() == 0  # still backing off: nothing is tried
        await prison.refresh_gauges()
        assert b'handover_webhook_queue{state="pending"} 2.0' in prison.metrics.render()

        await receiver.start()
        clock.advance(2_000)  # past the first backoff (1 s)
        await run_until(w, lambda: len(receiver.events()) >= 2)
    finally:
        await w.stop()
    got = [e for e in receiver.events() if e["pid"] in pids]
    assert [(e["pid"], e["status"]) for e in got] == [(p, "delivered") for p in pids]
    assert [e["id"] for e in got] == sorted(e["id"] for e in got)
    assert (await listed(prison, hook))["pending"] == 0
    await run_cli("webhooks", "remove", "--dir", str(prison.config.directory), str(hook))


async def test_a_tampered_body_or_wrong_secret_fails_the_documented_check(
    receiver: Receiver,
) -> None:
    from handover.node.webhook_signature import sign

    body = b'{"id":7,"type":"inbox","pid":"abc"}'
    header = sign(SECRET, body, int(__import__("time").time()))
    # The verify function integrators copy from docs/integrators.md.
    text = DOCS.read_text("utf-8")
    block = re.search(r"```python\n(.*?def verify_handover_signature.*?)```", text, re.S)
    assert block is not None, "docs/integrators.md prints verify_handover_signature"
    scope: dict[str, Any] = {}
    exec(block.group(1), scope)
    documented = scope["verify_handover_signature"]
    for check in (verify, documented):
        assert check(SECRET, body, header)
        assert not check(SECRET, body.replace(b"abc", b"abd"), header)
        assert not check(b"another secret of 32 bytes......", body, header)
        assert not check(SECRET, body, header.replace("t=", "t=1"))
        assert not check(SECRET, body, "v1=" + "0" * 64)


async def test_the_cli_refuses_what_it_cannot_use(tmp_path: Path, probation: Node) -> None:
    directory = str(probation.config.directory)
    good = secret_file(tmp_path)
    loose = tmp_path / "loose.secret"
    loose.write_bytes(SECRET)
    loose.chmod(0o644)
    cases = [
        (
            ["--url", "ftp://example.org/x", "--events", "inbox", "--secret-file", str(good)],
            "http:// or https://",
        ),
        (
            ["--url", "file:///etc/passwd", "--events", "inbox", "--secret-file", str(good)],
            "http:// or https://",
        ),
        (
            [
                "--url",
                "https://cms.example/h",
                "--events",
                "inbox,gossip",
                "--secret-file",
                str(good),
            ],
            "gossip",
        ),
        (
            ["--url", "https://cms.example/h", "--events", "inbox", "--secret-file", str(loose)],
            "chmod 600",
        ),
    ]
    for args, words in cases:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "handover.cli",
            "webhooks",
            "add",
            "--dir",
            directory,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(SRC)),
        )
        _out, err = await proc.communicate()
        assert proc.returncode != 0 and words in err.decode(), (args, err)
