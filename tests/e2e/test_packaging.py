"""A plain, non-editable `pip install .` carries the schemas, the default policy
and the migrations, and finds them at run time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from federation import ROOT


def test_wheel_installs_schemas_policy_and_migrations(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("handover-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    schema_files = {p.name for p in (ROOT / "schemas").glob("*.v1.json")}
    # Ten packet types of DOMAIN.md and the rectification request (issue 16).
    assert len(schema_files) == 11
    assert {f"handover/schemas/{n}" for n in schema_files} <= names
    assert "handover/workflow/default_policy.json" in names
    assert any(n.startswith("handover/store/migrations/") and n.endswith(".sql") for n in names)
    # The web interface's templates and stylesheet.
    assert "handover/web/ui/templates/base.html" in names
    assert "handover/web/ui/static/handover.css" in names
    assert "handover/protocol/eff_short_wordlist.txt" in names  # pairing codes

    # Installed somewhere else and imported from there (not from src/), the
    # registry, the policy and the migrations are found.
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    probe = (
        "import json, handover, handover.workflow.schemas as s, handover.workflow.policy as p,"
        " handover.store.db as d, handover.protocol.pairing as w\n"
        "print(json.dumps({'file': handover.__file__, 'ids': s.default_registry().ids(),"
        " 'policy': p.Policy.load().source, 'migrations': [m[1] for m in d.migrations()],"
        " 'words': len(w.wordlist())}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["file"].startswith(str(target))
    assert len(found["ids"]) == len(schema_files) and "handover/release-notice/1" in found["ids"]
    assert found["policy"].startswith(str(target))
    assert found["migrations"][0] == "001_initial.sql"
    assert found["words"] == 1295
