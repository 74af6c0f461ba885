"""`handover keys protect-root`: the root key encrypted at rest, opened with a
passphrase from a file or a systemd credential."""

from __future__ import annotations

import json
import os
from pathlib import Path

from federation import cli_env, run_cli


def test_protect_root_then_commands_need_the_passphrase(tmp_path: Path) -> None:
    node = tmp_path / "node"
    init = json.loads(
        run_cli("init", "--node", "p.example", "--dir", str(node), "--kind", "prison").stdout
    )
    secret = tmp_path / "passphrase"
    secret.write_text("a long enough passphrase\n")
    os.chmod(secret, 0o600)
    out = run_cli("keys", "protect-root", "--dir", str(node), "--passphrase-file", str(secret))
    assert json.loads(out.stdout)["encrypted"] is True
    assert "a long enough" not in (node / "keys" / "root.key").read_text()

    refused = run_cli("keys", "fingerprint", "--dir", str(node), check=False)
    assert refused.returncode == 1 and "is encrypted" in refused.stderr
    env = cli_env(HANDOVER_ROOT_PASSPHRASE_FILE=str(secret))
    import subprocess
    import sys

    opened = subprocess.run(
        [sys.executable, "-m", "handover.cli", "keys", "fingerprint", "--dir", str(node)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert opened.stdout.strip() == init["fingerprint"]
