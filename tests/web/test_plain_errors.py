"""Failures reaching a peer, in plain words (web/transport.py `plain_error`), with
real sockets: a port nobody listens on, a server that hangs up, one that never
answers. What `peers list`, `status` and `audit verify` show comes from here."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import aiohttp
import pytest

from handover.cli.harness import free_port
from handover.node.errors import TransportError
from handover.web.transport import HttpTransport, plain_error

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def hangs_up() -> Iterator[str]:
    """A server that accepts each connection and closes it at once."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def silent() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


async def failure(url: str, timeout: float = 5.0) -> BaseException:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url + "/.well-known/handover/keyset") as resp,
        ):
            await resp.read()
    except Exception as exc:
        return exc
    raise AssertionError("the request did not fail")


async def test_a_refused_connection_says_so() -> None:
    exc = await failure(f"http://127.0.0.1:{free_port()}")
    assert type(exc).__name__ == "ClientConnectorError"
    assert plain_error(exc) == "connection refused"


async def test_a_peer_that_hangs_up_says_so(hangs_up: str) -> None:
    assert plain_error(await failure(hangs_up)) == "connection closed by the peer"


async def test_a_peer_that_never_answers_timed_out(silent: str) -> None:
    assert plain_error(await failure(silent, timeout=0.3)) == "timed out"


async def test_anything_else_is_still_words() -> None:
    assert plain_error(ValueError("x")) == "the request failed"
    assert plain_error(ConnectionResetError(104, "reset")) == "connection reset by the peer"
    assert plain_error(OSError("?")) == "cannot connect"


async def test_the_transport_error_names_the_url_and_the_plain_failure() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    transport = HttpTransport(timeout_s=5)
    try:
        with pytest.raises(TransportError) as caught:
            await transport.fetch_keyset(url)
        with pytest.raises(TransportError) as posted:
            await transport.post_packet(url, b"{}")
    finally:
        await transport.close()
    assert str(caught.value) == f"GET {url}/.well-known/handover/keyset failed: connection refused"
    assert str(posted.value).endswith("failed: connection refused")
