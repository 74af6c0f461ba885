"""The event feed (`GET /api/v1/events`, node/events.py) on real in-process nodes,
through aiohttp's test client: every kind in commit order with ids and types
only, the long-poll woken by a commit, server-sent events resumed with
`Last-Event-ID`, bounded waits, retention, and overdue items reported once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from handover.node.events import MAX_STREAMS_PER_OPERATOR, EventFeed
from handover.node.runtime import Node
from handover.protocol.timeutil import DAY_MS
from handover.store import events as event_store
from handover.web.app import create_app
from handover.web.errors import STATUS
from handover.workflow.errors import ErrorCode, RequestRefused
from inproc import (
    EXIT,
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    Cluster,
    body,
    deliver,
    release_notice,
    send,
    send_delivered,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CONDITION_UPDATE = "handover/condition-update/1"
CONSENT_RECORD = "handover/consent-record/1"


class Feed:
    def __init__(self, client: TestClient, token: str) -> None:  # type: ignore[type-arg]
        self.client = client
        self.auth = {"Authorization": f"Bearer {token}"}

    async def get(self, **query: Any) -> tuple[int, Any]:
        response = await self.client.get(
            "/api/v1/events", params={k: str(v) for k, v in query.items()}, headers=self.auth
        )
        return response.status, await response.json()

    async def all_after(self, after: int) -> dict[str, Any]:
        """Every event after `after`, in one page-shaped dict (pages of 500)."""
        status, page = await self.get(after=after, limit=500)
        assert status == 200, page
        while True:
            status, more = await self.get(after=page["next_after"], limit=500)
            assert status == 200, more
            if not more["events"]:
                return dict(page)
            page = {**more, "events": page["events"] + more["events"]}

    async def last_id(self) -> int:
        after = 0
        while True:
            status, page = await self.get(after=after, limit=500)
            assert status == 200, page
            if not page["events"]:
                return after
            after = page["next_after"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def feeds(cluster: Cluster) -> AsyncIterator[dict[str, Feed]]:
    """A test client on prison.test's and probation.test's apps, as caseworkers."""
    out, clients = {}, []
    for name in (PRISON, PROBATION):
        node = cluster[name]
        token = await cluster.operator(node, "events-reader", "caseworker")
        client = TestClient(TestServer(create_app(node)))
        await client.start_server()
        clients.append(client)
        out[name] = Feed(client, token)
    try:
        yield out
    finally:
        for client in clients:
            await client.close()


def strip(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["type"], event.get("pid"), event.get("node"), event.get("status"))


async def test_every_kind_arrives_in_order_with_ids_only(
    feeds: dict[str, Feed], prison: Node, probation: Node, exit_org: Node
) -> None:
    start = {name: await feed.last_id() for name, feed in feeds.items()}
    notice = release_notice()
    case = notice["case_ref"]
    pid = await send_delivered(prison, [PROBATION], RELEASE_NOTICE, notice)
    update = body(CONDITION_UPDATE, case_ref=case)
    answer = await send_delivered(probation, [PRISON], CONDITION_UPDATE, update)
    consent = body(CONSENT_RECORD, case_ref=case, scope="SHARE_PROGRESS", consent_id="C-ev1")
    consent["recipients"] = [PRISON]
    consent_pid = await send_delivered(exit_org, [PRISON], CONSENT_RECORD, consent)

    # The cluster is shared with other tests: read every page from `start` on.
    page = await feeds[PRISON].all_after(start[PRISON])
    mine = [e for e in page["events"] if e.get("case_ref", case) == case]
    assert [strip(e) for e in mine if e.get("pid") in (pid, answer, consent_pid)] == [
        ("delivery", pid, PROBATION, "delivered"),
        ("inbox", answer, PROBATION, None),
        ("acknowledgement", answer, PROBATION, None),
        ("inbox", consent_pid, EXIT, None),
        ("consent", consent_pid, EXIT, None),
    ]
    ids = [e["id"] for e in page["events"]]
    assert ids == sorted(ids) and page["next_after"] == ids[-1]
    # Identifiers and types only: no body value of any packet is in the feed.
    text = json.dumps(page)
    for value in (notice["confirmed_release_date"], "SHARE_PROGRESS", "GIVEN", "C-ev1"):
        assert value not in text
    for event in mine:
        assert set(event) <= {"id", "type", "at", "pid", "case_ref", "node", "schema", "status"}

    page = await feeds[PROBATION].all_after(start[PROBATION])
    assert [strip(e) for e in page["events"] if e.get("pid") in (pid, answer)] == [
        ("inbox", pid, PRISON, None),
        ("delivery", answer, PRISON, "delivered"),
    ]
    # The cursor moves on: nothing after the last id.
    status, empty = await feeds[PROBATION].get(after=await feeds[PROBATION].last_id())
    assert (status, empty["events"]) == (200, [])


async def test_a_long_poll_returns_when_an_event_commits(
    feeds: dict[str, Feed], prison: Node, probation: Node
) -> None:
    after = await feeds[PROBATION].last_id()
    # In-process nodes do not run Node.start: attach the LISTEN it makes, so the
    # poll is woken by the real NOTIFY of the commit.
    await probation.db.listen(events=probation.events.wake)
    poll = asyncio.create_task(feeds[PROBATION].get(after=after, wait=25))
    await asyncio.sleep(0.3)
    assert not poll.done()  # nothing yet: it waits
    loop = asyncio.get_running_loop()
    started = loop.time()
    (packet,) = await send(prison, [PROBATION], RELEASE_NOTICE, release_notice())
    await deliver(prison, packet["pid"])
    status, page = await asyncio.wait_for(poll, 10)
    assert status == 200 and loop.time() - started < 10
    assert [e["pid"] for e in page["events"] if e["type"] == "inbox"] == [packet["pid"]]


async def test_a_long_poll_without_events_answers_empty_at_its_deadline(
    feeds: dict[str, Feed], probation: Node
) -> None:
    after = await feeds[PROBATION].last_id()
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, page = await feeds[PROBATION].get(after=after, wait=1)
    assert (status, page) == (200, {"events": [], "next_after": after})
    assert 0.9 < loop.time() - started < 5


async def test_server_sent_events_carry_ids_and_resume_with_last_event_id(
    feeds: dict[str, Feed], prison: Node, probation: Node
) -> None:
    feed = feeds[PROBATION]
    before = await feed.last_id()
    first = await send_delivered(prison, [PROBATION], RELEASE_NOTICE, release_notice())
    second = await send_delivered(prison, [PROBATION], RELEASE_NOTICE, release_notice())
    status, page = await feed.get(after=before)
    assert status == 200
    inbox = [e for e in page["events"] if e["type"] == "inbox"]
    assert [e["pid"] for e in inbox] == [first, second]

    headers = dict(feed.auth, Accept="text/event-stream", **{"Last-Event-ID": str(inbox[0]["id"])})
    response = await feed.client.get("/api/v1/events", headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    frames: list[dict[str, str]] = []
    frame: dict[str, str] = {}
    async with asyncio.timeout(10):
        while not any(f.get("data", "").find(second) >= 0 for f in frames):
            line = (await response.content.readline()).decode().rstrip("\n")
            if not line:
                if frame:
                    frames.append(frame)
                frame = {}
                continue
            name, _, value = line.partition(": ")
            frame[name] = value
    response.close()
    events = [f for f in frames if "id" in f]
    assert int(events[0]["id"]) > inbox[0]["id"]  # resumed after Last-Event-ID
    assert first not in "".join(f["data"] for f in events)
    last = next(f for f in events if second in f["data"])
    assert (last["id"], last["event"]) == (str(inbox[1]["id"]), "inbox")
    assert json.loads(last["data"])["id"] == inbox[1]["id"]


async def test_bad_parameters_are_refused(feeds: dict[str, Feed]) -> None:
    for query in ({"after": "x"}, {"wait": 26}, {"limit": 0}, {"since": 1}):
        status, answer = await feeds[PROBATION].get(**query)
        assert (status, answer["error"]) == (STATUS[ErrorCode.BAD_REQUEST], "bad_request")


async def test_waits_are_bounded_per_operator(probation: Node) -> None:
    feed = probation.events
    async with contextlib_stack(feed, "one", MAX_STREAMS_PER_OPERATOR):
        with pytest.raises(RequestRefused) as info:
            async with feed.slot("one"):
                pass
        assert info.value.code is ErrorCode.TOO_MANY_REQUESTS
        async with feed.slot("another"):  # another operator still gets one
            assert feed.open_streams == MAX_STREAMS_PER_OPERATOR + 1
    assert feed.open_streams == 0


def contextlib_stack(feed: EventFeed, operator: str, n: int) -> Any:
    import contextlib

    stack = contextlib.AsyncExitStack()

    class Held:
        async def __aenter__(self) -> None:
            for _ in range(n):
                await stack.enter_async_context(feed.slot(operator))

        async def __aexit__(self, *exc: object) -> None:
            await stack.aclose()

    return Held()


async def test_overdue_items_are_reported_once(prison: Node) -> None:
    notice = release_notice()  # released in 2025: the answer is long overdue
    (packet,) = await send(prison, [PROBATION], RELEASE_NOTICE, notice)
    async with prison.db.connection() as conn:
        before = max([e.id for e in await event_store.after(conn, 0, 100_000)] or [0])
    assert await prison.events.note_overdue() >= 1
    await prison.events.note_overdue()  # the second look reports nothing new
    async with prison.db.connection() as conn:
        new = await event_store.after(conn, before, 100_000)
    mine = [(e.kind, e.pid, e.node, e.case_ref) for e in new if e.pid == packet["pid"]]
    assert mine == [("overdue", packet["pid"], PROBATION, notice["case_ref"])]
    await deliver(prison, packet["pid"])


async def test_retention_deletes_old_events_and_expires_their_cursors(lone: Node) -> None:
    async def job(conn: Any, appender: Any) -> None:
        for i in range(3):
            await event_store.add(conn, appender.deferred, "inbox", at=1000 + i, pid=f"p{i}")

    await lone.writer.run(job)
    page = await lone.events.page(0, 500)
    ids = [e["id"] for e in page]
    # A clock 30 days and a moment after the events: all three are deleted.
    aged = EventFeed(db=lone.db, writer=lone.writer, clock=lambda: 1000 + 31 * DAY_MS)
    assert await aged.prune() >= 3
    assert await lone.events.page(0, 500) == []
    with pytest.raises(RequestRefused) as info:
        await lone.events.page(ids[0], 500)
    assert info.value.code is ErrorCode.CURSOR_EXPIRED
    assert await lone.events.page(ids[-1], 500) == []  # the newest deleted cursor is fine


async def test_a_stopping_server_answers_long_polls_and_ends_streams_at_once(
    cluster: Cluster, feeds: dict[str, Feed], probation: Node
) -> None:
    after = await feeds[PROBATION].last_id()
    server = TestServer(create_app(probation))
    await server.start_server()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:

        async def poll() -> tuple[int, Any]:
            async with session.get(
                server.make_url("/api/v1/events"),
                params={"after": str(after), "wait": "25"},
                headers=feeds[PROBATION].auth,
            ) as response:
                return response.status, await response.json()

        async def stream() -> bytes:
            headers = dict(feeds[PROBATION].auth, Accept="text/event-stream")
            async with session.get(
                server.make_url("/api/v1/events"),
                params={"after": str(after)},
                headers=headers,
            ) as response:
                assert response.status == 200
                return await response.read()  # until the server ends the stream

        waiting = asyncio.create_task(poll())
        streaming = asyncio.create_task(stream())
        await asyncio.sleep(0.5)
        assert not waiting.done() and not streaming.done()
        started = loop.time()
        await server.close()
        status, page = await asyncio.wait_for(waiting, 10)
        streamed = await asyncio.wait_for(streaming, 10)
    assert (status, page["events"]) == (200, [])
    assert streamed.startswith(b"retry: 2000")
    assert loop.time() - started < 10


async def test_a_fifth_wait_of_one_operator_is_refused_over_http(
    cluster: Cluster, feeds: dict[str, Feed], probation: Node
) -> None:
    token = await cluster.operator(probation, "events-greedy", "caseworker")
    greedy = Feed(feeds[PROBATION].client, token)
    far = 2**60  # no event has this id yet: every poll waits its full time
    polls = [asyncio.create_task(greedy.get(after=far, wait=3)) for _ in range(4)]
    await asyncio.sleep(0.5)
    status, answer = await greedy.get(after=far, wait=3)
    assert (status, answer["error"]) == (STATUS[ErrorCode.TOO_MANY_REQUESTS], "too_many_requests")
    assert "per operator" in answer["message"]
    # Another operator is not affected, and the four answer empty at their deadline.
    status, _page = await feeds[PROBATION].get(after=far, wait=1)
    assert status == 200
    for status, page in await asyncio.gather(*polls):
        assert (status, page["events"]) == (200, [])
    status, _page = await greedy.get(after=far, wait=1)  # the places are free again
    assert status == 200
