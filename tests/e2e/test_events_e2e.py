"""The event feed and webhooks end to end: two real node processes over real HTTP,
and a webhook receiver (an aiohttp server on 127.0.0.1 in a thread of the test).
The node's own worker (started by `handover serve`) delivers; a long-poll is
woken by the NOTIFY of the commit; a receiver that was down gets the event later."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from federation import Federation, free_port, run_cli
from handover.node.webhook_signature import verify

SECRET = b"e2e-webhook-secret-0123456789abcdef"


class ThreadReceiver:
    """An aiohttp receiver in its own thread and event loop; stop and start keep the port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None

    def _call(self, fn: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(30)

    async def _handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    def start(self) -> None:
        async def go() -> None:
            app = web.Application()
            app.router.add_post("/hook", self._handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

        self._call(go)

    def stop(self) -> None:
        async def go() -> None:
            assert self.runner is not None
            await self.runner.cleanup()

        self._call(go)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def pids(self) -> list[str]:
        return [json.loads(raw).get("pid") for _h, raw in self.got]

    def wait_for(self, pid: str, timeout: float = 40) -> tuple[dict[str, str], bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for headers, raw in list(self.got):
                if json.loads(raw).get("pid") == pid:
                    return headers, raw
            time.sleep(0.1)
        raise AssertionError(f"{pid} did not arrive; got {self.pids()}")


def test_feed_and_webhooks_between_real_nodes(tmp_path: Path) -> None:
    prison_name, probation_name = "prison.example", "probation.example"
    fed = Federation(tmp_path, [(prison_name, "prison"), (probation_name, "probation")])
    receiver = ThreadReceiver()
    receiver.start()
    fed.start()
    try:
        prison, probation = fed[prison_name], fed[probation_name]
        secret = tmp_path / "hook.secret"
        secret.write_bytes(SECRET)
        secret.chmod(0o600)
        run_cli(
            "webhooks", "add", "--dir", str(probation.dir), "--url",
            f"http://127.0.0.1:{receiver.port}/hook", "--events", "inbox",
            "--secret-file", str(secret),
        )  # fmt: skip
        auth = {"Authorization": f"Bearer {probation.tokens['caseworker']}"}
        status, raw = probation.request("GET", "/api/v1/events?limit=500", headers=auth)
        assert status == 200
        after = json.loads(raw)["next_after"]

        # A long-poll waiting in the node is woken by the commit of the arrival.
        with ThreadPoolExecutor(1) as pool:
            poll = pool.submit(
                probation.request, "GET", f"/api/v1/events?after={after}&wait=25", None, auth, 60
            )
            time.sleep(1.0)
            assert not poll.done()
            started = time.monotonic()
            pid = prison.send([probation_name])
            status, raw = poll.result(60)
            assert status == 200 and time.monotonic() - started < 30
        events = json.loads(raw)["events"]
        assert [(e["type"], e["pid"]) for e in events] == [("inbox", pid)]

        headers, body = receiver.wait_for(pid)
        assert verify(SECRET, body, headers["Handover-Signature"])
        assert json.loads(body)["id"] == events[0]["id"]

        # The receiver is down while the next packet arrives; it gets it later.
        receiver.stop()
        later = prison.send([probation_name])
        prison.wait_delivered(later)
        time.sleep(2.0)  # the node's worker tries and fails meanwhile
        assert later not in receiver.pids()
        (queued,) = probation.sql("SELECT attempts, last_error FROM webhook_queue")
        assert queued["attempts"] >= 1 and "refused" in queued["last_error"]
        receiver.start()
        headers, body = receiver.wait_for(later)
        assert verify(SECRET, body, headers["Handover-Signature"])
        assert receiver.pids().count(pid) == 1
    finally:
        fed.stop()
        receiver.close()
