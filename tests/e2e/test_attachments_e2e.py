"""Attachments between two real node processes over HTTP (docs/protocol.md section 8).

- A large attachment goes from the prison's local API to probation's inbox and
  back out, streamed at every step; each node's peak RSS (VmHWM of the
  `handover serve` process) stays under 250 MB. The size here is
  HANDOVER_ATTACHMENT_TEST_MB (default 96 MiB, to keep `make test` short on a
  loaded machine); `make bench ARGS=--attachments` runs 1 GiB.
- The receiver is SIGKILLed in the middle of an upload; after its restart the
  sender resumes from the receiver's stored offset: the bytes sent again are
  counted from the sender's metrics and are fewer than one PATCH (16 MiB).
- An upload without a valid ticket is refused before any byte is stored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from federation import RELEASE_NOTICE, Federation, NodeProcess, example
from handover.cli.harness_stream import MIB, download_sha256, peak_rss, upload_random
from handover.node import keystore
from handover.protocol.attachments import encrypt_bytes, make_ticket, new_aid
from handover.protocol.keyset import accept_keyset
from handover.protocol.packet import MEDIA_TYPE, Recipient, seal
from handover.protocol.timeutil import now_ms
from handover.workflow.schemas import default_registry

PRISON, PROBATION = "prison.example", "probation.example"
WHY = "release planning for the shared case"
SIZE = int(os.environ.get("HANDOVER_ATTACHMENT_TEST_MB", "96")) * MIB
RSS_LIMIT = 250 * 1000 * 1000
FAST_SENDER = {"retry_base_s": 0.2, "retry_max_s": 2.0, "delivery_timeout_s": 20.0}


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    base = Path(tempfile.mkdtemp(prefix="handover-attach-"))
    federation = Federation(base, [(PRISON, "prison"), (PROBATION, "probation")])
    federation[PRISON].configure(**FAST_SENDER)
    try:
        federation.start()
        yield federation
    finally:
        federation.stop()
        shutil.rmtree(base, ignore_errors=True)  # two databases of a few hundred MB


@pytest.fixture(autouse=True)
def running(fed: Federation) -> Iterator[None]:
    for node in fed.nodes.values():
        if node.proc is None or node.proc.poll() is not None:
            node.proc = None
            node.start()
    yield


def submit(node: NodeProcess, aids: list[str]) -> str:
    status, answer = node.api(
        "POST",
        "/api/v1/packets",
        {
            "to": [PROBATION],
            "schema": RELEASE_NOTICE,
            "body": example(RELEASE_NOTICE),
            "justification": WHY,
            "attachments": aids,
        },
    )
    assert status == 202, (status, answer)
    pid: str = answer["packets"][0]["pid"]
    return pid


def sent_bytes(node: NodeProcess) -> float:
    status, text = node.request("GET", "/metrics")
    assert status == 200
    found = re.search(rb'handover_attachment_bytes_total\{direction="sent"\} ([0-9.e+]+)', text)
    return float(found.group(1)) if found else 0.0


def test_a_large_attachment_streams_between_two_nodes_under_the_memory_bound(
    fed: Federation,
) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    started = time.monotonic()
    status, answer, sha = upload_random(prison.url, prison.tokens["caseworker"], SIZE, "big.pdf")
    assert status == 201, answer
    assert answer["size"] == SIZE and answer["type"] == "application/pdf"
    pid = submit(prison, [answer["aid"]])
    packet = prison.wait_delivered(pid, timeout=600)
    assert [d["status"] for d in packet["deliveries"]] == ["delivered"], packet
    status, inbox = probation.api("GET", f"/api/v1/inbox/{pid}?justification={quote(WHY)}")
    assert status == 200 and inbox["attachments"] == [
        {"aid": answer["aid"], "name": "big.pdf", "type": "application/pdf", "size": SIZE}
    ]
    path = f"/api/v1/inbox/{pid}/attachments/{answer['aid']}?justification={quote(WHY)}"
    got, got_sha, total, headers = download_sha256(
        probation.url, probation.tokens["caseworker"], path
    )
    assert (got, total, got_sha) == (200, SIZE, sha)
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"].startswith("attachment;")
    elapsed = time.monotonic() - started
    peaks = {n.node: peak_rss(n.proc.pid) for n in (prison, probation) if n.proc is not None}
    print(f"\n{SIZE / MIB:.0f} MiB end to end in {elapsed:.1f} s; peak RSS {peaks}")
    assert all(0 < peak < RSS_LIMIT for peak in peaks.values()), peaks
    # Without a justification: refused, and nothing is streamed.
    path = f"/api/v1/inbox/{pid}/attachments/{answer['aid']}"
    status, _sha, total, _headers = download_sha256(
        probation.url, probation.tokens["caseworker"], path
    )
    assert (status, total < 1000) == (400, True)


def test_resume_after_the_receiver_is_killed_mid_upload(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    size = 40 * MIB  # three PATCH requests of up to 16 MiB
    status, answer, sha = upload_random(prison.url, prison.tokens["caseworker"], size, "r.pdf")
    assert status == 201, answer
    aid = answer["aid"]
    alen = prison.sql("SELECT alen FROM attachment_streams WHERE aid = $1", aid)[0]["alen"]
    before = sent_bytes(prison)
    pid = submit(prison, [aid])
    deadline = time.monotonic() + 300
    held = 0
    while time.monotonic() < deadline:
        rows = probation.sql("SELECT received FROM attachment_streams WHERE aid = $1", aid)
        held = rows[0]["received"] if rows else 0
        if 0 < held < alen - 16 * MIB:
            break
        time.sleep(0.01)
    assert 0 < held < alen, held
    probation.kill()  # SIGKILL: mid-upload
    stored = probation.sql("SELECT received FROM attachment_streams WHERE aid = $1", aid)
    at_kill = stored[0]["received"]
    assert 0 < at_kill < alen
    time.sleep(1.0)
    probation.start()
    packet = prison.wait_delivered(pid, timeout=600)
    assert [d["status"] for d in packet["deliveries"]] == ["delivered"], packet
    resent = sent_bytes(prison) - before - alen
    print(f"\nkilled at {at_kill} of {alen} bytes; sent again: {resent:.0f} bytes")
    assert 0 <= resent < 16 * MIB  # at most the one PATCH that was cut off, never from zero
    path = f"/api/v1/inbox/{pid}/attachments/{aid}?justification={quote(WHY)}"
    got, got_sha, total, _ = download_sha256(probation.url, probation.tokens["caseworker"], path)
    assert (got, total, got_sha) == (200, size, sha)


def test_an_upload_without_a_valid_ticket_stores_nothing(fed: Federation) -> None:
    probation = fed[PROBATION]
    aid = "A" * 22
    for ticket in (None, "not-a-ticket", "e30.AAAA"):
        headers = {
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
        }
        if ticket is not None:
            headers["Handover-Upload"] = ticket
        status, body = probation.request(
            "PATCH", f"/federation/v1/attachments/{aid}", b"x" * 100_000, headers
        )
        assert status == 401, (status, body)
        status, _ = probation.request("HEAD", f"/federation/v1/attachments/{aid}", None, headers)
        assert status == 401
    assert probation.sql("SELECT count(*) AS n FROM attachment_streams WHERE aid = $1", aid) == [
        {"n": 0}
    ]
    assert probation.sql("SELECT count(*) AS n FROM attachment_chunks WHERE aid = $1", aid) == [
        {"n": 0}
    ]


def test_a_packet_before_its_upload_is_409_then_accepted_over_http(fed: Federation) -> None:
    """The wire answers of section 8, spoken by hand: 409 with the aid, HEAD, PATCH
    (with a wrong offset first), then the same packet is accepted."""
    prison, probation = fed[PRISON], fed[PROBATION]
    keys = keystore.load_keys(prison.dir / "keys")
    status, wire = probation.request("GET", "/.well-known/handover/keyset")
    assert status == 200
    now = now_ms()
    keyset = accept_keyset(wire, node=PROBATION, fingerprint=probation.fingerprint, now=now)
    aid = new_aid()
    item, stream = encrypt_bytes(
        aid, os.urandom(32), os.urandom(200_000), "a.pdf", "application/pdf"
    )
    body = example(RELEASE_NOTICE)
    body["case_ref"] = "HC-01JC3862PZ6820J8YY0J464ATT"
    packet = seal(
        keys.identity(), [Recipient.from_keyset(keyset, now)], RELEASE_NOTICE, body,
        now=now, validator=default_registry(), attachments=[item],
    )  # fmt: skip
    post = {"Content-Type": MEDIA_TYPE}
    status, answer = probation.request("POST", "/federation/v1/packets", packet.wire, post)
    assert (status, json.loads(answer)) == (409, {"error": "attachment_incomplete", "aid": aid})
    identity = keys.identity()
    ticket = make_ticket(
        identity.node, identity.kid, identity.key, to=PROBATION, aid=aid, alen=item.alen,
        ah=item.ah, iat=now, exp=packet.exp,
    )  # fmt: skip
    path = f"/federation/v1/attachments/{aid}"
    upload = {"Handover-Upload": ticket, "Content-Type": "application/offset+octet-stream"}
    status, _ = probation.request("HEAD", path, None, {"Handover-Upload": ticket})
    assert status == 200
    first = {**upload, "Upload-Offset": "0"}
    status, _ = probation.request("PATCH", path, stream[:100_000], first)
    assert status == 204
    wrong = {**upload, "Upload-Offset": "0"}
    status, answer = probation.request("PATCH", path, stream[:10], wrong)
    assert (status, json.loads(answer)["error"]) == (409, "offset_mismatch")
    rest = {**upload, "Upload-Offset": "100000"}
    status, _ = probation.request("PATCH", path, stream[100_000:], rest)
    assert status == 204
    status, answer = probation.request("POST", "/federation/v1/packets", packet.wire, post)
    assert status == 200, answer
    assert json.loads(answer)["hp1r"]
