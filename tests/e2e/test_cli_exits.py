"""What the CLI says about a peer that is down, against real node processes
(issue 12, item 9): `status --wait` exits 3 while a delivery is still pending,
`audit verify --peers` exits 4 for a peer it cannot reach and 1 for a broken log
(which outranks it), and `peers list` shows the last success and the last
failure in plain words ("connection refused", not "ClientConnectorError")."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from federation import Federation, NodeProcess, run_cli

PRISON, PROBATION = "prison.example", "probation.example"
EXIT_PENDING, EXIT_UNREACHABLE = 3, 4


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(
        tmp_path_factory.mktemp("exits"), [(PRISON, "prison"), (PROBATION, "probation")]
    )
    for node in federation.nodes.values():
        node.configure(retry_base_s=0.2, retry_max_s=1.0)
    federation.start(roles=("caseworker",))
    yield federation
    federation.stop()


def status(node: NodeProcess, pid: str, *extra: str) -> tuple[int, str, str]:
    proc = run_cli(
        "status", "--dir", str(node.dir), "--token", node.tokens["caseworker"], *extra, "--", pid,
        check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def peer(node: NodeProcess, name: str) -> dict[str, object]:
    peers = json.loads(run_cli("peers", "list", "--dir", str(node.dir)).stdout)
    found: dict[str, object] = next(p for p in peers if p["node"] == name)
    return found


def test_a_peer_that_is_down_then_back(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    first = prison.send([PROBATION])
    prison.wait_delivered(first)
    reached = peer(prison, PROBATION)
    assert isinstance(reached["last_success_at"], int)
    assert reached["last_failure"] is None

    probation.stop()
    try:
        pid = prison.send([PROBATION])
        code, out, err = status(prison, pid, "--wait", "1.5")
        assert code == EXIT_PENDING, (out, err)
        assert json.loads(out)["deliveries"][0]["status"] == "pending"
        assert f"delivery to {PROBATION} still pending after 1.5 s" in err
        assert "connection refused" in err and "ClientConnectorError" not in err
        # Without --wait, status only reports: a pending delivery is not an error.
        code, out, _ = status(prison, pid)
        assert code == 0 and json.loads(out)["deliveries"][0]["status"] == "pending"

        down = peer(prison, PROBATION)
        assert "connection refused" in str(down["last_failure"])
        assert "Error" not in str(down["last_failure"])  # no exception names
        assert isinstance(down["last_failure_at"], int)
        assert down["last_failure_at"] >= reached["last_success_at"]  # type: ignore[operator]
        human = run_cli("peers", "list", "--dir", str(prison.dir), "--human").stdout
        assert "last failure" in human and "connection refused" in human
        assert "T" in human.split("last success", 1)[1].splitlines()[0]  # an ISO 8601 time

        # Only the peer is unreachable: exit 4, and the report says so.
        proc = run_cli("audit", "verify", "--dir", str(prison.dir), "--peers", check=False)
        assert proc.returncode == EXIT_UNREACHABLE, proc.stderr
        report = json.loads(proc.stdout)
        assert report["ok"] is False and report["chain"]["ok"] is True
        (bad,) = report["peers"]
        assert bad["unreachable"] is True and "connection refused" in bad["problem"]
        assert f"peer {PROBATION} could not be reached" in proc.stderr

        # A broken own log outranks it: exit 1.
        rows = prison.sql("SELECT seq, entry FROM audit_log ORDER BY seq")
        seq, original = rows[1]["seq"], bytes(rows[1]["entry"])
        prison.sql("UPDATE audit_log SET entry = $2 WHERE seq = $1", seq, original + b" ")
        try:
            proc = run_cli("audit", "verify", "--dir", str(prison.dir), "--peers", check=False)
            assert proc.returncode == 1, proc.stderr
            assert f"audit chain broken at entry {seq}" in proc.stderr
        finally:
            prison.sql("UPDATE audit_log SET entry = $2 WHERE seq = $1", seq, original)
    finally:
        probation.start()

    code, out, err = status(prison, pid, "--wait", "60")
    assert code == 0, err
    assert json.loads(out)["deliveries"][0]["status"] == "delivered"
    # For people: the receipt summarised, times in local ISO 8601, no raw receipt.
    code, out, _ = status(prison, pid, "--human")
    assert code == 0
    assert f"accepted by {PROBATION} at 20" in out and "hp1r" not in out
    assert "DELIVERIES" not in out and "NODE" in out  # the deliveries as a table
    back = peer(prison, PROBATION)
    assert back["last_success_at"] > back["last_failure_at"]  # type: ignore[operator]
    proc = run_cli("audit", "verify", "--dir", str(prison.dir), "--peers", check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_inbox_for_people(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    pid = prison.send([PROBATION])
    prison.wait_delivered(pid)
    token = probation.tokens["caseworker"]
    listed = run_cli("inbox", "--dir", str(probation.dir), "--token", token, "--human").stdout
    header, *rows = listed.splitlines()
    assert header.split() == [
        "PID", "SENDER", "SCHEMA", "CASE_REF", "RECEIVED_AT", "ERASED", "RESTRICTED"
    ]  # fmt: skip
    assert any(row.startswith(pid) and PRISON in row for row in rows)
    read = run_cli(
        "inbox", "--dir", str(probation.dir), "--token", token, "--human",
        "--justification", "supervision plan", "--", pid,
    ).stdout  # fmt: skip
    assert f"sender:      {PRISON}" in read and "body:" in read
    assert f"accepted by {PROBATION} at 20" in read  # the receipt, summarised
