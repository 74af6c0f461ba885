"""cli/output.py: human-readable output on a terminal, JSON otherwise.

The choice (flags, $HANDOVER_OUTPUT, whether stdout is a terminal, checked in a
real pseudo-terminal), the layouts (tables, local ISO 8601 times, receipts
summarised) and the exit codes. The real commands' human output against real
nodes: tests/e2e/test_cli_exits.py."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from datetime import datetime

import pytest

from conftest import NOW, make_node
from federation import SRC
from handover.cli import output
from handover.cli.main import build_parser
from handover.protocol.auditchain import LogPosition
from handover.protocol.canonical import b64u_decode
from handover.protocol.receipt import make_receipt


def run_in_terminal(*args: str, env: dict[str, str] | None = None) -> str:
    """`handover ARGS` with stdout on a pseudo-terminal; what it printed."""
    leader, follower = pty.openpty()
    environment = dict(os.environ, PYTHONPATH=str(SRC), **(env or {}))
    environment.pop(output.OUTPUT_ENV, None)
    environment.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "handover.cli", *args],
        stdout=follower,
        stderr=subprocess.PIPE,
        env=environment,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_a_terminal_gets_the_human_layout_and_a_pipe_json() -> None:
    on_terminal = run_in_terminal("schemas", "list")
    assert "handover/release-notice/1\n" in on_terminal
    assert not on_terminal.lstrip().startswith("[")
    assert json.loads(run_in_terminal("schemas", "list", "--json"))  # --json on a terminal
    assert json.loads(run_in_terminal("schemas", "list", env={output.OUTPUT_ENV: "json"}))
    piped = subprocess.run(
        [sys.executable, "-m", "handover.cli", "schemas", "list"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(SRC)),
        check=True,
    )
    assert "handover/release-notice/1" in json.loads(piped.stdout)
    # Data meant for files stays JSON on a terminal too.
    example = run_in_terminal("schemas", "example", "handover/release-notice/1")
    assert json.loads(example)["case_ref"]


def test_the_mode_follows_flags_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(output.OUTPUT_ENV, "human")
    output.set_mode()
    assert output.human()
    output.set_mode(json_flag=True)
    assert not output.human()
    monkeypatch.setenv(output.OUTPUT_ENV, "json")
    output.set_mode(human_flag=True)
    assert output.human()
    output.set_mode()
    assert not output.human()


def test_every_command_that_answers_has_json_and_human_flags() -> None:
    parser = build_parser()
    for argv in (
        ["status", "PID"],
        ["peers", "list", "--dir", "d"],
        ["audit", "verify", "--dir", "d"],
    ):
        args = parser.parse_args([*argv, "--json"])
        assert args.json is True and args.human is False
    assert parser.parse_args(["inbox", "--human"]).human is True
    with pytest.raises(SystemExit):  # not both
        parser.parse_args(["inbox", "--human", "--json"])
    with pytest.raises(SystemExit):  # a token line is never laid out
        parser.parse_args(["operators", "add", "--dir", "d", "x", "--role", "auditor", "--json"])


def test_times_are_local_iso_8601() -> None:
    text = output.local_time(NOW)
    assert datetime.fromisoformat(text).timestamp() * 1000 == NOW
    assert datetime.fromisoformat(text).utcoffset() is not None  # with its offset
    assert output.cell("received_at", NOW) == text
    assert output.cell("attempts", 3) == "3"  # counts are not times
    assert output.cell("exp", NOW) == text
    assert output.cell("last_error", None) == "-"
    assert output.cell("erased", False) == "no"


def test_a_receipt_is_summarised() -> None:
    probation = make_node("probation.example")
    wire = make_receipt(
        probation.identity,
        pid="AAAAAAAAAAAAAAAAAAAAAA",
        pd=b"\x00" * 64,
        to="prison.example",
        status="accepted",
        reason=None,
        log=LogPosition(7, b"\x01" * 32),
        now=NOW,
    )
    receipt = json.loads(wire)
    rid = json.loads(b64u_decode(receipt["hp1r"]))["rid"]
    summary = output.cell("receipt", receipt)
    assert summary == (f"accepted by probation.example at {output.local_time(NOW)} (receipt {rid})")
    assert output.cell("receipt", {"hp1r": "nonsense", "sig": "x"}) == (
        "signed receipt (unreadable)"
    )


def test_objects_and_lists_are_laid_out_as_tables() -> None:
    status = {
        "pid": "P1",
        "case_ref": None,
        "iat": NOW,
        "deliveries": [
            {"node": "probation.example", "status": "delivered", "attempts": 1},
            {"node": "exit.example", "status": "pending", "attempts": 4},
        ],
    }
    text = output.render_any(status)
    lines = text.splitlines()
    assert lines[0].split() == ["pid:", "P1"]
    assert lines[1].split() == ["case_ref:", "-"]
    assert lines[2] == f"iat:      {output.local_time(NOW)}"
    assert "deliveries:" in lines
    header = lines[lines.index("deliveries:") + 1]
    assert header.split() == ["NODE", "STATUS", "ATTEMPTS"]
    assert lines[-1].split() == ["exit.example", "pending", "4"]
    assert output.render_any({"items": [], "next_before": None}).endswith("items: (none)")
    assert output.table([]) == "(none)"


def test_exit_codes_are_distinct() -> None:
    codes = [output.EXIT_ERROR, output.EXIT_USAGE, output.EXIT_PENDING, output.EXIT_UNREACHABLE]
    assert codes == [1, 2, 3, 4]


def test_table_cells_are_cut_but_values_read_whole() -> None:
    long = "word " * 40
    assert long.strip() in output.render_any({"narrative": long.strip()})
    cut = output.table([{"notes": long}])
    assert cut.splitlines()[1].endswith("...") and len(cut.splitlines()[1]) == output.MAX_CELL
    page = {"items": [{"pid": "P1", "sender": "a", "iat": NOW}], "next_before": 5}
    text = output.render_page(["pid", "sender"])(page)
    assert text.splitlines() == ["PID  SENDER", "P1   a", "(more: next_before=5)"]
