"""The README's tour is copy-pasteable: this runs its command block as written
(only the two ports are swapped for free ones, so parallel runs cannot clash),
and once more with a packet id that begins with `-`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from federation import ROOT, SRC, free_port

SEND_STEP = "--pid-only)\n"
# One pid in 64 begins with `-`. Submitting through the local API (the same
# request `handover send` makes) until one does: at most MAX_SUBMISSIONS, so
# this step fails with probability (63/64)**2000, below 1e-13.
MAX_SUBMISSIONS = 2000
DASH_PID_SUBMITTER = """\
import json, sys
from handover.client import Client

url, token, pid, tries = sys.argv[1:]
api = Client(url, token)
body = json.load(open("release-notice.json"))
for _ in range(int(tries)):
    if pid.startswith("-"):
        print(pid)
        sys.exit(0)
    sent = api.submit(
        ["probation.example"], "handover/release-notice/1", body,
        "release planning for the shared case",
    )
    pid = sent[0]["pid"]
sys.exit(f"no pid began with - in {tries} submissions")
"""


def tour_script() -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    block = re.search(r"<!-- tour:start -->\n```sh\n(.*?)```\n<!-- tour:end -->", text, re.S)
    assert block is not None, "README.md lost its tour block"
    return block.group(1)


def free_ports(script: str) -> tuple[str, dict[str, int]]:
    ports = {}
    for port in ("8481", "8482"):
        assert port in script
        ports[port] = free_port()
        script = script.replace(port, str(ports[port]))
    return script, ports


def run_tour(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The `handover` next to this Python, running this checkout's code.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env["HANDOVER_LOG_FORMAT"] = "json"
    # In a session of its own, so that the `handover serve` jobs of a tour that
    # stopped half-way (same process group) are stopped too, not left running.
    tour = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = tour.communicate(timeout=300)
    finally:
        stop_process_group(tour)
    return subprocess.CompletedProcess(tour.args, tour.returncode, stdout, stderr)


def stop_process_group(leader: subprocess.Popen[str], timeout: float = 30) -> None:
    """Stop what is left of the tour's process group: SIGTERM (a node's clean
    stop, which also stops its PostgreSQL), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + timeout
        try:
            os.killpg(leader.pid, sig)
            while time.monotonic() < deadline:
                leader.poll()  # reap the shell, if it is still ours to wait for
                os.killpg(leader.pid, 0)
                time.sleep(0.1)
        except ProcessLookupError:
            return


def check_tour(proc: subprocess.CompletedProcess[str], cwd: Path) -> None:
    assert proc.returncode == 0, f"tour failed:\n{proc.stdout}\n{proc.stderr}"
    # The status step printed a delivered packet with a signed receipt.
    statuses = [m for m in re.finditer(r'"status": "(\w+)"', proc.stdout)]
    assert any(m.group(1) == "delivered" for m in statuses), proc.stdout
    # Reading the body printed it (the example's case reference).
    example = json.loads((ROOT / "schemas" / "release-notice.v1.json").read_text())["examples"][0]
    assert example["case_ref"] in proc.stdout
    # Both audit verifications passed (they would exit non-zero otherwise) and
    # every node shut down cleanly.
    assert proc.stdout.count('"ok": true') >= 4
    for log in ("prison.log", "probation.log"):
        assert "node_stopping" in (cwd / log).read_text()


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    script, _ = free_ports(tour_script())
    check_tour(run_tour(script, tmp_path), tmp_path)


def test_readme_tour_runs_with_a_pid_that_begins_with_a_dash(tmp_path: Path) -> None:
    """Steps 6 and 7 (`handover status`, `handover inbox`) get a pid like `-Xq3...`."""
    script, ports = free_ports(tour_script())
    assert script.count(SEND_STEP) == 1, "the tour's send step changed; update this test"
    (tmp_path / "dash_pid.py").write_text(DASH_PID_SUBMITTER, "utf-8")
    prison = f"http://127.0.0.1:{ports['8481']}"
    script = script.replace(
        SEND_STEP,
        SEND_STEP
        + f'PID=$(python dash_pid.py {prison} "$PRISON_TOKEN" "$PID" {MAX_SUBMISSIONS})\n'
        + 'echo "dash pid: $PID"\n',
    )
    proc = run_tour(script, tmp_path)
    check_tour(proc, tmp_path)
    found = re.search(r"^dash pid: (-\S+)\n", proc.stdout, re.M)
    assert found is not None, proc.stdout
    pid = found.group(1)
    # What follows: `handover status` (step 6), then `handover inbox` listing and reading (7).
    decoder, at, answers = json.JSONDecoder(), found.end(), []
    for _ in range(3):
        answer, at = decoder.raw_decode(proc.stdout, at)
        answers.append(answer)
        at = len(proc.stdout) - len(proc.stdout[at:].lstrip())
    status, inbox, read = answers
    assert status["pid"] == pid
    assert [d["status"] for d in status["deliveries"]] == ["delivered"]
    assert inbox["items"]
    assert read["pid"] == pid
