"""Delivery under failure, against real node processes and real PostgreSQL.

A receiver that is down, a sender killed in the middle of a batch, retried and
tampered packets, the batch endpoint, two processes sharing one database, dead
letters and a packet to two recipients. Every node is a `handover serve`
subprocess with its own embedded PostgreSQL, talking HTTP on 127.0.0.1.

The sender retries quickly here (`retry_base_s = 0.2`, `retry_max_s = 2.0`) and
leases claimed rows for `delivery_timeout_s + 30` s, so recovering rows that
were in flight when a process died takes about half a minute.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from federation import (
    RELEASE_NOTICE,
    Federation,
    NodeProcess,
    cli_env,
    example,
    free_port,
    run_cli,
)
from handover.node import keystore
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps, cj_loads
from handover.protocol.keyset import Keyset, accept_keyset
from handover.protocol.packet import MEDIA_TYPE, Recipient, seal
from handover.protocol.receipt import verify_receipt
from handover.protocol.timeutil import now_ms
from handover.workflow.schemas import default_registry

PRISON, PROBATION, EXIT = "prison.example", "probation.example", "exit.example"
PACKETS = "/federation/v1/packets"
BATCH = "/federation/v1/packets:batch"
INVALID = {"error": "invalid_packet"}
JUSTIFICATION = "release planning for the shared case"
# Lets the sender retry quickly and recover leased rows within ~35 s of a crash.
FAST_SENDER = {
    "retry_base_s": 0.2,
    "retry_max_s": 2.0,
    "delivery_timeout_s": 3.0,
    "delivery_batch": 32,
}
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
B64U = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    # Not under pytest's basetemp: every pytest session that starts (another
    # engineer's, a parallel run) chmods /tmp/pytest-of-USER back to 0700, and
    # the embedded PostgreSQL (run as the `pgserver` user when we are root) then
    # cannot open files in its data directory any more.
    base = Path(tempfile.mkdtemp(prefix="handover-delivery-"))
    federation = Federation(base, [(PRISON, "prison"), (PROBATION, "probation"), (EXIT, "exit")])
    prison = federation[PRISON]
    with open(prison.dir / "handover.toml", "a", encoding="utf-8") as config:
        config.write("".join(f"{key} = {value!r}\n" for key, value in FAST_SENDER.items()))
    try:
        federation.start()
        yield federation
    finally:
        federation.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def running(fed: Federation) -> Iterator[None]:
    """Every test starts with all three nodes up, whatever the previous one left behind."""
    for node in fed.nodes.values():
        if node.proc is None or node.proc.poll() is not None:
            node.proc = None
            node.start()
    yield


# --- helpers -------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def case_ref(number: int, series: int = 0) -> str:
    """A valid, distinct shared case reference (HC- and 26 Crockford base32 digits)."""
    digits = ""
    value = series << 64 | number
    for _ in range(26):
        value, digit = divmod(value, 32)
        digits = CROCKFORD[digit] + digits
    return "HC-" + digits


def submission(to: list[str] | None = None, case: int = 0, series: int = 0) -> dict[str, Any]:
    """A release notice (the schema's first example) for its own case."""
    body = example(RELEASE_NOTICE)
    body["case_ref"] = case_ref(case, series)
    return {
        "to": to or [PROBATION],
        "schema": RELEASE_NOTICE,
        "body": body,
        "justification": JUSTIFICATION,
    }


def submit_many(
    nodes: list[NodeProcess],
    count: int,
    *,
    series: int,
    workers: int = 16,
    accepted_enough: tuple[int, threading.Event] | None = None,
) -> tuple[list[str], list[str]]:
    """POST `count` release notices concurrently, round-robin over `nodes`' APIs.

    Returns the pids that got a 202 and one line per submission that did not
    (connection errors once a node is killed). `accepted_enough = (n, event)`
    sets `event` once n submissions were accepted.
    """
    accepted: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        node = nodes[i % len(nodes)]
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {node.tokens['caseworker']}",
        }
        try:
            status, raw = node.request(
                "POST",
                "/api/v1/packets",
                json.dumps(submission(case=i, series=series)).encode(),
                headers,
                20,
            )
            answer = json.loads(raw)
        except Exception as exc:  # connection refused / reset once the node is gone
            with lock:
                errors.append(f"{node.url}: {exc!r}")
            return
        with lock:
            if status == 202:
                accepted.append(answer["packets"][0]["pid"])
                if accepted_enough is not None and len(accepted) >= accepted_enough[0]:
                    accepted_enough[1].set()
            else:
                errors.append(f"{node.url}: {status} {answer}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(count)))
    return accepted, errors


def pending_count(node: NodeProcess) -> int:
    (row,) = node.sql("SELECT count(*) AS n FROM deliveries WHERE status = 'pending'")
    return int(row["n"])


def statuses(node: NodeProcess, pids: list[str]) -> dict[tuple[str, str], str]:
    rows = node.sql("SELECT pid, node, status FROM deliveries WHERE pid = ANY($1)", pids)
    return {(r["pid"], r["node"]): r["status"] for r in rows}


def received_counts(receiver: NodeProcess, sender: str, pids: list[str]) -> dict[str, int]:
    rows = receiver.sql(
        "SELECT pid, count(*) AS n FROM received WHERE sender = $1 AND pid = ANY($2) GROUP BY pid",
        sender,
        pids,
    )
    return {r["pid"]: int(r["n"]) for r in rows}


def audit_counts(node: NodeProcess, op: str, pids: list[str]) -> dict[tuple[str, str], int]:
    """Entries of `op` per (pid, counterpart) in `node`'s audit log."""
    rows = node.sql(
        "SELECT pid, convert_from(entry, 'UTF8')::jsonb ->> 'counterpart' AS peer,"
        " count(*) AS n FROM audit_log WHERE op = $1 AND pid = ANY($2) GROUP BY 1, 2",
        op,
        pids,
    )
    return {(r["pid"], r["peer"]): int(r["n"]) for r in rows}


def assert_delivered_once(sender: NodeProcess, receiver: NodeProcess, pids: list[str]) -> None:
    """Every pid delivered to `receiver`, held there once, logged once on each side."""
    expected = {(pid, receiver.node) for pid in pids}
    found = statuses(sender, pids)
    assert {k: v for k, v in found.items() if k in expected} == dict.fromkeys(expected, "delivered")
    assert received_counts(receiver, sender.node, pids) == dict.fromkeys(pids, 1)
    assert audit_counts(receiver, "collection", pids) == {(p, sender.node): 1 for p in pids}
    deliveries = audit_counts(sender, "delivery", pids)
    assert {k: n for k, n in deliveries.items() if k[1] == receiver.node} == dict.fromkeys(
        expected, 1
    )


def audit_verify(node: NodeProcess, peers: bool = True) -> dict[str, Any]:
    args = ["audit", "verify", "--dir", str(node.dir)] + (["--peers"] if peers else [])
    report: dict[str, Any] = json.loads(run_cli(*args).stdout)
    assert report["ok"] is True, report
    return report


def accepted_attempts(node: NodeProcess) -> int:
    """The process's count of delivery attempts answered with an accepted receipt."""
    status, text = node.request("GET", "/metrics")
    assert status == 200
    for line in text.decode().splitlines():
        if line.startswith('handover_delivery_attempts_total{outcome="accepted"} '):
            return int(float(line.split()[-1]))
    return 0


def stored_wire_and_receipt(sender: NodeProcess, pid: str, node: str) -> tuple[bytes, bytes]:
    (row,) = sender.sql(
        "SELECT o.wire, d.receipt FROM outbox o JOIN deliveries d USING (pid)"
        " WHERE o.pid = $1 AND d.node = $2",
        pid,
        node,
    )
    return bytes(row["wire"]), bytes(row["receipt"])


def post(node: NodeProcess, path: str, body: bytes, media: str = MEDIA_TYPE) -> tuple[int, bytes]:
    return node.request("POST", path, body, {"Content-Type": media})


def other_b64u_char(text: str, at: int) -> str:
    """`text` with the character at `at` replaced by another valid b64u character."""
    old = text[at]
    new = B64U[(B64U.index(old) + 1) % 64]
    return text[:at] + new + text[at + 1 :]


def fetch_keyset(node: NodeProcess) -> Keyset:
    """The node's keyset, fetched over HTTP and accepted under its pinned fingerprint."""
    status, wire = node.request("GET", "/.well-known/handover/keyset")
    assert status == 200
    return accept_keyset(wire, node=node.node, fingerprint=node.fingerprint, now=now_ms())


def fresh_packet(sender: NodeProcess, receiver: NodeProcess, case: str) -> bytes:
    """A new packet sealed with the sender's own keys, outside its node (no outbox row)."""
    keys = keystore.load_keys(sender.dir / "keys")
    keyset = fetch_keyset(receiver)
    now = now_ms()
    body = example(RELEASE_NOTICE)
    body["case_ref"] = case
    return seal(
        keys.identity(),
        [Recipient.from_keyset(keyset, now)],
        RELEASE_NOTICE,
        body,
        now=now,
        validator=default_registry(),
    ).wire


def start_replica(node: NodeProcess, timeout: float = 60) -> NodeProcess:
    """A second `handover serve` for `node`'s directory (same database), on another port.

    Ready means: our process logged `node_started` (so it holds the port, not
    some other process on this machine) and answers /readyz. A port taken
    between choosing and binding it is retried with another.
    """
    for _ in range(3):
        replica = copy.copy(node)
        replica.port = free_port()
        replica.url = f"http://127.0.0.1:{replica.port}"
        replica.log_path = Path(f"{node.log_path}.replica-{replica.port}")
        log = open(replica.log_path, "ab")  # noqa: SIM115 - closed with the process
        replica.proc = subprocess.Popen(
            [sys.executable, "-m", "handover.cli", "serve", "--dir", str(node.dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=cli_env(HANDOVER_LISTEN=f"127.0.0.1:{replica.port}"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if replica.proc.poll() is not None:
                break
            if '"node_started"' in replica.log():
                with contextlib.suppress(OSError):
                    if replica.get("/readyz")[0] == 200:
                        return replica
            time.sleep(0.1)
        if replica.proc.poll() is None or "cannot listen" not in replica.log():
            replica.stop()
            raise AssertionError(f"the replica did not become ready:\n{replica.log()}")
    raise AssertionError("no free port for the replica")


# --- tests ---------------------------------------------------------------------------


def test_packets_for_a_receiver_that_is_down_wait_and_arrive_once(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    probation.stop()
    pids = [prison.send([PROBATION], body=submission(case=i, series=5)["body"]) for i in range(5)]

    def all_failed_once() -> list[dict[str, Any]] | None:
        deliveries = [prison.packet(pid)["deliveries"][0] for pid in pids]
        failed = all(d["attempts"] >= 1 and d["last_error"] for d in deliveries)
        return deliveries if failed else None

    first = wait_for("a first failed attempt", all_failed_once, 10)
    for delivery in first:
        assert delivery["status"] == "pending" and delivery["node"] == PROBATION
        assert delivery["receipt"] is None
    before = first[0]["attempts"]
    later = wait_for(
        "more attempts",
        lambda: (d := prison.packet(pids[0])["deliveries"][0])["attempts"] > before and d,
        10,
    )
    assert later["status"] == "pending" and later["last_error"]

    probation.start()
    for pid in pids:
        (delivery,) = prison.wait_delivered(pid, timeout=20)["deliveries"]
        assert delivery["status"] == "delivered" and delivery["last_error"] is None
        assert delivery["attempts"] >= 2 and delivery["receipt"] is not None
    assert_delivered_once(prison, probation, pids)


def in_flight(sender: NodeProcess, receiver: NodeProcess) -> tuple[list[str], int]:
    """Pids the sender has claimed (leased, not finished) and how many of them the
    receiver already stored. A lease runs for delivery_timeout_s + 30 s, far
    beyond any retry backoff here."""
    leased = [
        r["pid"]
        for r in sender.sql(
            "SELECT pid FROM deliveries WHERE status = 'pending' AND next_attempt_at > $1",
            now_ms() + 10_000,
        )
    ]
    if not leased:
        return [], 0
    (row,) = receiver.sql("SELECT count(*) AS n FROM received WHERE pid = ANY($1)", leased)
    return leased, int(row["n"])


def test_sender_killed_mid_batch_loses_and_duplicates_nothing(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    earlier = {r["pid"] for r in prison.sql("SELECT pid FROM outbox")}
    enough = threading.Event()
    result: dict[str, Any] = {}

    def submit() -> None:
        result["accepted"], result["errors"] = submit_many(
            [prison], 1000, series=3, accepted_enough=(300, enough)
        )

    submitter = threading.Thread(target=submit)
    submitter.start()
    try:
        assert enough.wait(60), "300 submissions were not accepted in time"
        # Best effort: crash while a batch is in flight, ideally one the receiver
        # has already stored but whose receipts the sender has not recorded yet.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not in_flight(prison, probation)[1]:
            time.sleep(0.01)
        prison.kill()
    finally:
        submitter.join(120)
    accepted: list[str] = result["accepted"]
    assert 300 <= len(accepted) < 1000 and result["errors"], len(accepted)
    assert len(set(accepted)) == len(accepted)

    # Every 202 was durable: each accepted pid has its outbox row and its
    # disclosure entry, and no disclosure committed without its outbox row.
    in_outbox = {r["pid"] for r in prison.sql("SELECT pid FROM outbox")}
    disclosed = {r["pid"] for r in prison.sql("SELECT pid FROM audit_log WHERE op = 'disclosure'")}
    assert set(accepted) <= in_outbox
    assert in_outbox == disclosed
    leased, _ = in_flight(prison, probation)
    stored_unrecorded = [
        r["pid"] for r in probation.sql("SELECT pid FROM received WHERE pid = ANY($1)", leased)
    ]

    prison.start()
    wait_for("no pending delivery", lambda: pending_count(prison) == 0, 75, every=0.5)
    assert_delivered_once(prison, probation, sorted(in_outbox - earlier))
    (row,) = probation.sql(
        "SELECT count(*) AS n, count(DISTINCT pid) AS d FROM received WHERE sender = $1", PRISON
    )
    assert row["n"] == row["d"]
    # Packets the receiver stored before the crash were sent again after the
    # lease ran out, and the sender now holds the receipt the receiver gave first.
    for pid in stored_unrecorded:
        (delivery,) = prison.packet(pid)["deliveries"]
        assert delivery["attempts"] >= 2, delivery
        _wire, receipt = stored_wire_and_receipt(prison, pid, PROBATION)
        (held,) = probation.sql("SELECT receipt FROM received WHERE pid = $1", pid)
        assert bytes(held["receipt"]) == receipt
    for node in (prison, probation):
        audit_verify(node)


def test_retried_packet_gets_the_identical_stored_receipt(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    pid = prison.send([PROBATION])
    assert prison.wait_delivered(pid)["deliveries"][0]["status"] == "delivered"
    wire, receipt = stored_wire_and_receipt(prison, pid, PROBATION)
    (held,) = probation.sql("SELECT receipt FROM received WHERE pid = $1", pid)
    assert bytes(held["receipt"]) == receipt

    for media in (MEDIA_TYPE, "application/json"):
        assert post(probation, PACKETS, wire, media) == (200, receipt)

    packet = json.loads(wire)
    # The packet digest covers HB and SIG, and HB commits to the ciphertext
    # (clen, ch): a copy whose ct was damaged in transit is the same packet for
    # the replay shortcut (docs/protocol.md section 3, step 3) and gets the stored receipt.
    damaged = dict(packet, ct=other_b64u_char(packet["ct"], len(packet["ct"]) // 2))
    assert post(probation, PACKETS, cj_dumps(damaged)) == (200, receipt)

    # Same pid with another digest: another signature, or another header.
    other_sig = dict(packet, sig=other_b64u_char(packet["sig"], 0))
    header = cj_loads(b64u_decode(packet["hp1"]))
    header["exp"] -= 1
    other_header = dict(packet, hp1=b64u_encode(cj_dumps(header)))
    for forged in (other_sig, other_header):
        status, body = post(probation, PACKETS, cj_dumps(forged))
        assert (status, json.loads(body)) == (400, INVALID)
    # Caught at step 3, before the signature: anyone could send these, so they
    # are counted in the bounded security log, not written into the audit log.
    conflicts = [
        json.loads(r["e"])
        for r in probation.sql(
            "SELECT convert_from(entry, 'UTF8') AS e FROM audit_log WHERE op = 'rejection'"
        )
    ]
    assert [c for c in conflicts if c.get("unverified_pid") == pid] == []
    deadline = time.monotonic() + 15
    while True:
        (row,) = probation.sql(
            "SELECT coalesce(sum(count), 0) AS n FROM security_events"
            " WHERE reason = 'replay_conflict'"
        )
        if row["n"] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert row["n"] >= 2
    # The receiver still holds the original, once; the sender's record is unchanged.
    assert received_counts(probation, PRISON, [pid]) == {pid: 1}
    assert audit_counts(probation, "collection", [pid]) == {(pid, PRISON): 1}
    assert post(probation, PACKETS, wire) == (200, receipt)
    assert stored_wire_and_receipt(prison, pid, PROBATION) == (wire, receipt)


def test_batch_answers_each_packet_as_if_posted_alone(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    pid = prison.send([PROBATION])
    prison.wait_delivered(pid)
    wire, receipt = stored_wire_and_receipt(prison, pid, PROBATION)
    packet = json.loads(wire)
    # Duplicate keys with equal values: a lax parser would silently accept it.
    duplicated = wire[:-1] + b',"sig":' + json.dumps(packet["sig"]).encode() + b"}"
    garbage = b'{"hp1":"AAAA","sig":"AAAA","ct":"AAAA"}'
    new_wire = fresh_packet(prison, probation, case_ref(1, series=1))
    twice = fresh_packet(prison, probation, case_ref(2, series=1))

    # Alone first, for the reference answers of the refused ones.
    for bad in (duplicated, garbage, b'"not a packet"'):
        status, body = post(probation, PACKETS, bad)
        assert (status, json.loads(body)) == (400, INVALID)

    batch = b'{"packets":[' + b",".join([wire, garbage, duplicated, new_wire, twice, twice])
    status, body = post(probation, BATCH, batch + b',"not a packet"]}', "application/json")
    assert status == 200
    results = json.loads(body)["results"]
    assert [r["status"] for r in results] == [200, 400, 400, 200, 200, 200, 400]
    assert results[0]["receipt"] == json.loads(receipt)
    assert [r["receipt"] for r in results[1:3]] == [None, None] and results[6]["receipt"] is None
    # The same new packet twice in one batch: stored once, the same receipt twice.
    assert results[4]["receipt"] == results[5]["receipt"]

    # Posted alone afterwards, the new packets get byte for byte what the batch returned.
    new_pids = []
    for new, result in ((new_wire, results[3]), (twice, results[4])):
        new_pid = cj_loads(b64u_decode(json.loads(new)["hp1"]))["pid"]
        new_pids.append(new_pid)
        assert post(probation, PACKETS, new) == (200, cj_dumps(result["receipt"]))
        (stored,) = probation.sql("SELECT receipt FROM received WHERE pid = $1", new_pid)
        assert bytes(stored["receipt"]) == cj_dumps(result["receipt"])
    assert received_counts(probation, PRISON, [pid, *new_pids]) == dict.fromkeys(
        [pid, *new_pids], 1
    )
    assert audit_counts(probation, "collection", [pid, *new_pids]) == {
        (p, PRISON): 1 for p in [pid, *new_pids]
    }

    # A batch that is not {"packets": [...]} is refused whole.
    for bad_batch in (b'{"packets":[]}', b"[]", b'{"packets":[1],"packets":[1]}', b"{"):
        status, body = post(probation, BATCH, bad_batch, "application/json")
        assert status == 400 and json.loads(body) == {"error": "invalid_batch"}


def test_two_processes_sharing_one_database_deliver_each_row_once(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    replica = start_replica(prison)
    try:
        before = accepted_attempts(prison)
        accepted, errors = submit_many([prison, replica], 200, series=4)
        assert not errors and len(accepted) == 200, errors[:5]
        wait_for(
            "all 200 delivered",
            lambda: set(statuses(prison, accepted).values()) == {"delivered"},
            45,
            every=0.25,
        )
        # A row POSTed twice would be answered twice (the second time from the
        # receiver's replay record) and counted twice here, retries or not.
        by_primary = accepted_attempts(prison) - before
        by_replica = accepted_attempts(replica)
    finally:
        replica.stop()
    assert by_primary + by_replica == 200, (by_primary, by_replica)
    # Both processes took part (a claim is at most 4 x 32 rows; submissions trickle in).
    assert by_primary > 0 and by_replica > 0, (by_primary, by_replica)
    assert_delivered_once(prison, probation, accepted)
    audit_verify(prison, peers=False)
    # The first process goes on alone after the replica left (and the database stays up).
    pid = prison.send([PROBATION])
    assert prison.wait_delivered(pid)["deliveries"][0]["status"] == "delivered"


def test_expired_packet_becomes_a_dead_letter(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    probation.stop()
    pid = prison.send([PROBATION])
    wait_for("a failed attempt", lambda: prison.packet(pid)["deliveries"][0]["attempts"] >= 1, 10)
    prison.sql("UPDATE outbox SET exp = $2 WHERE pid = $1", pid, now_ms() - 1000)

    def expired() -> dict[str, Any] | None:
        (delivery,) = prison.packet(pid)["deliveries"]
        return delivery if delivery["status"] != "pending" else None

    delivery = wait_for("the dead letter", expired, 15)
    assert delivery["status"] == "expired" and delivery["reason"] == "expired"
    assert delivery["receipt"] is None and delivery["last_error"] is None
    (entry,) = [
        json.loads(r["e"])
        for r in prison.sql(
            "SELECT convert_from(entry, 'UTF8') AS e FROM audit_log"
            " WHERE pid = $1 AND op = 'delivery'",
            pid,
        )
    ]
    assert entry["status"] == "expired" and entry["counterpart"] == PROBATION
    status, answer = prison.api("GET", f"/api/v1/audit?pid={pid}", role="auditor")
    assert status == 200
    assert [e["entry"]["op"] for e in answer["entries"]] == ["disclosure", "delivery"]

    # Once the receiver is back, later packets flow; the dead letter is never sent.
    probation.start()
    later = prison.send([PROBATION])
    assert prison.wait_delivered(later)["deliveries"][0]["status"] == "delivered"
    assert prison.packet(pid)["deliveries"][0]["status"] == "expired"
    assert received_counts(probation, PRISON, [pid, later]) == {later: 1}


def test_packet_to_two_recipients_reaches_both_with_separate_receipts(fed: Federation) -> None:
    prison, probation, exit_org = fed[PRISON], fed[PROBATION], fed[EXIT]
    # A body both kinds may receive whole, so the policy leaves one view: one packet.
    full = example(RELEASE_NOTICE)
    body = {k: full[k] for k in ("quality", "phase", "prison_id", "expected_release_date")}
    body["case_ref"] = case_ref(7, series=2)
    body["risk"] = {k: full["risk"][k] for k in ("overall_level", "at_risk")}
    status, answer = prison.api(
        "POST",
        "/api/v1/packets",
        {
            "to": [PROBATION, EXIT],
            "schema": RELEASE_NOTICE,
            "body": body,
            "justification": JUSTIFICATION,
        },
    )
    assert status == 202, answer
    (sent,) = answer["packets"]
    pid = sent["pid"]
    assert sorted(sent["to"]) == [EXIT, PROBATION]
    packet = prison.wait_delivered(pid)
    assert {d["node"]: d["status"] for d in packet["deliveries"]} == {
        PROBATION: "delivered",
        EXIT: "delivered",
    }
    (row,) = prison.sql("SELECT pd FROM outbox WHERE pid = $1", pid)
    rids = set()
    for receiver in (probation, exit_org):
        wire, receipt_wire = stored_wire_and_receipt(prison, pid, receiver.node)
        keyset = fetch_keyset(receiver)
        receipt = verify_receipt(
            receipt_wire,
            sender=PRISON,
            pid=pid,
            pd=bytes(row["pd"]),
            recipient=receiver.node,
            keyset_for={receiver.node: keyset}.get,
            now=now_ms(),
        )
        assert receipt.status == "accepted" and receipt.signer == receiver.node
        rids.add(receipt.rid)
        (held,) = receiver.sql("SELECT receipt FROM received WHERE pid = $1", pid)
        assert bytes(held["receipt"]) == receipt_wire
        assert post(receiver, PACKETS, wire) == (200, receipt_wire)
        assert_delivered_once(prison, receiver, [pid])
    assert len(rids) == 2
