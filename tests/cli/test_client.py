"""`handover.client.Client` against a stand-in HTTP server: what goes on the
wire (token, JSON, the on-behalf-of and justification headers, query strings),
answers as (status, JSON) with refusals included, typed calls raising
`ApiError` with the node's error code, and an unreachable node as one
`Unreachable` naming the URL without its query string. Against a real node:
tests/e2e/test_client_e2e.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from handover.cli.harness import free_port
from handover.client import Answer, ApiError, Client, ClientError, Unreachable
from handover.protocol.errors import HandoverError


class StandIn(BaseHTTPRequestHandler):
    """Echoes what it got as JSON; /text answers plain text, /refused a 403."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        got = {
            "method": self.command,
            "path": self.path,
            "authorization": self.headers.get("Authorization"),
            "content_type": self.headers.get("Content-Type"),
            "on_behalf_of": self.headers.get("Handover-On-Behalf-Of"),
            "justification": self.headers.get("Handover-Justification"),
            "filename": self.headers.get("Handover-Filename"),
        }
        raw_body = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Type") == "application/json":
            got["body"] = json.loads(raw_body)
        elif raw_body:
            got["raw"] = raw_body.decode()
        else:
            got["body"] = None
        status, raw = 200, json.dumps(got).encode()
        if self.path == "/text":
            raw = b"not json " * 50
        elif self.path == "/refused":
            status, raw = 403, b'{"error": "forbidden", "message": "not for you"}'
        elif self.path == "/broken":
            status, raw = 502, b"<html>bad gateway</html>"
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_calls_carry_the_token_and_json(base_url: str) -> None:
    api = Client(base_url, "hov_secret")
    status, got = api.post("/api/v1/packets", {"to": ["probation.example"]})
    assert status == 200
    assert got == {
        "method": "POST",
        "path": "/api/v1/packets",  # the base URL's trailing slash is not doubled
        "authorization": "Bearer hov_secret",
        "content_type": "application/json",
        "on_behalf_of": None,
        "justification": None,
        "filename": None,
        "body": {"to": ["probation.example"]},
    }
    assert api.get("/api/v1/inbox", limit=5, case=None).data["path"] == "/api/v1/inbox?limit=5"
    assert api.put("/api/v1/cases/HC-1/local-id", {"local_id": "L1"}).data["method"] == "PUT"


def test_on_behalf_of_and_justification_travel_in_headers(base_url: str) -> None:
    api = Client(base_url, "t", on_behalf_of="STAFF-17")
    assert api.call("GET", "/x")["on_behalf_of"] == "STAFF-17"
    got: dict[str, str] = api.read("a/b", "preparing the release plan")  # type: ignore[assignment]
    assert got["path"] == "/api/v1/inbox/a%2Fb"  # a path segment is escaped
    assert got["justification"] == "preparing the release plan"
    # Headers carry ASCII only: anything else goes in the query string.
    got = api.read("p1", "Überprüfung\nzwei Zeilen")  # type: ignore[assignment]
    assert got["justification"] is None
    assert got["path"].startswith("/api/v1/inbox/p1?justification=%C3%9Cberpr")


def test_a_refusal_is_an_answer_or_an_api_error(base_url: str) -> None:
    api = Client(base_url, "t")
    answer = api.get("/refused")
    assert answer == Answer(403, {"error": "forbidden", "message": "not for you"})
    assert not answer.ok
    with pytest.raises(ApiError) as caught:
        api.call("GET", "/refused")
    assert (caught.value.status, caught.value.code) == (403, "forbidden")
    assert caught.value.message == "not for you"
    assert str(caught.value) == "403 forbidden: not for you"
    assert isinstance(caught.value, HandoverError)  # the CLI's errors catch it
    # An error answer that is not JSON still has a code (from its status).
    with pytest.raises(ApiError, match=r"^502 bad_gateway"):
        api.call("GET", "/broken")


def test_an_answer_that_is_not_json_is_cut_into_an_error(base_url: str) -> None:
    status, answer = Client(base_url, "t").get("/text")
    assert status == 200
    assert answer == {"error": ("not json " * 50)[:200]}


def test_an_unreachable_node_names_the_url_without_the_query() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable, match=f"^cannot reach the node's API at {url}/api/v1/inbox: "):
        Client(url, "t").get("/api/v1/inbox", justification="secret reason")
    with pytest.raises(Unreachable) as caught:
        Client(url, "t").read("p1", "secret reason")
    assert "secret" not in str(caught.value)
    assert str(caught.value).endswith("connection refused (is `handover serve` running?)")


def test_files_stream_up_and_down(base_url: str, tmp_path: Path) -> None:
    api = Client(base_url, "t")
    source = tmp_path / "licence conditions.txt"
    source.write_bytes(b"report weekly\n")
    status, got = api.upload_file(source, "text/plain")
    assert status == 200
    assert got["path"] == "/api/v1/attachments" and got["content_type"] == "text/plain"
    assert got["filename"] == "licence%20conditions.txt"
    assert got["raw"] == "report weekly\n"
    with pytest.raises(ClientError, match="cannot read"):
        api.upload_file(tmp_path / "missing.txt", "text/plain")

    target = tmp_path / "saved.txt"
    assert api.download_file("/text", target) == Answer(200, {"saved": str(target)})
    assert target.read_bytes() == b"not json " * 50
    assert target.stat().st_mode & 0o777 == 0o600
    refused = tmp_path / "refused.txt"
    assert api.download_file("/refused", refused).status == 403
    assert sorted(p.name for p in tmp_path.iterdir()) == ["licence conditions.txt", "saved.txt"]
