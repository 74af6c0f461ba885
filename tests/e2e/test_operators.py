"""Operator lifecycle on a real node process (`handover serve`, real HTTP, the CLI
in subprocesses): `operators add` refuses an existing name, `disable`/`enable`,
`remove`, `token` (a new token; the old one ends), tokens that expire
(`--expires-days`), and refused access (401, 403) counted in /metrics and
logged with the operator and the route, never with the token.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from federation import Federation, NodeProcess, run_cli

NODE = "prison.example"
INBOX = "/api/v1/inbox"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    federation = Federation(tmp_path_factory.mktemp("operators"), [(NODE, "prison")])
    federation.start(roles=("auditor",))
    yield federation[NODE]
    federation.stop()


def operators(node: NodeProcess, *args: str, check: bool = True) -> tuple[int, str, str]:
    proc = run_cli("operators", *args, "--dir", str(node.dir), check=check)
    return proc.returncode, proc.stdout, proc.stderr


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def status_of(node: NodeProcess, token: str) -> tuple[int, dict[str, str]]:
    status, answer = node.api("GET", INBOX, token=token)
    return status, answer


def eventually(node: NodeProcess, token: str, status: int, timeout: float = 10) -> dict[str, str]:
    """The answer once a request with `token` gets `status` (changes reach the
    node by NOTIFY, so at once in practice)."""
    deadline = time.monotonic() + timeout
    while True:
        got, answer = status_of(node, token)
        if got == status:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"still {got} {answer}, not {status}")
        time.sleep(0.05)


def metric(node: NodeProcess, code: str, reason: str) -> float:
    status, raw = node.request("GET", "/metrics")
    assert status == 200
    found = re.search(
        rf'^handover_access_refused_total\{{code="{code}",reason="{reason}"\}} (\S+)$',
        raw.decode(),
        re.MULTILINE,
    )
    return 0.0 if found is None else float(found.group(1))


def refusals(node: NodeProcess) -> list[dict[str, object]]:
    events = []
    for line in node.log().splitlines():
        if '"access_refused"' in line:
            events.append(json.loads(line))
    return events


def test_add_refuses_an_existing_name_and_keeps_its_token(node: NodeProcess) -> None:
    _, out, _ = operators(node, "add", "casey", "--role", "caseworker")
    token = last_line(out)
    assert status_of(node, token)[0] == 200

    code, out, err = operators(node, "add", "casey", "--role", "admin", check=False)
    assert code == 1 and out == ""
    assert "an operator named casey exists" in err and "operators token casey" in err
    assert status_of(node, token)[0] == 200  # the first token still works
    _, listed, _ = operators(node, "list")
    casey = next(o for o in json.loads(listed) if o["name"] == "casey")
    assert casey["role"] == "caseworker" and casey["expires_at"] is None


def test_disable_and_enable_take_effect_on_the_running_node(node: NodeProcess) -> None:
    token = last_line(operators(node, "add", "dana", "--role", "caseworker")[1])
    assert status_of(node, token)[0] == 200  # cached by the node now
    before = metric(node, "unauthorized", "disabled")

    _, out, _ = operators(node, "disable", "dana")
    assert json.loads(out) == {"operator": "dana", "disabled": True}
    answer = eventually(node, token, 401)
    assert answer["error"] == "unauthorized" and "disabled" in answer["message"]
    assert metric(node, "unauthorized", "disabled") == before + 1

    operators(node, "enable", "dana")
    eventually(node, token, 200)

    code, _, err = operators(node, "disable", "nobody", check=False)
    assert code == 1 and "there is no operator named nobody" in err


def test_a_new_token_ends_the_old_one(node: NodeProcess) -> None:
    old = last_line(operators(node, "add", "erin", "--role", "caseworker")[1])
    assert status_of(node, old)[0] == 200
    _, out, _ = operators(node, "token", "erin")
    new = last_line(out)
    assert new.startswith("hov_") and new != old
    assert "the old token no longer works" in out
    eventually(node, old, 401)
    assert status_of(node, new)[0] == 200

    code, _, err = operators(node, "token", "nobody", check=False)
    assert code == 1 and "no operator named nobody" in err


def test_remove_ends_access_and_says_when_there_is_none(node: NodeProcess) -> None:
    token = last_line(operators(node, "add", "finn", "--role", "caseworker")[1])
    assert status_of(node, token)[0] == 200
    _, out, _ = operators(node, "remove", "finn")
    assert json.loads(out) == {"operator": "finn", "removed": True}
    assert eventually(node, token, 401)["message"] == "the bearer token is not valid"
    assert "finn" not in [o["name"] for o in json.loads(operators(node, "list")[1])]
    code, _, err = operators(node, "remove", "finn", check=False)
    assert code == 1 and "no operator named finn" in err


def test_tokens_expire(node: NodeProcess) -> None:
    # 0.0001 days is 8.64 seconds: long enough to be used first on a busy machine.
    before = time.time() * 1000
    _, out, _ = operators(node, "add", "gail", "--role", "caseworker", "--expires-days", "0.0001")
    after = time.time() * 1000
    token = last_line(out)
    assert "token expires: 20" in out  # an ISO 8601 time, not "never"
    gail = next(o for o in json.loads(operators(node, "list")[1]) if o["name"] == "gail")
    assert before + 8_640 <= gail["expires_at"] <= after + 8_640
    if time.time() * 1000 < gail["expires_at"] - 1000:
        assert status_of(node, token)[0] == 200
    answer = eventually(node, token, 401, timeout=60)
    assert "expired" in answer["message"] and "operators token NAME" in answer["message"]
    assert time.time() * 1000 >= gail["expires_at"]
    gail = next(o for o in json.loads(operators(node, "list")[1]) if o["name"] == "gail")
    assert gail["expired"] is True

    # A new token with its own expiry works again.
    _, out, _ = operators(node, "token", "gail", "--expires-days", "30")
    fresh = last_line(out)
    assert status_of(node, fresh)[0] == 200
    gail = next(o for o in json.loads(operators(node, "list")[1]) if o["name"] == "gail")
    assert gail["expired"] is False
    assert gail["expires_at"] > (time.time() + 29 * 86400) * 1000

    for bad in ("0", "-1", "4000"):
        code, _, err = operators(node, "token", "gail", "--expires-days", bad, check=False)
        assert code == 1 and "--expires-days must be over 0" in err


def test_refused_access_is_counted_and_logged_without_the_token(node: NodeProcess) -> None:
    token = last_line(operators(node, "add", "hana", "--role", "caseworker")[1])
    missing = metric(node, "unauthorized", "missing")
    unknown = metric(node, "unauthorized", "unknown")
    forbidden = metric(node, "forbidden", "role")

    assert node.api("GET", INBOX, token="")[0] == 401
    assert node.api("GET", INBOX, token="hov_not-a-token-of-anyone")[0] == 401
    assert node.api("GET", "/api/v1/audit", token=token)[0] == 403  # a caseworker

    assert metric(node, "unauthorized", "missing") == missing + 1
    assert metric(node, "unauthorized", "unknown") == unknown + 1
    assert metric(node, "forbidden", "role") == forbidden + 1

    logged = refusals(node)
    assert {
        "error": "forbidden",
        "reason": "role",
        "route": "/api/v1/audit",
        "operator": "hana",
    }.items() <= next(e for e in logged if e.get("operator") == "hana").items()
    assert any(e["reason"] == "unknown" and e["route"] == INBOX for e in logged)
    assert any(e["reason"] == "disabled" and e.get("operator") == "dana" for e in logged)
    log = node.log()
    assert token not in log and "hov_not-a-token-of-anyone" not in log
