"""deploy/systemd/handover@.service: one hardened unit per node directory, checked by
`systemd-analyze verify` and scored by `systemd-analyze security --offline`."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_support import DEPLOY

UNIT = DEPLOY / "systemd" / "handover@.service"
MAX_EXPOSURE = 2.0  # systemd-analyze's "OK" band ends at 3.9; this unit scores 1.2


def directives() -> dict[str, list[str]]:
    """Service-section directives, every value of each (systemd allows repeats)."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        name, _, value = line.partition("=")
        values.setdefault(f"{section}.{name}", []).append(value)
    return values


def test_unit_is_hardened_as_issue_10_asks() -> None:
    unit = directives()
    assert unit["Service.ExecStart"] == [
        "/opt/handover/bin/handover serve --dir /var/lib/handover/%i"
    ]
    assert unit["Service.User"] == ["handover"]
    assert unit["Service.NoNewPrivileges"] == ["yes"]
    assert unit["Service.ProtectSystem"] == ["strict"]
    assert unit["Service.PrivateTmp"] == ["yes"]
    # The node directory is the only persistent place it may write.
    assert unit["Service.ReadWritePaths"] == ["/var/lib/handover/%i"]
    assert unit["Service.StateDirectory"] == ["handover/%i"]
    assert unit["Service.CapabilityBoundingSet"] == [""]
    assert unit["Install.WantedBy"] == ["multi-user.target"]
    sysusers = (DEPLOY / "systemd" / "handover.sysusers.conf").read_text("utf-8")
    assert re.search(r"^u handover - .* /var/lib/handover /usr/sbin/nologin$", sysusers, re.M)


def test_unit_parses_as_ini() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text("utf-8"))
    assert parser.sections() == ["Unit", "Service", "Install"]


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed")
    return found


def instance(tmp_path: Path, text: str) -> Path:
    """The unit as instance handover@prison.service, its binary swapped for one that
    exists here (verify checks that ExecStart is executable)."""
    path = tmp_path / "handover@prison.service"
    path.write_text(text.replace("/opt/handover/bin/handover", "/bin/true"))
    return path


def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    run = subprocess.run(
        [analyze(), "verify", str(instance(tmp_path, UNIT.read_text("utf-8")))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and run.stdout + run.stderr == "", run.stdout + run.stderr


def test_systemd_analyze_verify_reports_a_misspelt_directive(tmp_path: Path) -> None:
    text = UNIT.read_text("utf-8").replace("PrivateTmp=yes", "PrivateTemp=yes")
    run = subprocess.run(
        [analyze(), "verify", str(instance(tmp_path, text))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "PrivateTemp" in run.stdout + run.stderr


def test_exposure_score_is_low(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            analyze(),
            "security",
            "--offline=true",
            "--no-pager",
            str(instance(tmp_path, UNIT.read_text("utf-8"))),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", run.stdout + run.stderr)
    assert match, run.stdout
    assert float(match[1]) <= MAX_EXPOSURE, run.stdout
