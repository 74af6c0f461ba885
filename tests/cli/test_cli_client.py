"""LocalApi (cli/client.py), the local API client of the `handover` commands,
against a stand-in HTTP server: answers come back as (status, JSON), refusals
included; an unreachable node is one ConfigError naming the URL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from handover.cli.client import LocalApi
from handover.cli.harness import free_port
from handover.protocol.errors import ConfigError


class StandIn(BaseHTTPRequestHandler):
    """Echoes what it got as JSON; /text answers plain text, /refused a 403."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        got = {
            "method": self.command,
            "path": self.path,
            "authorization": self.headers.get("Authorization"),
            "content_type": self.headers.get("Content-Type"),
            "body": json.loads(self.rfile.read(length)) if length else None,
        }
        status, raw = 200, json.dumps(got).encode()
        if self.path == "/text":
            raw = b"not json " * 50
        elif self.path == "/refused":
            status, raw = 403, b'{"error": "forbidden", "message": "not for you"}'
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
    api = LocalApi(base_url, "hov_secret")
    status, got = api.post("/api/v1/packets", {"to": ["probation.example"]})
    assert status == 200
    assert got == {
        "method": "POST",
        "path": "/api/v1/packets",  # the base URL's trailing slash is not doubled
        "authorization": "Bearer hov_secret",
        "content_type": "application/json",
        "body": {"to": ["probation.example"]},
    }
    assert api.get("/api/v1/inbox?justification=x")[1]["body"] is None
    assert api.put("/api/v1/cases/HC-1/local-id", {"local_id": "L1"})[1]["method"] == "PUT"


def test_a_refusal_is_an_answer(base_url: str) -> None:
    assert LocalApi(base_url, "t").get("/refused") == (
        403,
        {"error": "forbidden", "message": "not for you"},
    )


def test_an_answer_that_is_not_json_is_cut_into_an_error(base_url: str) -> None:
    status, answer = LocalApi(base_url, "t").get("/text")
    assert status == 200
    assert answer == {"error": ("not json " * 50)[:200]}


def test_an_unreachable_node_is_a_config_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=f"^cannot reach the node's API at {url}/api/v1/inbox: "):
        LocalApi(url, "t").get("/api/v1/inbox")
