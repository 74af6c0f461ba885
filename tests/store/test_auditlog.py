"""The audit log (`AuditWriter`, `verify_chain`) on a real node database: group
commits keep the chain exact, a failing job leaves no trace, and an edited,
deleted or re-chained row is named by verification."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from handover.node.runtime import Node
from handover.protocol import auditchain
from handover.protocol.canonical import cj_dumps, cj_loads
from handover.store.auditlog import Appender, verify_chain
from handover.store.db import Connection
from handover.store.errors import StoreError
from inproc import audit_entries, audit_seq

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def append_key_entries(node: Node, count: int, label: str) -> list[int]:
    """`count` jobs submitted at once, each appending one `key` entry; their seqs."""

    async def job(n: int) -> int:
        async def write(conn: Connection, appender: Appender) -> int:
            return appender.append("key", action=label, serial=n).seq

        seq: int = await node.writer.run(write)
        return seq

    return await asyncio.gather(*(job(n) for n in range(count)))


@pytest_asyncio.fixture(loop_scope="session")
async def node(lone: Node) -> AsyncIterator[Node]:
    """The lone node with some entries; its chain must verify again after each test."""
    await append_key_entries(lone, 3, "setup")
    yield lone
    report = await verify_chain(lone.db)
    assert report.ok, f"a test left the chain broken: {report.to_json()}"


async def test_concurrent_jobs_share_group_commits_and_the_chain_verifies(node: Node) -> None:
    before = await audit_seq(node)
    batches = node.writer.batches
    seqs = await append_key_entries(node, 40, "group")
    assert sorted(seqs) == list(range(before + 1, before + 41))
    assert node.writer.batches - batches < 40  # some jobs committed together
    report = await verify_chain(node.db)
    assert report.ok and report.entries == before + 40
    entries = await node.audit.entries(after=before + 39, limit=1, case_ref=None, pid=None)
    assert report.to_json()["head"] == entries[0]["head"]


async def test_a_failing_job_leaves_no_entry_and_does_not_harm_the_others(node: Node) -> None:
    before = await audit_seq(node)

    async def failing(conn: Connection, appender: Appender) -> None:
        appender.append("key", action="doomed")
        raise RuntimeError("the job fails after appending")

    async def fine(conn: Connection, appender: Appender) -> int:
        return appender.append("key", action="kept").seq

    results = await asyncio.gather(
        node.writer.run(fine),
        node.writer.run(failing),
        node.writer.run(fine),
        return_exceptions=True,
    )
    assert isinstance(results[1], RuntimeError)
    assert sorted(results[0::2]) == [before + 1, before + 2]
    actions = [e["action"] for e in await audit_entries(node, after=before)]
    assert actions == ["kept", "kept"]
    assert (await verify_chain(node.db)).ok


async def test_a_lone_failing_job_rolls_back_its_rows_and_the_writer_goes_on(node: Node) -> None:
    """A job alone in its commit runs without a savepoint: its failure rolls the
    whole transaction back (its deferred row too) and the next commit is whole."""
    before = await audit_seq(node)

    async def failing(conn: Connection, appender: Appender) -> None:
        appender.append("key", action="doomed")
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS lone_probe (n int) ON COMMIT DROP")
        await conn.execute("INSERT INTO lone_probe VALUES (1)")
        await conn.execute("SELECT 1/0")  # the database refuses: the transaction is aborted

    with pytest.raises(StoreError):
        await node.writer.run(failing)
    assert await audit_seq(node) == before

    async def fine(conn: Connection, appender: Appender) -> int:
        return appender.append("key", action="after").seq

    assert await node.writer.run(fine) == before + 1
    actions = [e["action"] for e in await audit_entries(node, after=before)]
    assert actions == ["after"]


async def test_an_edited_entry_is_named(node: Node) -> None:
    target = await audit_seq(node) - 1
    async with node.db.connection() as conn:
        original = bytes(await conn.fetchval("SELECT entry FROM audit_log WHERE seq = $1", target))
        edited = cj_loads(original)
        edited["action"] = "edited"
        try:
            await conn.execute(
                "UPDATE audit_log SET entry = $1 WHERE seq = $2", cj_dumps(edited), target
            )
            report = await verify_chain(node.db)
        finally:
            await conn.execute("UPDATE audit_log SET entry = $1 WHERE seq = $2", original, target)
    assert not report.ok
    assert report.bad_seq == target
    assert report.entries == target - 1
    assert "does not match" in report.problem
    assert report.to_json()["bad_seq"] == target


async def test_an_entry_rechained_consistently_is_caught_at_the_next_entry(node: Node) -> None:
    """Editing an entry and its stored head together still breaks the next link."""
    target = await audit_seq(node) - 1
    async with node.db.connection() as conn:
        rows = await conn.fetch(
            "SELECT seq, entry, head FROM audit_log WHERE seq IN ($1, $2) ORDER BY seq",
            target - 1,
            target,
        )
        previous_head = bytes(rows[0]["head"])
        original_entry, original_head = bytes(rows[1]["entry"]), bytes(rows[1]["head"])
        edited = cj_loads(original_entry)
        edited["action"] = "edited"
        new_entry = cj_dumps(edited)
        new_head = auditchain.next_head(previous_head, new_entry)
        try:
            await conn.execute(
                "UPDATE audit_log SET entry = $1, head = $2 WHERE seq = $3",
                new_entry,
                new_head,
                target,
            )
            report = await verify_chain(node.db)
        finally:
            await conn.execute(
                "UPDATE audit_log SET entry = $1, head = $2 WHERE seq = $3",
                original_entry,
                original_head,
                target,
            )
    assert not report.ok
    assert report.bad_seq == target + 1


async def test_a_deleted_entry_is_named_as_missing(node: Node) -> None:
    target = await audit_seq(node) - 1
    async with node.db.connection() as conn:
        row = await conn.fetchrow("SELECT * FROM audit_log WHERE seq = $1", target)
        await conn.execute("DELETE FROM audit_log WHERE seq = $1", target)
        try:
            report = await verify_chain(node.db)
        finally:
            columns = list(row.keys())
            await conn.execute(
                f"INSERT INTO audit_log ({', '.join(columns)})"
                f" VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})",
                *row.values(),
            )
    assert not report.ok
    assert (report.bad_seq, report.problem) == (target, "entry is missing")


async def test_an_entry_that_is_not_canonical_json_is_named(node: Node) -> None:
    target = await audit_seq(node)
    async with node.db.connection() as conn:
        original = bytes(await conn.fetchval("SELECT entry FROM audit_log WHERE seq = $1", target))
        try:
            await conn.execute(
                "UPDATE audit_log SET entry = $1 WHERE seq = $2", original + b" ", target
            )
            report = await verify_chain(node.db)
        finally:
            await conn.execute("UPDATE audit_log SET entry = $1 WHERE seq = $2", original, target)
    assert (report.ok, report.bad_seq) == (False, target)
    assert report.problem == "entry is not canonical JSON"


async def test_verification_pages_through_a_long_chain(node: Node) -> None:
    await append_key_entries(node, 12, "paging")
    whole = await verify_chain(node.db)
    paged = await verify_chain(node.db, page_size=5)
    assert whole.ok and paged.ok
    assert (paged.entries, paged.head) == (whole.entries, whole.head)
