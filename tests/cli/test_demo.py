"""`make demo` (cli/demo.py over cli/harness.py): three real nodes, four
handovers, every delivery receipted and every audit log witnessed, and every
node stopped cleanly at the end."""

from __future__ import annotations

import re
import subprocess
import sys
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
