"""`make demo` (cli/demo.py over cli/harness.py): three real nodes, four
handovers, every delivery receipted and every audit log witnessed, and every
node stopped cleanly at the end; with --keep, running until Ctrl-C."""

from __future__ import annotations

import http.cookiejar
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from handover.cli.harness import cli_env

NODES = ("prison.example", "probation.example", "exit.example")


def test_the_demo_walks_a_handover_and_ends_cleanly(tmp_path: Path) -> None:
    base = tmp_path / "demo-data"
    proc = subprocess.run(
        [sys.executable, "-m", "handover.cli.demo"],
        env=cli_env(HANDOVER_DEMO_DIR=str(base)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert lines[0] == f"handover demo: three agencies under {base}"
    assert "demo completed: every packet delivered, receipted and witnessed" in lines
    # It ends with what to do next: each web interface, a sign-in, an API token, --keep.
    after = lines[lines.index("What next:") + 1 :]
    for node in NODES:
        assert any(node in line and line.rstrip().endswith("/ui/") for line in after), node
    assert sum("sign in as officer with password " in line for line in after) == 3
    assert sum("API token (Authorization: Bearer) hov_" in line for line in after) == 3
    assert after[-1].endswith("to keep them running: make demo ARGS=--keep")
    steps = [line for line in lines if re.match(r"^\d\. ", line)]
    assert [s.split(" ")[1] for s in steps] == [
        "release-notice",
        "consent-record",
        "condition-update",
        "care-acknowledgement",
        "audit",
    ]
    deliveries = [line for line in lines if line.startswith("    -> ")]
    assert len(deliveries) == 8
    assert all(" delivered attempts=" in d and " receipt rid=" in d for d in deliveries)
    assert sum(" entries ok; peers: " in line for line in lines) == 3
    for node in NODES:
        assert "node_stopping" in (base / node / "node.log").read_text("utf-8")


def test_demo_keep_leaves_the_federation_running_until_ctrl_c(tmp_path: Path) -> None:
    """`make demo ARGS=--keep`: the printed sign-in works in the web interface
    while the demo waits; Ctrl-C (SIGINT) then stops every node cleanly."""
    base = tmp_path / "demo-data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "handover.cli.demo", "--keep"],
        env=cli_env(HANDOVER_DEMO_DIR=str(base)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 600
        while not lines or lines[-1] != "  the federation keeps running; Ctrl-C stops it":
            assert time.monotonic() < deadline and proc.poll() is None, "\n".join(lines)
            lines.append(proc.stdout.readline().rstrip("\n"))
        after = lines[lines.index("What next:") + 1 :]
        ui = after[0].split()[-1]
        password = after[1].split()[-1]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/ui/", ui)
        # Sign in with the printed password: the form's CSRF cookie, then the POST.
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(ui + "login", timeout=30).read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        form = {"operator": "officer", "password": password, "csrf_token": token.group(1)}
        answer = opener.open(ui + "login", urllib.parse.urlencode(form).encode(), timeout=30)
        assert answer.url.endswith("/ui/inbox"), answer.url
        assert "Sign out" in answer.read().decode()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    for node in NODES:
        assert "node_stopping" in (base / node / "node.log").read_text("utf-8")
