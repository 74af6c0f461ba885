"""The README's tour is copy-pasteable: this runs its command block as written
(only the two ports are swapped for free ones, so parallel runs cannot clash)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from federation import ROOT, free_port


def tour_script() -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    block = re.search(r"<!-- tour:start -->\n```sh\n(.*?)```\n<!-- tour:end -->", text, re.S)
    assert block is not None, "README.md lost its tour block"
    return block.group(1)


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    script = tour_script()
    for port in ("8481", "8482"):
        assert port in script
        script = script.replace(port, str(free_port()))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    env["HANDOVER_LOG_FORMAT"] = "json"
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
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
        assert "node_stopping" in (tmp_path / log).read_text()
