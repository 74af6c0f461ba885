"""CLI errors that say what to do (issue 12 item 7) and minting case
references (item 13): a flag typo shows the subcommand's usage, a missing node
directory asks for `--dir` or `--api` (not `handover init`), refusals name the
CLI's flags rather than query parameters, and `cases new-ref` mints references
the schemas accept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from handover.cli import api_commands
from handover.cli.main import main
from handover.workflow.case_refs import CASE_REF_RE, new_case_ref
from handover.workflow.schemas import default_registry

PID = "Xq3vT0_aB9-cDeFgHiJkLm"


def test_a_flag_typo_shows_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["send", "--to", "x", "--schema", "s", "--body", "b", "--justification", "j"]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--pid-onyl"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: handover send ")
    assert "handover send: error: unrecognized arguments: --pid-onyl" in err
    assert "COMMAND" not in err  # not the top level's usage


def test_a_typo_two_levels_down_shows_that_level(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["audit", "list", "--opertor", "casey"])
    err = capsys.readouterr().err
    assert err.startswith("usage: handover audit list ")
    assert "--operator OPERATOR" in err and "unrecognized arguments: --opertor casey" in err


def test_a_missing_node_directory_asks_for_dir_or_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inbox", "--dir", str(tmp_path), "--token", "hov_t"]) == 1
    err = capsys.readouterr().err
    assert "give --dir NODE_DIR" in err and "--api URL" in err
    assert "handover init" not in err


def test_reading_a_body_without_justification_names_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["inbox", PID, "--api", "http://127.0.0.1:9", "--token", "hov_t"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--justification TEXT" in err and "query parameter" not in err


def test_a_refusal_naming_a_query_parameter_is_said_in_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    answer = {
        "error": "justification_required",
        "message": "reading a body needs a justification: query parameter 'justification'",
    }
    assert api_commands._answer(400, answer) == 1
    err = capsys.readouterr().err
    assert "this needs --justification TEXT" in err and "query parameter" not in err
    assert api_commands._answer(403, {"error": "forbidden", "message": "role x may not y"}) == 1
    assert "role x may not y" in capsys.readouterr().err


def test_cases_new_ref_mints_references_the_schemas_accept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["cases", "new-ref", "--count", "5"]) == 0
    refs = capsys.readouterr().out.split()
    assert len(refs) == len(set(refs)) == 5
    registry = default_registry()
    body = registry.examples("handover/release-notice/1")[0]
    for ref in refs:
        assert CASE_REF_RE.fullmatch(ref), ref
        registry.validate("handover/release-notice/1", {**body, "case_ref": ref})


def test_case_references_sort_by_when_they_were_minted() -> None:
    earlier, later = new_case_ref(now=1_765_000_000_000), new_case_ref(now=1_765_000_000_001)
    assert earlier < later
    assert earlier[:13] == later[:12] + earlier[12]  # same leading time characters
    assert re.fullmatch(r"HC-[0-9A-HJKMNP-TV-Z]{26}", earlier)
    with pytest.raises(ValueError, match="2\\^48"):
        new_case_ref(now=2**48)
