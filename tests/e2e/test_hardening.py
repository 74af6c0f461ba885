"""Regression tests for the holes found by attacking real nodes (issue: hardening).

Each test attacks a real `handover serve` process over loopback and checks the
bound the node now keeps: time, memory, log rows. Attackers bind their own
loopback source addresses (127.0.0.2 ...), as different hosts would be, so the
per-address limits apply to them and not to the partner node on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import random
import socket
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from federation import Federation, NodeProcess, example, run_cli

PRISON, PROBATION = "prison.example", "probation.example"
MARKER = "ZZ-JOHN-SMITH-1990-01-01"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(
        tmp_path_factory.mktemp("hardening"), [(PRISON, "prison"), (PROBATION, "probation")]
    )
    federation.start()
    yield federation
    federation.stop()


def connect(node: NodeProcess, source: str) -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", node.port), timeout=30, source_address=(source, 0)
    )
    return sock


def raw_post(
    node: NodeProcess,
    path: str,
    body: bytes,
    source: str,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 POST from `source`, read to the end (the server closes)."""
    sock = connect(node, source)
    head = {
        "Host": "node",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **(headers or {}),
    }
    request = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
    sock.sendall(request.encode() + b"\r\n" + body)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head_raw, _, payload = data.partition(b"\r\n\r\n")
    lines = head_raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, hdrs, payload


def audit_count(node: NodeProcess) -> int:
    (row,) = node.sql("SELECT count(*) AS n FROM audit_log")
    return int(row["n"])


def security_rows(node: NodeProcess) -> int:
    (row,) = node.sql("SELECT count(*) AS n FROM security_events")
    return int(row["n"])


def test_slow_bodies_do_not_starve_the_node(fed: Federation) -> None:
    """High 1: connections declaring 16 MiB and sending a byte a second neither hold
    the budget nor stop local submissions, and are closed by the node."""
    probation = fed[PROBATION]
    slow = []
    for source in ("127.0.0.2", "127.0.0.3"):
        sock = connect(probation, source)
        sock.sendall(
            b"POST /federation/v1/packets HTTP/1.1\r\nHost: node\r\n"
            b"Content-Type: application/vnd.handover.packet+json\r\n"
            b"Content-Length: 16777216\r\n\r\n{"
        )
        slow.append(sock)
    started = time.monotonic()
    # A caseworker's submission and a partner's delivery go through meanwhile.
    t0 = time.monotonic()
    pid = probation.send([PRISON], "handover/condition-update/1")
    assert time.monotonic() - t0 < 1.0
    assert probation.wait_delivered(pid)["deliveries"][0]["status"] == "delivered"
    pid = fed[PRISON].send([PROBATION])
    assert fed[PRISON].wait_delivered(pid)["deliveries"][0]["status"] == "delivered"
    assert probation.get("/readyz")[1]["checks"]["budget"] is True

    # The slow clients fall behind the minimum rate and are cut off.
    for sock in slow:
        sock.settimeout(1.0)
        answer = b""
        while time.monotonic() - started < 30:
            try:
                sock.sendall(b" ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        sock.close()
        assert time.monotonic() - started < 30
        if answer:
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]


def test_a_declared_huge_body_is_refused_before_it_is_read(fed: Federation) -> None:
    """High 1: one caseworker connection declaring 1 GiB gets 413 at once."""
    probation = fed[PROBATION]
    sock = connect(probation, "127.0.0.1")
    sock.sendall(
        b"POST /api/v1/packets HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {probation.tokens['caseworker']}\r\n".encode()
        + b"Content-Length: 1073741824\r\n\r\n{"
    )
    sock.settimeout(10)
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "too_large"


def test_a_flood_of_refusals_costs_bounded_rows_and_is_rate_limited(fed: Federation) -> None:
    """High 2: junk batches from one address write no audit rows, a bounded number
    of security-log rows, and the address is then turned away before reading."""
    probation = fed[PROBATION]
    audit_before = audit_count(probation)
    statuses = []
    junk = json.dumps({"packets": [1] * 256}).encode()
    for _ in range(20):
        status, _h, _b = raw_post(probation, "/federation/v1/packets:batch", junk, "127.0.0.4")
        statuses.append(status)
    assert statuses[0] == 200  # each item answered 400 invalid_packet inside
    assert 429 in statuses
    assert audit_count(probation) == audit_before
    deadline = time.monotonic() + 15
    while security_rows(probation) == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    rows = probation.sql(
        "SELECT source, reason, count FROM security_events WHERE source = '127.0.0.4'"
    )
    # One row per (hour, source, reason), whatever the number of refusals.
    assert {r["reason"] for r in rows} <= {"malformed_wire", "rate_limited"}
    assert len(rows) <= 2
    assert sum(r["count"] for r in rows) >= 256
    # A partner on another address is not affected.
    pid = fed[PRISON].send([PROBATION])
    assert fed[PRISON].wait_delivered(pid)["deliveries"][0]["status"] == "delivered"


def test_parser_text_never_reaches_audit_entries_or_logs(fed: Federation) -> None:
    """Low 8: a duplicated key quoting personal data is refused by reason code only."""
    probation = fed[PROBATION]
    key = f"NOTE: {MARKER} " + "x" * 60
    wire = b'{"hp1":"a","' + key.encode() + b'":1,"' + key.encode() + b'":2}'
    status, _h, body = raw_post(
        probation,
        "/federation/v1/packets",
        wire,
        "127.0.0.5",
        {"Content-Type": "application/vnd.handover.packet+json"},
    )
    assert status == 400 and json.loads(body) == {"error": "invalid_packet"}
    time.sleep(6)  # the security log is flushed every few seconds
    assert not probation.sql(
        "SELECT seq FROM audit_log WHERE position($1::bytea in entry) > 0", MARKER.encode()
    )
    assert MARKER not in probation.log()


def test_deep_nesting_is_a_clear_refusal_not_a_server_error(fed: Federation) -> None:
    """Low 11: 100,000 nested brackets answer 400, on both federation routes."""
    probation = fed[PROBATION]
    deep = b'{"packets":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    status, _h, body = raw_post(probation, "/federation/v1/packets:batch", deep, "127.0.0.6")
    assert status == 400 and json.loads(body)["error"] == "invalid_batch"
    deep_packet = b'{"hp1":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, _h, body = raw_post(
        probation,
        "/federation/v1/packets",
        deep_packet,
        "127.0.0.6",
        {"Content-Type": "application/vnd.handover.packet+json"},
    )
    assert status == 400 and json.loads(body) == {"error": "invalid_packet"}


def test_log_digest_requests_are_rate_limited_per_address(fed: Federation) -> None:
    """Low 12: a client hammering the digests route is turned away (429)."""
    probation = fed[PROBATION]
    statuses = set()
    for _ in range(260):
        sock = connect(probation, "127.0.0.7")
        sock.sendall(
            b"GET /federation/v1/log/digests?after=0&limit=10 HTTP/1.1\r\n"
            b"Host: node\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        sock.close()
        statuses.add(int(data.split()[1]))
        if 429 in statuses:
            break
    assert statuses == {200, 429}
    # Another address (a partner witnessing the log) still gets its pages.
    assert probation.get("/federation/v1/log/digests?after=0&limit=10")[0] == 200


def test_request_ids_are_bounded_and_sanitised(fed: Federation) -> None:
    """Low 15: a long or strange X-Request-Id is replaced, never echoed or logged."""
    probation = fed[PROBATION]
    offered = "A" * 1_000  # aiohttp itself refuses header lines over 8 KiB
    status, _raw = probation.request("GET", "/healthz", headers={"X-Request-Id": offered})
    assert status == 200
    status, headers, _ = raw_post(
        probation, "/api/v1/packets", b"{}", "127.0.0.1", {"X-Request-Id": "bad id\u00e9"}
    )
    assert len(headers["x-request-id"]) == 16 and headers["x-request-id"] != "bad id"
    status, headers, _ = raw_post(
        probation, "/api/v1/packets", b"{}", "127.0.0.1", {"X-Request-Id": "case-sys.42"}
    )
    assert headers["x-request-id"] == "case-sys.42"
    assert offered not in probation.log()


def test_settings_file_is_owner_only(fed: Federation) -> None:
    """Low 10: handover.toml may hold a DSN password."""
    mode = stat.S_IMODE(os.stat(fed[PROBATION].dir / "handover.toml").st_mode)
    assert mode == 0o600


class _HugeKeyset(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        chunk = b" " * 65536
        try:
            for _ in range(64 * 16):  # 64 MiB, never announced
                self.wfile.write(chunk)
        except OSError:
            pass

    def log_message(self, *_args: Any) -> None:
        return None


def test_peer_answers_are_read_up_to_a_cap(fed: Federation, tmp_path: Path) -> None:
    """Low 9: a pinned URL answering 64 MiB is cut off, not read into memory."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HugeKeyset)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        started = time.monotonic()
        out = run_cli(
            "peers", "add", "--dir", str(fed[PRISON].dir), "--url", url,
            "--fingerprint=" + "A" * 43, "--kind", "exit",
            check=False,
        )  # fmt: skip
        assert out.returncode != 0
        assert "more than" in out.stderr
        assert time.monotonic() - started < 30
    finally:
        server.shutdown()


def test_an_acknowledgement_counts_only_from_the_party_itself(fed: Federation) -> None:
    """Medium 5: an agreement whose body claims the recipient acknowledged it is shown
    as acknowledged by its author only, until the recipient acknowledges itself."""
    prison, probation = fed[PRISON], fed[PROBATION]
    body = example("handover/responsibility-agreement/1")
    case = "HC-" + "".join(random.choice("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for _ in range(26))
    body["case_ref"] = case
    body["parties"] = [
        {**body["parties"][0], "node": PRISON, "kind": "prison"},
        {**body["parties"][1], "node": PROBATION, "kind": "probation"},
    ]
    body["acknowledgements"] = [
        {"node": PROBATION, "acknowledged_at": "2026-01-01T00:00:00Z"}  # forged by the sender
    ]
    pid = prison.send([PROBATION], "handover/responsibility-agreement/1", body)
    assert prison.wait_delivered(pid)["deliveries"][0]["status"] == "delivered"

    status, shown = probation.api("GET", f"/api/v1/cases/{case}")
    assert status == 200, shown
    agreement = shown["agreement"]
    assert agreement["acknowledged"] == [PRISON]
    assert agreement["pending"] == [PROBATION]

    # Probation acknowledges itself: now both count, on both sides.
    status, answer = probation.api(
        "POST",
        f"/api/v1/cases/{case}/agreements/{body['agreement_id']}/acknowledge",
        {"justification": "we take on supervision as agreed"},
    )
    assert status == 202, answer
    ack_pid = answer["packets"][0]["pid"]
    assert probation.wait_delivered(ack_pid)["deliveries"][0]["status"] == "delivered"
    for node in (prison, probation):
        status, shown = node.api("GET", f"/api/v1/cases/{case}")
        assert sorted(shown["agreement"]["acknowledged"]) == [PRISON, PROBATION]


def test_a_caseworker_cannot_erase_before_the_review_is_due(fed: Federation) -> None:
    """Medium 7: erasure is irreversible; before the review is due it needs an admin."""
    prison, probation = fed[PRISON], fed[PROBATION]
    pid = prison.send([PROBATION])
    assert prison.wait_delivered(pid)["deliveries"][0]["status"] == "delivered"
    payload = {"outcome": "ERASE", "justification": "no longer needed for the case"}
    status, answer = probation.api("POST", f"/api/v1/reviews/{pid}", payload)
    assert (status, answer["error"]) == (403, "forbidden")
    assert "admin" in answer["message"]
    (row,) = probation.sql("SELECT body_box FROM received WHERE pid = $1", pid)
    assert row["body_box"] is not None
    # An admin's early erasure is a proposal (issue 16): a second admin approves it.
    status, answer = probation.api("POST", f"/api/v1/reviews/{pid}", payload, role="admin")
    assert (status, answer["error"]) == (400, "reason_required")
    early = {**payload, "reason_code": "PURPOSE_FULFILLED"}
    status, state = probation.api("POST", f"/api/v1/reviews/{pid}", early, role="admin")
    assert status == 202 and state["state"] == "pending_approval" and state["erased"] is False
    second = probation.tokens.get("admin-2")
    if second is None:
        first = probation.tokens["admin"]
        second = probation.add_operator("admin-2", "admin")
        probation.tokens["admin"], probation.tokens["admin-2"] = first, second
    approve = f"/api/v1/reviews/{pid}/approve"
    status, state = probation.api(
        "POST", approve, {"justification": "agreed with the proposal"}, token=second
    )
    assert status == 200 and state["erased"] is True
