"""Security properties of real nodes (`handover serve`, embedded PostgreSQL, real HTTP).

Refused packets (unpinned sender, revoked key, someone else's packet) and the
precise local audit entry each leaves; key rotation while running; tampering
with or truncating audit logs; pins taking effect without a restart; no
personal data in logs; health, readiness and metrics; request size and media
type limits of the federation endpoint.
"""

from __future__ import annotations

import copy
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation import RELEASE_NOTICE, Federation, NodeProcess, example, run_cli
from handover.node import keystore
from handover.protocol import crypto
from handover.protocol.auditchain import verify_checkpoint
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps
from handover.protocol.keyset import (
    MAX_KEYSET_LIFETIME_MS,
    KeyEntry,
    Keyset,
    accept_keyset,
    build_keyset,
)
from handover.protocol.packet import MAX_REQUEST_BYTES, MEDIA_TYPE, Recipient, seal
from handover.protocol.receipt import verify_receipt
from handover.protocol.timeutil import now_ms
from handover.workflow.schemas import default_registry

PRISON, PROBATION, EXIT = "prison.example", "probation.example", "exit.example"
INVALID = {"error": "invalid_packet"}
SECRET = "ZZ-SECRET-VALUE-7731"


# --- helpers ---------------------------------------------------------------------------


def debug_logging(node: NodeProcess) -> None:
    """Log at debug level, so request events (`http_request`) reach the log too."""
    with open(node.dir / "handover.toml", "a", encoding="utf-8") as f:
        f.write('log_level = "debug"\n')


def make_federation(base: Path, nodes: list[tuple[str, str]]) -> Federation:
    federation = Federation(base, nodes)
    for node in federation.nodes.values():
        debug_logging(node)
    federation.start()
    return federation


def keyset_of(node: NodeProcess) -> Keyset:
    """The node's keyset as a peer would accept it (pinned fingerprint)."""
    status, wire = node.request("GET", "/.well-known/handover/keyset")
    assert status == 200
    return accept_keyset(wire, node=node.node, fingerprint=node.fingerprint, now=now_ms())


def wait_for_serial(node: NodeProcess, serial: int, timeout: float = 15) -> Keyset:
    deadline = time.monotonic() + timeout
    while True:
        keyset = keyset_of(node)
        if keyset.serial >= serial:
            return keyset
        if time.monotonic() > deadline:
            raise AssertionError(f"{node.node} still serves keyset serial {keyset.serial}")
        time.sleep(0.1)


def seal_offline(identity: Any, *recipients: Keyset, body: dict[str, Any] | None = None) -> Any:
    now = now_ms()
    return seal(
        identity,
        [Recipient.from_keyset(k, now) for k in recipients],
        RELEASE_NOTICE,
        body if body is not None else example(RELEASE_NOTICE),
        now=now,
        validator=default_registry(),
    )


def post_wire(
    node: NodeProcess, wire: bytes, content_type: str | None = MEDIA_TYPE
) -> tuple[int, Any]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    status, raw = node.request("POST", "/federation/v1/packets", wire, headers)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def rejection_entries(node: NodeProcess, pid: str) -> list[dict[str, Any]]:
    """The `rejection` audit entries naming `pid` as the (unverified) packet id."""
    rows = node.sql("SELECT entry FROM audit_log WHERE op = 'rejection' ORDER BY seq")
    entries = [json.loads(bytes(r["entry"])) for r in rows]
    return [e for e in entries if e.get("unverified_pid") == pid]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')


def metrics(node: NodeProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics parsed as Prometheus text: (name, labels) -> value. Checks the
    format: every sample belongs to a metric with HELP and TYPE lines."""
    status, raw = node.request("GET", "/metrics")
    assert status == 200
    text = raw.decode("utf-8")
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    helped: set[str] = set()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            typed[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a Prometheus sample line: {line!r}"
            name, labels, value = match.groups()
            base = re.sub(r"_(bucket|sum|count|total|created)$", "", name)
            family = name if name in typed else base
            assert family in typed and family in helped, f"sample without HELP/TYPE: {line!r}"
            samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return samples


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def header_of(wire: bytes) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(b64u_decode(json.loads(wire)["hp1"]))
    return header


def outbox_header(node: NodeProcess, pid: str) -> dict[str, Any]:
    (row,) = node.sql("SELECT wire FROM outbox WHERE pid = $1", pid)
    return header_of(bytes(row["wire"]))


def active_kid(keyset: Keyset, key_type: str) -> str:
    (kid,) = [k.kid for k in keyset.keys if k.type == key_type and k.status == "active"]
    return kid


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = make_federation(
        tmp_path_factory.mktemp("sec"),
        [(PRISON, "prison"), (PROBATION, "probation"), (EXIT, "exit")],
    )
    yield federation
    federation.stop()


# --- refused packets ---------------------------------------------------------------------


def security_count(node: NodeProcess, reason: str, timeout: float = 15) -> int:
    """The security log's count of `reason` refusals (flushed every few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        (row,) = node.sql(
            "SELECT coalesce(sum(count), 0) AS n FROM security_events WHERE reason = $1", reason
        )
        if row["n"] or time.monotonic() > deadline:
            return int(row["n"])
        time.sleep(0.5)


def test_packet_from_an_unpinned_node_is_refused_and_counted_not_audited(
    fed: Federation, tmp_path: Path
) -> None:
    probation = fed[PROBATION]
    stranger_dir = tmp_path / "stranger-keys"
    run_cli("keys", "init", "--node", "stranger.example", "--dir", str(stranger_dir))
    stranger = keystore.load_keys(stranger_dir).identity()
    before = metrics(probation)

    counted = security_count(probation, "unknown_sender", timeout=0)
    sealed = seal_offline(stranger, keyset_of(probation))
    assert post_wire(probation, sealed.wire) == (400, INVALID)

    # Anyone can send this: it is counted in the bounded security log, not
    # written into the append-only audit log that peers witness.
    assert rejection_entries(probation, sealed.pid) == []
    assert security_count(probation, "unknown_sender") == counted + 1
    assert not probation.sql("SELECT 1 FROM received WHERE pid = $1", sealed.pid)
    after = metrics(probation)
    name = "handover_packets_invalid_total"
    assert metric(after, name, stage="unauthenticated") == (
        metric(before, name, stage="unauthenticated") + 1
    )
    # The metric does not say why: that would tell anyone which nodes are pinned.
    assert metric(after, name, reason="unknown_sender") == 0


def test_packet_signed_with_a_revoked_key_is_refused_and_counted(fed: Federation) -> None:
    exit_node, probation = fed[EXIT], fed[PROBATION]
    keys_dir = exit_node.dir / "keys"
    keys = keystore.load_keys(keys_dir)
    old = keys.identity()

    # The exit node revokes its signing key (possible compromise) and activates a new one.
    now = now_ms()
    new_key = crypto.SigningKey.generate()
    new_kid = crypto.kid("ed25519-sig", new_key.public_key)
    keystore.write_private(
        keys_dir / f"sig-{new_kid}.key", b64u_encode(new_key.seed).encode() + b"\n"
    )
    entries = [
        KeyEntry(k.kid, k.type, k.public_key, k.nbf, "revoked", now - 60_000)
        if k.kid == old.kid
        else k
        for k in keys.keyset.keys
    ]
    entries.append(KeyEntry(new_kid, "ed25519-sig", new_key.public_key, now, "active"))
    wire = build_keyset(
        node=EXIT,
        serial=keys.keyset.serial + 1,
        iat=now,
        exp=now + MAX_KEYSET_LIFETIME_MS,
        root=keys.root,
        keys=entries,
    )
    keystore.write_public(keys_dir / keystore.KEYSET_FILE, wire)
    assert keystore.load_keys(keys_dir).identity().kid == new_kid
    exit_node.sql("NOTIFY handover_keys")  # the running node reloads its keys
    wait_for_serial(exit_node, keys.keyset.serial + 1)
    # The receiver learns the new keyset (re-pinning fetches it from the pinned URL).
    run_cli(
        "peers", "add", "--dir", str(probation.dir), "--url", exit_node.url,
        f"--fingerprint={exit_node.fingerprint}", "--kind", "exit",
    )  # fmt: skip
    (row,) = probation.sql("SELECT serial FROM peers WHERE node = $1", EXIT)
    assert row["serial"] == keys.keyset.serial + 1

    counted = security_count(probation, "key_not_valid", timeout=0)
    sealed = seal_offline(old, keyset_of(probation))
    assert post_wire(probation, sealed.wire) == (400, INVALID)
    # Not authenticated (the key is no longer valid): security log, not audit log.
    assert rejection_entries(probation, sealed.pid) == []
    assert security_count(probation, "key_not_valid") == counted + 1
    assert not probation.sql("SELECT 1 FROM received WHERE pid = $1", sealed.pid)

    # The exit node itself goes on working with its new key.
    pid = exit_node.send(
        [PROBATION], "handover/care-acknowledgement/1", example("handover/care-acknowledgement/1")
    )
    assert exit_node.wait_delivered(pid)["deliveries"][0]["status"] == "delivered"
    assert outbox_header(exit_node, pid)["from"]["kid"] == new_kid


def test_packet_addressed_to_another_node_is_refused_and_audited(fed: Federation) -> None:
    prison, probation, exit_node = fed[PRISON], fed[PROBATION], fed[EXIT]
    identity = keystore.load_keys(prison.dir / "keys").identity()

    sealed = seal_offline(identity, keyset_of(exit_node))  # sealed to the exit node only
    assert post_wire(probation, sealed.wire) == (400, INVALID)
    (entry,) = rejection_entries(probation, sealed.pid)
    assert entry["reason"] == "not_a_recipient"
    assert entry["unverified_sender"] == PRISON
    assert not probation.sql("SELECT 1 FROM received WHERE pid = $1", sealed.pid)

    # The same signer and shape sealed to the receiver is accepted: only the address differed.
    ok = seal_offline(identity, keyset_of(probation))
    status, receipt = post_wire(probation, ok.wire)
    assert status == 200 and "hp1r" in receipt


# --- key rotation while running -------------------------------------------------------------


def test_rotation_keeps_queued_packets_opening_and_moves_senders_to_new_keys(
    fed: Federation,
) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    old = keyset_of(probation)
    old_box, old_sig = active_kid(old, "x25519-box"), active_kid(old, "ed25519-sig")
    (pinned,) = prison.sql("SELECT serial FROM peers WHERE node = $1", PROBATION)
    assert pinned["serial"] == old.serial  # the sender caches the pre-rotation keyset

    out = run_cli("keys", "rotate", "--dir", str(probation.dir))
    rotated = json.loads(out.stdout)
    new = wait_for_serial(probation, rotated["serial"])
    new_box, new_sig = active_kid(new, "x25519-box"), active_kid(new, "ed25519-sig")
    assert {new_box, new_sig} == set(rotated["active"]) and not {old_box, old_sig} & {
        new_box,
        new_sig,
    }
    assert {k.kid: k.status for k in new.keys}[old_box] == "retired"

    # Sealed offline to the OLD keyset by a pinned sender: still opens, and the
    # receipt comes from the new signing key.
    identity = keystore.load_keys(prison.dir / "keys").identity()
    sealed = seal_offline(identity, old)
    status, receipt_json = post_wire(probation, sealed.wire)
    assert status == 200, receipt_json
    receipt = verify_receipt(
        json.dumps(receipt_json).encode(),
        sender=PRISON,
        pid=sealed.pid,
        pd=sealed.pd,
        recipient=PROBATION,
        keyset_for={PROBATION: new}.get,
        now=now_ms(),
    )
    assert receipt.kid == new_sig and receipt.status == "accepted"

    # The running sender still has the old keyset: it seals to the old key, the
    # receiver opens it, and the sender accepts the receipt signed by the new key
    # (refetching the keyset on the unknown kid).
    pid1 = prison.send([PROBATION])
    assert outbox_header(prison, pid1)["to"][0]["kid"] == old_box
    (delivery,) = prison.wait_delivered(pid1)["deliveries"]
    assert delivery["status"] == "delivered", delivery
    assert json.loads(b64u_decode(delivery["receipt"]["hp1r"]))["from"]["kid"] == new_sig
    (row,) = prison.sql(
        "SELECT receipt_serial FROM deliveries WHERE pid = $1 AND node = $2", pid1, PROBATION
    )
    assert row["receipt_serial"] == new.serial
    (pinned,) = prison.sql("SELECT serial FROM peers WHERE node = $1", PROBATION)
    assert pinned["serial"] == new.serial

    # New packets use the new encryption key.
    pid2 = prison.send([PROBATION])
    assert outbox_header(prison, pid2)["to"][0]["kid"] == new_box
    (delivery,) = prison.wait_delivered(pid2)["deliveries"]
    assert delivery["status"] == "delivered", delivery

    # The rotation is on the receiver's audit log.
    rows = probation.sql("SELECT entry FROM audit_log WHERE op = 'key' ORDER BY seq")
    rotations = [
        e for e in (json.loads(bytes(r["entry"])) for r in rows) if e["action"] == "rotated"
    ]
    assert rotations and rotations[-1]["serial"] == new.serial


# --- audit log tampering ---------------------------------------------------------------------


def test_an_edited_audit_entry_is_named_by_audit_verify(fed: Federation) -> None:
    prison = fed[PRISON]
    prison.send([PROBATION])  # make sure there is some history
    rows = prison.sql("SELECT seq, entry FROM audit_log ORDER BY seq")
    assert len(rows) >= 3
    seq = rows[len(rows) // 2]["seq"]
    original = bytes(rows[len(rows) // 2]["entry"])
    parsed = json.loads(original)
    edits = {
        # canonical JSON with one value changed: the recomputed chain differs
        "value": cj_dumps({**parsed, "at": parsed["at"] + 1}),
        # the same content, no longer in its canonical form
        "form": json.dumps(parsed, indent=1).encode(),
    }
    try:
        for what, tampered in edits.items():
            prison.sql("UPDATE audit_log SET entry = $2 WHERE seq = $1", seq, tampered)
            proc = run_cli("audit", "verify", "--dir", str(prison.dir), check=False)
            assert proc.returncode != 0, what
            assert re.search(rf"\bentry {seq}\b", proc.stderr), (what, proc.stderr)
            report = json.loads(proc.stdout)
            assert report["ok"] is False and report["chain"]["bad_seq"] == seq, what
    finally:
        prison.sql("UPDATE audit_log SET entry = $2 WHERE seq = $1", seq, original)
    assert json.loads(run_cli("audit", "verify", "--dir", str(prison.dir)).stdout)["ok"] is True


def _conflict(proc: Any, peer: str) -> list[dict[str, Any]]:
    assert proc.returncode != 0, proc.stdout
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["chain"]["ok"] is True
    (bad,) = [p for p in report["peers"] if p["node"] == peer]
    assert bad["ok"] is False
    conflict: list[dict[str, Any]] = bad["conflict"]
    return conflict


def test_truncating_a_peers_log_is_proven_by_two_signed_statements(tmp_path: Path) -> None:
    sender_name, receiver_name = "prison-b.example", "probation-b.example"
    fed2 = make_federation(tmp_path, [(sender_name, "prison"), (receiver_name, "probation")])
    try:
        sender, receiver = fed2[sender_name], fed2[receiver_name]
        pids = [sender.send([receiver_name]) for _ in range(2)]
        for pid in pids:
            assert sender.wait_delivered(pid)["deliveries"][0]["status"] == "delivered"
        held = {
            r["pid"]: bytes(r["receipt"])
            for r in sender.sql("SELECT pid, receipt FROM deliveries WHERE receipt IS NOT NULL")
        }
        seqs = {
            pid: json.loads(b64u_decode(json.loads(w)["hp1r"]))["log"]["seq"]
            for pid, w in held.items()
        }
        out = run_cli("audit", "verify", "--dir", str(sender.dir), "--peers")
        assert json.loads(out.stdout)["ok"] is True

        # The receiver drops the newest entries, including those its receipts point at.
        keep = min(seqs.values()) - 1
        old_length = receiver.sql("SELECT max(seq) AS n FROM audit_log")[0]["n"]
        receiver.sql("DELETE FROM audit_log WHERE seq > $1", keep)
        receiver_keyset = keyset_of(receiver)

        def check(proc: Any) -> tuple[Any, Any]:
            conflict = _conflict(proc, receiver_name)
            by_kind = {s["kind"]: s for s in conflict}
            assert set(by_kind) == {"receipt", "checkpoint"}, conflict
            receipt_wire = by_kind["receipt"]["signed"]
            checkpoint_wire = by_kind["checkpoint"]["signed"]
            # Both statements are printed, and each is a valid signature by the receiver.
            assert receipt_wire.encode() in held.values()
            assert receipt_wire in proc.stderr and checkpoint_wire in proc.stderr
            pid = next(p for p, w in held.items() if w == receipt_wire.encode())
            (row,) = sender.sql("SELECT pd FROM outbox WHERE pid = $1", pid)
            receipt = verify_receipt(
                receipt_wire,
                sender=sender_name,
                pid=pid,
                pd=bytes(row["pd"]),
                recipient=receiver_name,
                keyset_for={receiver_name: receiver_keyset}.get,
                now=now_ms(),
            )
            checkpoint = verify_checkpoint(checkpoint_wire, receiver_keyset, now_ms())
            return receipt, checkpoint

        # The log is now shorter than a position the receiver signed.
        proc = run_cli("audit", "verify", "--dir", str(sender.dir), "--peers", check=False)
        receipt, checkpoint = check(proc)
        assert checkpoint.seq == keep < receipt.log.seq

        # The log grows again past the old length (reads of the inbox): a fork
        # the length alone no longer shows, still proven by the same two kinds.
        while receiver.sql("SELECT max(seq) AS n FROM audit_log")[0]["n"] <= old_length:
            status, _ = receiver.api("GET", f"/api/v1/inbox/{pids[0]}?justification=fork+check")
            assert status == 200
        proc = run_cli("audit", "verify", "--dir", str(sender.dir), "--peers", check=False)
        receipt, checkpoint = check(proc)
        assert checkpoint.seq > old_length >= receipt.log.seq
    finally:
        fed2.stop()


# --- pins while running ------------------------------------------------------------------------


def test_a_peer_pinned_while_running_takes_effect_without_restart(fed: Federation) -> None:
    prison = fed[PRISON]
    prison_pid = prison.proc.pid if prison.proc else None
    late = NodeProcess(fed.base, "shelter.example", "exit")
    debug_logging(late)
    fed.nodes[late.node] = late  # stopped with the federation
    late.start()
    for node, other in ((prison, late), (late, prison)):
        run_cli(
            "peers", "add", "--dir", str(node.dir), "--url", other.url,
            f"--fingerprint={other.fingerprint}", "--kind", other.kind,
        )  # fmt: skip

    status, answer = prison.api(
        "POST",
        "/api/v1/packets",
        {
            "to": [late.node],
            "schema": RELEASE_NOTICE,
            "body": example(RELEASE_NOTICE),
            "justification": "release planning with the new exit organisation",
            "minimise": True,  # an exit organisation receives a reduced view
        },
    )
    assert status == 202, answer
    pid = answer["packets"][0]["pid"]
    (delivery,) = prison.wait_delivered(pid)["deliveries"]
    assert delivery["node"] == late.node and delivery["status"] == "delivered", delivery
    assert late.sql("SELECT status FROM received WHERE pid = $1", pid) == [{"status": "accepted"}]
    assert prison.proc is not None and prison.proc.pid == prison_pid  # never restarted


# --- logs, health, metrics -------------------------------------------------------------------


def log_events(node: NodeProcess) -> list[dict[str, Any]]:
    """The node's log, every line of which must be a JSON event."""
    events = []
    for line in node.log().splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"{node.node}: log line is not JSON: {line!r}") from None
        assert isinstance(event, dict) and "event" in event and "level" in event, line
        events.append(event)
    return events


def test_no_personal_data_in_logs(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    body = copy.deepcopy(example(RELEASE_NOTICE))
    body["risk_detail"]["narrative"] = f"Free text holding {SECRET} for the test."
    body["resettlement"][0]["notes"] = SECRET
    pid = prison.send([PROBATION], body=body)
    assert prison.wait_delivered(pid)["deliveries"][0]["status"] == "delivered"
    status, opened = probation.api("GET", f"/api/v1/inbox/{pid}?justification=supervision+plan")
    assert status == 200 and opened["body"]["resettlement"][0]["notes"] == SECRET
    # Error paths log too: a packet that does not exist, a bad token.
    assert (
        probation.api("GET", "/api/v1/inbox/AAAAAAAAAAAAAAAAAAAAAA?justification=reading+a+packet")[
            0
        ]
        == 404
    )
    assert probation.api("GET", "/api/v1/inbox", token="hov_wrong")[0] == 401

    secret = SECRET.encode()
    for node in (prison, probation):
        text = node.log()
        assert SECRET not in text, f"{node.node} logged a personal data value"
        assert "supervision+plan" not in text and "supervision plan" not in text
        requests = [e for e in log_events(node) if e["event"] == "http_request"]
        assert requests, f"{node.node} logged no request events"
        assert all(e.get("request_id") and "?" not in e["path"] for e in requests)
        # Neither the audit log nor any stored column holds the value in clear.
        assert not node.sql(
            "SELECT seq FROM audit_log WHERE position($1::bytea in entry) > 0", secret
        )
    assert not probation.sql(
        "SELECT pid FROM received WHERE position($1::bytea in wire) > 0"
        " OR position($1::bytea in body_box) > 0",
        secret,
    )
    assert not prison.sql("SELECT pid FROM outbox WHERE position($1::bytea in wire) > 0", secret)

    # Events raised while handling a request carry that request's id, also when
    # they are logged by the audit writer inside the transaction.
    for node, name, paths in (
        (prison, "packet_queued", {"/api/v1/packets"}),
        (probation, "packet_received", {"/federation/v1/packets", "/federation/v1/packets:batch"}),
    ):
        events = log_events(node)
        (event,) = [e for e in events if e["event"] == name and e.get("pid") == pid]
        request_ids = {
            e["request_id"] for e in events if e["event"] == "http_request" and e["path"] in paths
        }
        assert event.get("request_id") in request_ids, event


def test_health_readiness_and_metrics_follow_traffic(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    assert prison.get("/healthz") == (200, {"status": "ok"})
    assert prison.get("/readyz") == (
        200,
        {
            "ready": True,
            "checks": {"database": True, "keys": True, "budget": True, "audit_chain": True},
        },
    )
    with urllib.request.urlopen(prison.url + "/metrics", timeout=10) as resp:
        assert resp.headers.get_content_type() == "text/plain"
    sent_before = metrics(prison)

    # The receiver goes down: the packet waits in the outbox, attempts fail.
    probation.stop()
    try:
        pid = prison.send([PROBATION])
        deadline = time.monotonic() + 20
        while prison.packet(pid)["deliveries"][0]["attempts"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        waiting = metrics(prison)
        assert metric(waiting, "handover_outbox_depth") >= 1
        (row,) = prison.sql("SELECT count(*) AS n FROM deliveries WHERE status = 'pending'")
        assert metric(waiting, "handover_outbox_depth") == row["n"]
        name = "handover_delivery_attempts_total"
        assert metric(waiting, name, outcome="network_error") > metric(
            sent_before, name, outcome="network_error"
        )
    finally:
        probation.start()
    assert prison.wait_delivered(pid, timeout=60)["deliveries"][0]["status"] == "delivered"

    sent_after, recv_after = metrics(prison), metrics(probation)
    assert metric(sent_after, "handover_outbox_depth") == 0
    for name, labels in (
        ("handover_packets_sent_total", {"schema": RELEASE_NOTICE}),
        ("handover_delivery_attempts_total", {"outcome": "accepted"}),
        ("handover_deliveries_finished_total", {"status": "delivered"}),
        ("handover_submit_seconds_count", {}),
        ("handover_delivery_seconds_count", {}),
    ):
        assert metric(sent_after, name, **labels) > metric(sent_before, name, **labels), name
    # The receiver restarted (its counters start again): this packet is counted.
    assert metric(recv_after, "handover_packets_received_total", status="accepted") >= 1
    assert metric(recv_after, "handover_receive_seconds_count") >= 1
    assert metric(recv_after, "handover_receive_seconds_bucket", le="+Inf") == metric(
        recv_after, "handover_receive_seconds_count"
    )
    # Histograms are cumulative.
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in sent_after.items()
        if name == "handover_submit_seconds_bucket"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    # Invalid packets are counted by stage (never by reason: an oracle for pins).
    name = "handover_packets_invalid_total"
    before = metric(recv_after, name, stage="unauthenticated")
    assert post_wire(probation, b'{"hp1":') == (400, INVALID)
    after = metric(metrics(probation), name, stage="unauthenticated")
    assert after == before + 1


# --- request limits -----------------------------------------------------------------------------


def test_oversized_packet_request_is_413(fed: Federation) -> None:
    probation = fed[PROBATION]
    # Exactly at the limit the body is read (and refused as a packet); one byte more is 413.
    assert post_wire(probation, b" " * MAX_REQUEST_BYTES) == (400, INVALID)
    status, answer = post_wire(probation, b" " * (MAX_REQUEST_BYTES + 1))
    assert status == 413, answer

    # Without a Content-Length (chunked), the limit holds while reading.
    def chunks() -> Iterator[bytes]:
        block = b" " * (1024 * 1024)
        for _ in range(23):
            yield block

    status, raw = probation.request(
        "POST",
        "/federation/v1/packets",
        chunks(),  # type: ignore[arg-type]
        {"Content-Type": MEDIA_TYPE},
    )
    assert status == 413, raw


def test_wrong_content_type_is_415(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    identity = keystore.load_keys(prison.dir / "keys").identity()
    sealed = seal_offline(identity, keyset_of(probation))
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
    ):
        assert post_wire(probation, sealed.wire, content_type)[0] == 415, content_type
    assert not probation.sql("SELECT 1 FROM received WHERE pid = $1", sealed.pid)
    # Both media types of the spec are accepted.
    assert post_wire(probation, sealed.wire, "application/json")[0] == 200
    again = seal_offline(identity, keyset_of(probation))
    assert post_wire(probation, again.wire, MEDIA_TYPE)[0] == 200
