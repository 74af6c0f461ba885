"""`handover.client.Client`, the integrators' client, against real node processes
(`handover serve`, real HTTP): submit, wait for the delivery, list the inbox and
read a body on the other side, cases and overdue items; refusals raise
`ApiError` with the node's error code."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from federation import RELEASE_NOTICE, ROOT, Federation, example
from handover.client import ApiError, Client, is_pending

PRISON, PROBATION = "prison.example", "probation.example"
WHY = "release planning for the shared case"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(
        tmp_path_factory.mktemp("client"), [(PRISON, "prison"), (PROBATION, "probation")]
    )
    federation.start(roles=("caseworker",))
    yield federation
    federation.stop()


def client(fed: Federation, node: str) -> Client:
    return Client(fed[node].url, fed[node].tokens["caseworker"])


def test_submit_follow_and_read_on_the_other_side(fed: Federation) -> None:
    prison, probation = client(fed, PRISON), client(fed, PROBATION)
    body = example(RELEASE_NOTICE)
    sent = prison.submit([PROBATION], RELEASE_NOTICE, body, WHY)
    assert len(sent) == 1 and sent[0]["to"] == [PROBATION]
    pid = sent[0]["pid"]

    status = prison.wait(pid, timeout=30)
    assert not is_pending(status)
    assert status["pid"] == pid and status["case_ref"] == body["case_ref"]
    assert [(d["node"], d["status"]) for d in status["deliveries"]] == [(PROBATION, "delivered")]
    assert status["deliveries"][0]["receipt"] is not None

    page = probation.inbox(case=body["case_ref"], limit=10)
    assert [item["pid"] for item in page["items"]] == [pid]
    assert page["items"][0]["sender"] == PRISON
    packet = probation.read(pid, "preparing the supervision plan")
    assert packet["body"] == body and packet["sender"] == PRISON

    assert body["case_ref"] in [c["case_ref"] for c in prison.cases()]
    case = probation.case(body["case_ref"])
    assert [r["pid"] for r in case["received"]] == [pid]
    assert isinstance(prison.overdue(), list)


def test_refusals_raise_api_errors_with_the_node_code(fed: Federation) -> None:
    prison = client(fed, PRISON)
    with pytest.raises(ApiError) as caught:
        prison.submit([PROBATION], RELEASE_NOTICE, {"case_ref": "not a body"}, WHY)
    assert caught.value.status == 422 and caught.value.code == "schema_invalid"

    with pytest.raises(ApiError) as caught:
        prison.packet("AAAAAAAAAAAAAAAAAAAAAA")
    assert caught.value.code == "not_found"

    with pytest.raises(ApiError) as caught:
        Client(fed[PRISON].url, "hov_not-a-token").inbox()
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    # The plain call answers instead of raising.
    assert Client(fed[PRISON].url, "hov_not-a-token").get("/api/v1/inbox").status == 401


def test_the_integrators_example_runs_as_written(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/integrators.md, section "Python client": its example against a real node."""
    text = (ROOT / "docs" / "integrators.md").read_text("utf-8")
    section = text[text.index("## Python client") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "docs/integrators.md lost the client example"
    source = code.group(1).replace("http://127.0.0.1:8481", fed[PRISON].url)
    monkeypatch.setenv("HANDOVER_TOKEN", fed[PRISON].tokens["caseworker"])
    names: dict[str, object] = {"release_notice": example(RELEASE_NOTICE)}
    exec(compile(source, "integrators.md", "exec"), names)
    assert names["status"]["deliveries"][0]["status"] == "delivered"  # type: ignore[index]
