"""Parsing of the `handover` commands that take a packet id (cli/args.py).

A pid is 22 characters of base64url, so one in 64 begins with `-`: every
pid-taking command must read it as the pid wherever it stands among the
options, while real options and `--` keep working.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handover.cli.main import build_parser, main
from handover.protocol.canonical import b64u_encode

DASH_PID = "-Xq3vT0_aB9-cDeFgHiJkL"
DOUBLE_DASH_PID = "--q3vT0_aB9-cDeFgHiJkL"
PLAIN_PID = "Xq3vT0_aB9-cDeFgHiJkLm"

# Each pid-taking command: its words, and the options it needs (in pairs).
PID_COMMANDS: dict[str, tuple[list[str], list[list[str]]]] = {
    "status": (["status"], [["--dir", "prison"], ["--token", "hov_t"], ["--wait", "30"]]),
    "inbox": (
        ["inbox"],
        [["--dir", "probation"], ["--token", "hov_t"], ["--justification", "supervision plan"]],
    ),
    "reviews decide": (
        ["reviews", "decide"],
        [["--outcome", "EXTEND"], ["--justification", "still needed"], ["--dir", "prison"]],
    ),
    "reviews approve": (
        ["reviews", "approve"],
        [["--justification", "checked the request"], ["--dir", "prison"]],
    ),
    "rectify": (
        ["rectify"],
        [["--action", "ERASE"], ["--reason", "INACCURATE"], ["--justification", "wrong person"]],
    ),
    "rectifications": (["rectifications"], [["--dir", "prison"], ["--token", "hov_t"]]),
}


def commands_with_a_pid(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> set[str]:
    """Every command (as its words) that has a positional argument named pid."""
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= commands_with_a_pid(sub, (*words, name))
        elif action.dest == "pid" and not action.option_strings:
            found.add(" ".join(words))
    return found


def argvs(command: str, pid: str) -> list[list[str]]:
    """The command with `pid` before, between and after its options (in any order)."""
    words, options = PID_COMMANDS[command]
    out = []
    for order in itertools.permutations(options):
        flat = [list(pair) for pair in order]
        for at in range(len(flat) + 1):
            out.append([*words, *itertools.chain(*flat[:at]), pid, *itertools.chain(*flat[at:])])
    return out


def test_the_pid_commands_are_the_ones_tested_here() -> None:
    assert commands_with_a_pid(build_parser()) == set(PID_COMMANDS)


def after_double_dash(command: str, pid: str) -> argparse.Namespace:
    """The command parsed with `pid` after `--`, the way that always worked."""
    words, options = PID_COMMANDS[command]
    return build_parser().parse_args([*words, *itertools.chain(*options), "--", pid])


@pytest.mark.parametrize("pid", [DASH_PID, DOUBLE_DASH_PID, PLAIN_PID])
@pytest.mark.parametrize("command", sorted(PID_COMMANDS))
def test_a_pid_is_read_wherever_it_stands(command: str, pid: str) -> None:
    expected = after_double_dash(command, pid)
    assert expected.pid == pid
    parser = build_parser()
    for argv in argvs(command, pid):
        assert parser.parse_args(argv) == expected, argv


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(min_size=16, max_size=16), command=st.sampled_from(sorted(PID_COMMANDS)))
def test_every_pid_parses(raw: bytes, command: str) -> None:
    pid = b64u_encode(raw)
    assert len(pid) == 22
    words, options = PID_COMMANDS[command]
    argv = [*words, pid, *itertools.chain(*options)]
    assert build_parser().parse_args(argv).pid == pid


def test_inbox_without_a_pid_lists_and_takes_a_dash_value_for_an_option() -> None:
    args = build_parser().parse_args(["inbox", "--dir", "probation", "--token", DASH_PID])
    assert args.pid is None and args.token == DASH_PID


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--dir", "prison", DASH_PID, "--bogus"],  # an unknown option stays one
        ["status", "--dir", "prison", DASH_PID, DASH_PID[:-1]],  # not a pid: 21 characters
        ["status", "--dir", "prison", DASH_PID, DASH_PID + "x"],  # not a pid: 23 characters
        ["status", "--dir", "prison", DASH_PID, "-Xq3vT0_aB9-cDeFgHiJk!"],  # not base64url
        ["status", "--dir", "prison"],  # the pid is still required
        ["peers", "list", "--dir", "prison", DASH_PID],  # no pid in this command
    ],
)
def test_what_is_not_a_pid_is_still_refused(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_is_still_an_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["status", DASH_PID, "-h"])
    assert exc.value.code == 0
    assert "usage: handover status" in capsys.readouterr().out


def test_the_command_runs_with_a_dash_pid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past the parser: the command starts and needs the node (not a usage error, exit 2)."""
    code = main(["status", "--dir", str(tmp_path), "--token", "hov_t", DASH_PID, "--wait", "0"])
    assert code == 1
    assert capsys.readouterr().err == (
        f"handover: ConfigError: no node settings (handover.toml) in {tmp_path}: give --dir"
        " NODE_DIR (the node's directory) or --api URL (the node's local API)\n"
    )
