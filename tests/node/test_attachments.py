"""Attachments between in-process nodes (docs/protocol.md section 8) on a real
PostgreSQL: uploaded before the packet, checked by the receiver (8a), bound to
the packet, read with a consultation entry, refused when tampered, erased
with the packet."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from handover.node.runtime import Node
from handover.node.shredding import rotate_storage
from handover.node.transport import Outcome
from handover.protocol.attachments import encrypt_bytes, make_ticket, new_aid, stream_length
from handover.store import attachments as att_store
from handover.workflow.errors import ErrorCode, RequestRefused
from inproc import (
    CASEWORKER,
    EXIT,
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    WHY,
    audit_entries,
    deliver,
    release_notice,
    seal_from,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def erase_due(node: Node, pid: str) -> None:
    """ERASE once the packet's review is due (issue 16: earlier needs two admins)."""
    async with node.db.connection() as conn:
        for table in ("outbox", "received"):
            await conn.execute(f"UPDATE {table} SET review_at = 1 WHERE pid = $1", pid)
    await node.reviews.decide(CASEWORKER, pid, outcome="ERASE", justification=WHY)


async def pieces(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def upload(node: Node, data: bytes, name: str = "licence.pdf") -> str:
    item = await node.attachments.store_local(pieces(data), name=name, media_type="application/pdf")
    assert item.size == len(data)
    return item.aid


async def submit(node: Node, aids: list[str]) -> str:
    (packet,) = await node.sender.submit(
        CASEWORKER,
        to=[PROBATION],
        schema_id=RELEASE_NOTICE,
        body=release_notice(),
        justification=WHY,
        attachments=aids,
    )
    pid: str = packet["pid"]
    return pid


async def read_all(node: Node, pid: str, aid: str, *, sent: bool = False) -> bytes:
    download = await node.attachment_access.download(CASEWORKER, pid, aid, WHY, sent=sent)
    return b"".join([c async for c in download.chunks])


async def test_attachments_travel_with_the_packet_and_are_read_with_a_consultation(
    prison: Node, probation: Node
) -> None:
    big = os.urandom(3 * 1024 * 1024 + 12_345)  # several pieces and PATCH-sized reads
    small = b"conditions: report weekly\n"
    aids = [await upload(prison, big, "assessment.pdf"), await upload(prison, small, "c.txt")]
    pid = await submit(prison, aids)
    (status,) = await deliver(prison, pid)
    assert [d["status"] for d in status["deliveries"]] == ["delivered"], status
    listed = await probation.attachment_access.listing(pid, sent=False)
    assert [(a["aid"], a["name"], a["size"]) for a in listed] == [
        (aids[0], "assessment.pdf", len(big)),
        (aids[1], "c.txt", len(small)),
    ]
    assert (
        hashlib.sha256(await read_all(probation, pid, aids[0])).digest()
        == hashlib.sha256(big).digest()
    )
    assert await read_all(probation, pid, aids[1]) == small
    assert await read_all(prison, pid, aids[1], sent=True) == small
    consulted = [e for e in await audit_entries(probation, pid=pid) if e["op"] == "consultation"]
    assert [e["aid"] for e in consulted] == aids
    assert all(e["justification"] == WHY and e["operator"] == CASEWORKER.name for e in consulted)
    with pytest.raises(RequestRefused) as refused:
        await probation.attachment_access.download(CASEWORKER, pid, aids[0], "", sent=False)
    assert refused.value.code is ErrorCode.JUSTIFICATION_REQUIRED


async def ticket_for(sender: Node, recipient: Node, aid: str, alen: int, ah: bytes) -> str:
    ident = sender.directory.keys.identity()
    now = sender.clock()
    return make_ticket(
        ident.node, ident.kid, ident.key, to=recipient.config.node, aid=aid, alen=alen, ah=ah,
        iat=now, exp=now + 60 * 60 * 1000,
    )  # fmt: skip


async def rows(node: Node, origin: str, aid: str) -> Any:
    async with node.db.connection() as conn:
        return await att_store.get(conn, origin, aid)


async def test_missing_upload_is_409_then_accepted_after_the_upload(
    prison: Node, probation: Node
) -> None:
    aid = new_aid()
    item, stream = encrypt_bytes(aid, os.urandom(32), b"x" * 70_000, "a.txt", "text/plain")
    packet = seal_from(prison, probation, RELEASE_NOTICE, release_notice(), attachments=[item])
    (answer,) = await probation.receive_many([packet.wire])
    assert answer.outcome is Outcome.ATTACHMENT_INCOMPLETE and answer.detail == aid
    ticket = await ticket_for(prison, probation, aid, item.alen, item.ah)
    # Half of it: still incomplete.
    half = await probation.upload_patch(aid, ticket, 0, pieces(stream[:40_000]))
    assert (half.status, half.offset) == ("ok", 40_000)
    (answer,) = await probation.receive_many([packet.wire])
    assert answer.outcome is Outcome.ATTACHMENT_INCOMPLETE
    # A PATCH at the wrong offset is told the stored one and stores nothing.
    wrong = await probation.upload_patch(aid, ticket, 0, pieces(stream[:10]))
    assert (wrong.status, wrong.offset) == ("offset", 40_000)
    head = await probation.upload_head(aid, ticket)
    assert (head.status, head.offset) == ("ok", 40_000)
    rest = await probation.upload_patch(aid, ticket, 40_000, pieces(stream[40_000:]))
    assert (rest.status, rest.offset) == ("ok", item.alen)
    (answer,) = await probation.receive_many([packet.wire])
    assert answer.outcome is Outcome.ACCEPTED
    row = await rows(probation, PRISON, aid)
    assert row.complete and row.pid == packet.pid


async def test_wrong_hash_is_discarded_and_tampered_stream_refused(
    prison: Node, probation: Node
) -> None:
    aid = new_aid()
    item, stream = encrypt_bytes(aid, os.urandom(32), b"y" * 1000, "a.txt", "text/plain")
    tampered = bytearray(stream)
    tampered[100] ^= 1
    ticket = await ticket_for(prison, probation, aid, item.alen, item.ah)
    answer = await probation.upload_patch(aid, ticket, 0, pieces(bytes(tampered)))
    assert answer.status == "hash"
    assert await rows(probation, PRISON, aid) is None  # discarded
    # The right bytes under the same ticket then complete.
    answer = await probation.upload_patch(aid, ticket, 0, pieces(stream))
    assert (answer.status, answer.offset) == ("ok", item.alen)


async def test_no_byte_is_stored_without_a_valid_ticket(prison: Node, probation: Node) -> None:
    aid = new_aid()
    item, stream = encrypt_bytes(aid, os.urandom(32), b"z" * 500, "a.txt", "text/plain")
    consumed = []

    async def watched() -> AsyncIterator[bytes]:
        consumed.append(True)
        yield stream

    good = await ticket_for(prison, probation, aid, item.alen, item.ah)
    ut, sig = good.split(".")
    bad_sig = ut + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
    other_aid = await ticket_for(prison, probation, new_aid(), item.alen, item.ah)
    to_other = await ticket_for(prison, prison, aid, item.alen, item.ah)
    for ticket in ("", "garbage", bad_sig, other_aid, to_other):
        answer = await probation.upload_patch(aid, ticket, 0, watched())
        assert answer.status == "unauthorized", ticket
    assert consumed == []  # the body was never read
    assert await rows(probation, PRISON, aid) is None
    # Over the node's limit (a file of max_attachment_bytes encrypts to
    # stream_length of it): 413, also before any byte.
    limit = stream_length(probation.attachments.max_bytes)
    huge = await ticket_for(prison, probation, aid, limit + 1, item.ah)
    assert (await probation.upload_patch(aid, huge, 0, watched())).status == "too_large"
    assert consumed == []
    # A second ticket with another hash for an existing upload: conflict.
    assert (await probation.upload_head(aid, good)).status == "ok"
    other = await ticket_for(prison, probation, aid, item.alen, bytes(64))
    assert (await probation.upload_head(aid, other)).status == "conflict"


async def test_quota_of_incomplete_uploads_holds(prison: Node, probation: Node) -> None:
    quota = probation.attachments.quota_bytes
    probation.attachments.quota_bytes = 10_000
    try:
        first, second = new_aid(), new_aid()
        t1 = await ticket_for(prison, probation, first, 8_000, bytes(64))
        t2 = await ticket_for(prison, probation, second, 8_000, bytes(64))
        assert (await probation.upload_head(first, t1)).status == "ok"
        assert (await probation.upload_head(second, t2)).status == "too_large"
        assert await rows(probation, PRISON, second) is None
    finally:
        probation.attachments.quota_bytes = quota
        async with probation.db.connection() as conn:
            await att_store.delete(conn, PRISON, first)


async def test_unclaimed_uploads_are_swept_after_exp(prison: Node, probation: Node) -> None:
    aid = new_aid()
    ident = prison.directory.keys.identity()
    now = prison.clock()
    ticket = make_ticket(
        ident.node, ident.kid, ident.key, to=PROBATION, aid=aid, alen=100, ah=bytes(64),
        iat=now, exp=now + 1000,
    )  # fmt: skip
    assert (await probation.upload_head(aid, ticket)).status == "ok"
    await probation.attachments.sweep()
    assert await rows(probation, PRISON, aid) is not None  # not yet exp + 5 min
    probation.clock.advance(1000 + 5 * 60 * 1000 + 1)  # type: ignore[attr-defined]
    await probation.attachments.sweep()
    assert await rows(probation, PRISON, aid) is None


async def test_restriction_and_erasure_apply_to_attachments_and_export_lists_them(
    prison: Node, probation: Node
) -> None:
    data = b"psychological report\n" * 100
    aid = await upload(prison, data, "report.txt")
    pid = await submit(prison, [aid])
    await deliver(prison, pid)
    assert await read_all(probation, pid, aid) == data
    notice_ref = (await probation.inbox.read(CASEWORKER, pid, WHY))["case_ref"]
    export = await probation.subject_access.export(CASEWORKER, notice_ref, WHY)
    (held,) = [p for p in export["received"] if p["pid"] == pid]
    (listed,) = held["attachments"]
    assert (listed["name"], listed["type"], listed["size"]) == (
        "report.txt",
        "application/pdf",
        len(data),
    )
    # Staff by role in what goes to the data subject (casey is no operator of the node).
    assert [s["operator"] for s in listed["seen_by"]] == ["a member of staff"]
    assert "key" not in listed
    # Restricted: no download.
    await probation.reviews.decide(
        CASEWORKER, pid, outcome="RESTRICT", justification=WHY, reason="contested"
    )
    with pytest.raises(RequestRefused) as info:
        await probation.attachment_access.download(CASEWORKER, pid, aid, WHY, sent=False)
    assert info.value.code is ErrorCode.RESTRICTED
    # Erased: the stream and its chunks are gone.
    await erase_due(probation, pid)
    assert await rows(probation, PRISON, aid) is None
    async with probation.db.connection() as conn:
        left = await conn.fetchval("SELECT count(*) FROM attachment_chunks WHERE aid = $1", aid)
    assert left == 0
    with pytest.raises(RequestRefused) as info:
        await probation.attachment_access.download(CASEWORKER, pid, aid, WHY, sent=False)
    assert info.value.code is ErrorCode.ERASED
    # The sender's copy goes with the sent packet's erasure (its delivery is finished).
    await erase_due(prison, pid)
    assert await rows(prison, "", aid) is None


async def test_submission_refuses_unknown_or_used_attachments(prison: Node) -> None:
    for aids, code in (
        ([new_aid()], ErrorCode.NOT_FOUND),
        (["short"], ErrorCode.BAD_REQUEST),
        ([new_aid()] * 2, ErrorCode.BAD_REQUEST),
        ([new_aid() for _ in range(17)], ErrorCode.BAD_REQUEST),
    ):
        with pytest.raises(RequestRefused) as info:
            await submit(prison, aids)
        assert info.value.code is code
    aid = await upload(prison, b"once")
    await submit(prison, [aid])
    with pytest.raises(RequestRefused) as info:
        await submit(prison, [aid])  # already claimed by the first packet
    assert info.value.code is ErrorCode.NOT_FOUND


async def test_a_body_longer_than_the_rest_is_refused(prison: Node, probation: Node) -> None:
    aid = new_aid()
    item, stream = encrypt_bytes(aid, os.urandom(32), b"w" * 300, "a.txt", "text/plain")
    ticket = await ticket_for(prison, probation, aid, item.alen, item.ah)
    answer = await probation.upload_patch(aid, ticket, 0, pieces(stream + b"extra"))
    assert answer.status == "too_large"
    head = await probation.upload_head(aid, ticket)
    assert (head.status, head.offset) == ("ok", 0)  # nothing of it was stored
    answer = await probation.upload_patch(aid, ticket, 0, pieces(stream))
    assert (answer.status, answer.offset) == ("ok", item.alen)


async def test_a_scan_command_gates_downloads_and_quarantines(
    prison: Node, probation: Node
) -> None:
    # A stand-in for `clamdscan --fdpass -`: reads the plaintext on stdin, exit 1 on a hit.
    command = ("sh", "-c", "if grep -q EICAR-STANDIN; then exit 1; fi; exit 0")
    probation.attachments.scan_command = command
    probation.scanner.command = command
    try:
        clean_aid = await upload(prison, b"a clean progress report\n" * 1000, "report.txt")
        bad_aid = await upload(prison, b"junk " * 50_000 + b"EICAR-STANDIN", "bad.txt")
        pid = await submit(prison, [clean_aid, bad_aid])
        await deliver(prison, pid)
        listed = await probation.attachment_access.listing(pid, sent=False)
        assert [a["scan"] for a in listed] == ["pending", "pending"]
        with pytest.raises(RequestRefused) as info:
            await probation.attachment_access.download(CASEWORKER, pid, clean_aid, WHY, sent=False)
        assert info.value.code is ErrorCode.SCAN_PENDING
        assert await probation.scanner.scan_pending() >= 2  # (and any earlier test's)
        listed = await probation.attachment_access.listing(pid, sent=False)
        assert {a["aid"]: a["scan"] for a in listed} == {
            clean_aid: "clean",
            bad_aid: "quarantined",
        }
        assert (await read_all(probation, pid, clean_aid)).startswith(b"a clean progress")
        with pytest.raises(RequestRefused) as info:
            await probation.attachment_access.download(CASEWORKER, pid, bad_aid, WHY, sent=False)
        assert info.value.code is ErrorCode.QUARANTINED
        # The sender's own copy is not scanned (it came from its own user).
        assert (await read_all(prison, pid, bad_aid, sent=True)).endswith(b"EICAR-STANDIN")
    finally:
        probation.attachments.scan_command = ()
        probation.scanner.command = ()


async def test_a_missing_scanner_leaves_attachments_pending(prison: Node, probation: Node) -> None:
    command = ("/nonexistent/scanner", "-")
    probation.attachments.scan_command = command
    probation.scanner.command = command
    try:
        aid = await upload(prison, b"report", "r.txt")
        pid = await submit(prison, [aid])
        await deliver(prison, pid)
        assert await probation.scanner.scan_pending() == 0
        (listed,) = await probation.attachment_access.listing(pid, sent=False)
        assert listed["scan"] == "pending"
    finally:
        probation.attachments.scan_command = ()
        probation.scanner.command = ()
        async with probation.db.connection() as conn:  # leave no pending rows behind
            await conn.execute("UPDATE attachment_streams SET scan = NULL WHERE scan = 'pending'")


async def test_an_upload_claimed_by_one_packet_does_not_complete_another(
    prison: Node, probation: Node
) -> None:
    aid = new_aid()
    item, stream = encrypt_bytes(aid, os.urandom(32), b"v" * 500, "a.txt", "text/plain")
    ticket = await ticket_for(prison, probation, aid, item.alen, item.ah)
    assert (await probation.upload_patch(aid, ticket, 0, pieces(stream))).status == "ok"
    first = seal_from(prison, probation, RELEASE_NOTICE, release_notice(), attachments=[item])
    second = seal_from(prison, probation, RELEASE_NOTICE, release_notice(), attachments=[item])
    (answer,) = await probation.receive_many([first.wire])
    assert answer.outcome is Outcome.ACCEPTED
    (answer,) = await probation.receive_many([second.wire])
    assert answer.outcome is Outcome.ATTACHMENT_INCOMPLETE and answer.detail == aid
    (answer,) = await probation.receive_many([first.wire])  # an identical replay: its receipt
    assert answer.outcome is Outcome.ACCEPTED


async def test_a_submission_with_several_views_carries_the_attachments_in_each(
    prison: Node, probation: Node, exit_org: Node
) -> None:
    data = b"licence conditions\n" * 5000
    aid = await upload(prison, data, "licence.txt")
    packets = await prison.sender.submit(
        CASEWORKER,
        to=[PROBATION, EXIT],
        schema_id=RELEASE_NOTICE,
        body=release_notice(),
        justification=WHY,
        attachments=[aid],
        minimise=True,
    )
    pids = [p["pid"] for p in packets]
    assert len(pids) == 2  # the policy gives probation and the exit organisation other views
    statuses = await deliver(prison, *pids)
    assert {d["status"] for s in statuses for d in s["deliveries"]} == {"delivered"}
    for packet in packets:
        (node,) = packet["to"]
        receiver = probation if node == PROBATION else exit_org
        assert await read_all(receiver, packet["pid"], aid) == data
        assert await read_all(prison, packet["pid"], aid, sent=True) == data
    # The sender's stream stays while any sent packet carries it.
    await erase_due(prison, pids[0])
    assert await rows(prison, "", aid) is not None
    await erase_due(prison, pids[1])
    assert await rows(prison, "", aid) is None


async def test_rectification_replaces_an_attachment_on_both_sides(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    old_aid = await upload(prison, b"licence v1: report daily\n", "licence.txt")
    target = await submit_body(prison, notice, [old_aid])
    await deliver(prison, target)
    assert await read_all(probation, target, old_aid) == b"licence v1: report daily\n"
    new_aid_ = await upload(prison, b"licence v2: report weekly\n", "licence.txt")
    result = await prison.rectification.rectify(
        CASEWORKER,
        target,
        action="RECTIFY",
        reason="INACCURATE",
        justification=WHY,
        corrected_body={**notice, "prison_id": "XYZ"},
        attachments=[new_aid_],
    )
    (packet,) = result["packets"]
    await deliver(prison, packet["pid"])
    # The recipient's copy of the target now carries the new file only.
    listed = await probation.attachment_access.listing(target, sent=False)
    assert [a["aid"] for a in listed] == [new_aid_]
    assert await read_all(probation, target, new_aid_) == b"licence v2: report weekly\n"
    assert await rows(probation, PRISON, old_aid) is None
    applied = [e for e in await audit_entries(probation, pid=target) if e["op"] == "alteration"]
    assert applied[-1]["attachments"] == [new_aid_]
    # The sender's own copy too; the old stream is gone.
    listed = await prison.attachment_access.listing(target, sent=True)
    assert [a["aid"] for a in listed] == [new_aid_]
    assert await rows(prison, "", old_aid) is None


async def submit_body(node: Node, body: dict[str, Any], aids: list[str]) -> str:
    (packet,) = await node.sender.submit(
        CASEWORKER,
        to=[PROBATION],
        schema_id=RELEASE_NOTICE,
        body=body,
        justification=WHY,
        attachments=aids,
    )
    pid: str = packet["pid"]
    return pid


async def test_concurrent_uploads_from_one_peer_are_capped(prison: Node, probation: Node) -> None:
    """At most two PATCHes per sender at once: the third is refused before its body."""
    release = asyncio.Event()
    started: list[str] = []

    async def held(stream: bytes) -> AsyncIterator[bytes]:
        started.append("x")
        await release.wait()
        yield stream

    uploads = []
    for _ in range(3):
        aid = new_aid()
        item, stream = encrypt_bytes(aid, os.urandom(32), b"u" * 100, "a.txt", "text/plain")
        ticket = await ticket_for(prison, probation, aid, item.alen, item.ah)
        uploads.append((aid, ticket, stream))
    first = [
        asyncio.create_task(probation.upload_patch(aid, ticket, 0, held(stream)))
        for aid, ticket, stream in uploads[:2]
    ]
    while len(started) < 2:
        await asyncio.sleep(0.01)
    aid, ticket, stream = uploads[2]
    third = await probation.upload_patch(aid, ticket, 0, held(stream))
    assert (third.status, third.detail) == ("unavailable", "too_many_requests")
    assert len(started) == 2  # the third body was never read
    release.set()
    assert [a.status for a in await asyncio.gather(*first)] == ["ok", "ok"]
    assert (await probation.upload_patch(aid, ticket, 0, pieces(stream))).status == "ok"


async def test_attachments_still_open_after_the_storage_key_is_rotated(
    prison: Node, probation: Node
) -> None:
    """Issue 16: `keys rotate-storage` re-seals the attachment items (sealed with the
    storage key) on both sides, so nothing held becomes unreadable."""
    data = b"licence conditions, page 1\n"
    aid = await upload(prison, data, "licence.txt")
    pid = await submit(prison, [aid])
    await deliver(prison, pid)
    for node in (prison, probation):
        counts = await rotate_storage(
            db=node.db,
            writer=node.writer,
            vault=node.vault,
            keys_dir=node.config.keys_dir,
            org=node.config.node,
        )
        assert counts["attachment_items"] >= 1
    assert await read_all(probation, pid, aid) == data
    assert await read_all(prison, pid, aid, sent=True) == data


async def test_max_attachment_bytes_bounds_the_file_not_its_encrypted_stream(
    prison: Node,
) -> None:
    limit = prison.attachments.max_bytes
    prison.attachments.max_bytes = 70_000  # more than one 64 KiB chunk
    try:
        item = await prison.attachments.store_local(
            pieces(bytes(70_000)), name="exact.pdf", media_type="application/pdf"
        )
        assert item.size == 70_000 and item.alen == stream_length(70_000) > 70_000
        with pytest.raises(RequestRefused) as refused:
            await prison.attachments.store_local(
                pieces(bytes(70_001)), name="over.pdf", media_type="application/pdf"
            )
        assert refused.value.code == ErrorCode.TOO_LARGE
    finally:
        prison.attachments.max_bytes = limit
