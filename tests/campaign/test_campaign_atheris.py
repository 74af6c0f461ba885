"""Coverage-guided fuzzing with atheris (libFuzzer), one subprocess per target.

The same targets and properties as test_campaign_fuzz.py (campaign_fuzz.py),
driven by libFuzzer's coverage feedback from the valid inputs in
campaign_fuzz.SEEDS. Bounded by CAMPAIGN_ATHERIS_RUNS runs (2,000 under
`make test`, 100,000 under `make soak`) and a time cap; seeded (-seed=1).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from campaign_budget import ATHERIS_RUNS, report
from campaign_fuzz import BYTE_TARGETS

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"


@pytest.mark.parametrize("target", sorted(BYTE_TARGETS))
def test_atheris(target: str, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    # At soak size the cap is generous; a run that hits it still reports its count.
    max_time = max(60, ATHERIS_RUNS // 50)
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "atheris_fuzz.py"),
            target,
            str(tmp_path / "corpus"),
            f"-runs={ATHERIS_RUNS}",
            "-seed=1",
            "-max_len=16384",
            "-timeout=20",
            "-rss_limit_mb=2048",
            f"-max_total_time={max_time}",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=max_time + 120,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    crashes = sorted(p.name for p in artifacts.iterdir())
    output = proc.stderr + proc.stdout
    assert proc.returncode == 0 and not crashes, (
        f"atheris target {target} failed (exit {proc.returncode}, artifacts {crashes}):\n"
        + output[-6000:]
    )
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    executed = int(runs.group(1)) if runs else -1
    report(f"atheris {target}: {executed} runs in {elapsed:.1f} s (-runs={ATHERIS_RUNS})")
    assert executed >= min(ATHERIS_RUNS, 1), output[-3000:]
