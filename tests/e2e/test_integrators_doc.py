"""docs/integrators.md is true: its command block runs as written against two
real nodes (a prison and an exit organisation, real HTTP), and the CLI's
integrator commands (`cases new-ref`, `packets list`, `cases owed`,
`audit list`) give the same answers as the local API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation import ROOT, SRC, Federation, cli_env, run_cli
from test_openapi import check_answer

PRISON, EXIT = "prison.example", "exit.example"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(
        tmp_path_factory.mktemp("integrators"), [(PRISON, "prison"), (EXIT, "exit")]
    )
    federation.start()
    yield federation
    federation.stop()


def doc_script() -> str:
    text = (ROOT / "docs" / "integrators.md").read_text("utf-8")
    block = re.search(
        r"<!-- integrator:start -->\n```sh\n(.*?)```\n<!-- integrator:end -->", text, re.S
    )
    assert block is not None, "docs/integrators.md lost its command block"
    return block.group(1)


def test_the_integrators_path_runs_as_written(fed: Federation, tmp_path: Path) -> None:
    prison, exit_org = fed[PRISON], fed[EXIT]
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env |= {
        "API": prison.url,
        "TOKEN": prison.tokens["caseworker"],
        "AUDITOR_TOKEN": prison.tokens["auditor"],
        "EXIT_API": exit_org.url,
        "EXIT_TOKEN": exit_org.tokens["caseworker"],
    }
    script = doc_script() + '\necho "CASE=$CASE PID=$PID"\n'
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"the block failed:\n{proc.stdout}\n{proc.stderr}"
    found = re.search(r"^CASE=(HC-[0-9A-Z]{26}) PID=(\S{22})$", proc.stdout, re.M)
    assert found is not None, proc.stdout
    case, pid = found.groups()
    assert proc.stdout.count("true") >= 5  # every `jq -e` check printed true
    served = (tmp_path / "openapi.yaml").read_bytes()
    assert served == (ROOT / "schemas" / "openapi.yaml").read_bytes()

    # The CLI's integrator commands give the same answers.
    prison_env = cli_env(HANDOVER_TOKEN=prison.tokens["caseworker"])
    out = run_cli("packets", "list", "--dir", str(prison.dir), "--case", case, env=prison_env)
    assert [i["pid"] for i in json.loads(out.stdout)["items"]] == [pid]
    exit_env = cli_env(HANDOVER_TOKEN=exit_org.tokens["caseworker"])
    out = run_cli("cases", "owed", "--dir", str(exit_org.dir), env=exit_env)
    (owed,) = [i for i in json.loads(out.stdout)["items"] if i["pid"] == pid]
    assert (owed["to"], owed["case_ref"]) == (PRISON, case)
    auditor_env = cli_env(HANDOVER_TOKEN=prison.tokens["auditor"])
    out = run_cli(
        "audit",
        "list",
        "--dir",
        str(prison.dir),
        "--case",
        case,
        "--op",
        "disclosure",
        env=auditor_env,
    )
    (entry,) = json.loads(out.stdout)["entries"]
    assert (entry["entry"]["pid"], entry["entry"]["operator"]) == (pid, "caseworker-1")
    out = run_cli(
        "audit", "list", "--dir", str(prison.dir), "--operator", "nobody", env=auditor_env
    )
    assert json.loads(out.stdout)["entries"] == []

    # The real answers fit the documented responses.
    for method, template, url, node, role in [
        ("GET", "/api/v1/packets", f"/api/v1/packets?case={case}", prison, "caseworker"),
        ("GET", "/api/v1/packets", "/api/v1/packets?after=x", prison, "caseworker"),
        ("GET", "/api/v1/owed", "/api/v1/owed", exit_org, "caseworker"),
        ("GET", "/api/v1/owed", "/api/v1/owed", exit_org, "auditor"),
        (
            "GET",
            "/api/v1/audit",
            "/api/v1/audit?operator=caseworker-1&since=2026-01-01",
            prison,
            "auditor",
        ),
        ("GET", "/api/v1/audit", "/api/v1/audit?until=later", prison, "auditor"),
    ]:
        check_answer(method, template, *node.api(method, url, role=role))
