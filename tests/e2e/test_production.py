"""The production kit, run for real: TLS between nodes, mutual TLS, separate
listeners, key revocation seen by a peer, a broken audit chain keeps a node
not ready, and start-up errors that name what is wrong.

Certificates come from a test CA made on the fly (`trustme`). Nodes are real
`handover serve` processes on loopback, each with its embedded PostgreSQL.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from federation import cli_env, example, free_port, run_cli

PRISON, PROBATION, EXIT = "prison.example", "probation.example", "exit.example"
RELEASE_NOTICE = "handover/release-notice/1"
WHY = "release planning for the shared case"


class TlsNode:
    """A node with TLS on its federation listener and a separate local listener."""

    def __init__(self, base: Path, ca: trustme.CA, node: str, kind: str, *, mtls: bool) -> None:
        self.node, self.kind = node, kind
        self.dir = base / node
        self.port, self.local_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.local_url = f"http://127.0.0.1:{self.local_port}"
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert_file, key_file = base / f"{node}.crt", base / f"{node}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(cert_file), append=True)
        cert.private_key_pem.write_to_path(str(key_file))
        self.ca_file = base / "ca.pem"
        args = [
            "init", "--node", node, "--dir", str(self.dir), "--kind", kind,
            "--listen", f"127.0.0.1:{self.port}", "--local-listen", f"127.0.0.1:{self.local_port}",
            "--tls-cert", str(cert_file), "--tls-key", str(key_file),
        ]  # fmt: skip
        if mtls:
            args += ["--tls-client-ca", str(self.ca_file)]
        self.init = json.loads(run_cli(*args).stdout)
        self.fingerprint: str = self.init["fingerprint"]
        self.tokens: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = base / f"{node}.log"

    def context(self, client_cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if client_cert is not None:
            client_cert.configure_cert(context)
        return context

    def start(self, *, wait_ready: bool = True) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "handover.cli", "serve", "--dir", str(self.dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=cli_env(),
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")
            try:
                status, _ = self.fed("GET", "/readyz")
                if status == 200 or (not wait_ready and status == 503):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.node} did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.proc = None

    def fed(self, method: str, path: str, body: bytes | None = None, **kw: Any) -> tuple[int, Any]:
        """A request to the federation listener over HTTPS."""
        return _call(self.url + path, method, body, context=kw.pop("context", self.context()), **kw)

    def local(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens['caseworker']}"}
        body = None if payload is None else json.dumps(payload).encode()
        if body is not None:
            headers["Content-Type"] = "application/json"
        return _call(self.local_url + path, method, body, headers=headers)

    def pin(self, other: TlsNode) -> None:
        run_cli(
            "peers", "add", "--dir", str(self.dir), "--url", other.url,
            f"--fingerprint={other.fingerprint}", "--kind", other.kind, "--ca", str(self.ca_file),
        )  # fmt: skip

    def send(self, to: str, schema: str = RELEASE_NOTICE) -> str:
        status, answer = self.local(
            "POST",
            "/api/v1/packets",
            {"to": [to], "schema": schema, "body": example(schema),
             "justification": WHY, "minimise": True},
        )  # fmt: skip
        assert status == 202, answer
        pid: str = answer["packets"][0]["pid"]
        return pid

    def wait_final(self, pid: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, packet = self.local("GET", f"/api/v1/packets/{pid}")
            assert status == 200, packet
            if all(d["status"] != "pending" for d in packet["deliveries"]):
                return packet
            assert time.monotonic() < deadline, packet
            time.sleep(0.2)


def _call(
    url: str,
    method: str,
    body: bytes | None = None,
    *,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[trustme.CA, Path]]:
    base = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(base / "ca.pem"))
    yield authority, base


@pytest.fixture(scope="module")
def nodes(ca: tuple[trustme.CA, Path]) -> Iterator[dict[str, TlsNode]]:
    authority, base = ca
    made = {
        PRISON: TlsNode(base, authority, PRISON, "prison", mtls=False),
        PROBATION: TlsNode(base, authority, PROBATION, "probation", mtls=False),
        EXIT: TlsNode(base, authority, EXIT, "exit", mtls=True),
    }
    try:
        for node in made.values():
            node.start()
        for a, b in ((PRISON, PROBATION), (PROBATION, PRISON), (PRISON, EXIT), (EXIT, PRISON)):
            made[a].pin(made[b])
        for node in made.values():
            out = run_cli("operators", "add", "--dir", str(node.dir), "cw", "--role", "caseworker")
            node.tokens["caseworker"] = out.stdout.strip().splitlines()[-1]
        yield made
    finally:
        for node in made.values():
            node.stop()


def test_init_names_both_urls(nodes: dict[str, TlsNode]) -> None:
    prison = nodes[PRISON]
    assert prison.init["keyset_url"].startswith(f"https://127.0.0.1:{prison.port}/")
    assert prison.init["local_url"] == prison.local_url


def test_two_nodes_federate_over_tls_and_deliver_with_receipts(nodes: dict[str, TlsNode]) -> None:
    prison = nodes[PRISON]
    pid = prison.send(PROBATION)
    (delivery,) = prison.wait_final(pid)["deliveries"]
    assert delivery["status"] == "delivered" and delivery["receipt"]["hp1r"]


def test_plain_http_to_the_tls_listener_fails(nodes: dict[str, TlsNode]) -> None:
    prison = nodes[PRISON]
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{prison.port}/healthz", timeout=10)


def test_mutual_tls_refuses_packets_from_a_client_without_a_certificate(
    nodes: dict[str, TlsNode],
) -> None:
    exit_org, prison = nodes[EXIT], nodes[PRISON]
    # Public parts stay reachable without a client certificate ...
    assert exit_org.fed("GET", "/.well-known/handover/keyset")[0] == 200
    assert exit_org.fed("GET", "/readyz")[0] == 200
    # ... packets are not.
    status, answer = exit_org.fed(
        "POST",
        "/federation/v1/packets",
        b"{}",
        headers={"Content-Type": "application/vnd.handover.packet+json"},
    )
    assert (status, answer["error"]) == (403, "client_certificate_required")
    # A partner presenting a certificate from the CA delivers as usual.
    pid = prison.send(EXIT)
    (delivery,) = prison.wait_final(pid)["deliveries"]
    assert delivery["status"] == "delivered"


def test_the_local_api_and_metrics_answer_only_on_the_local_listener(
    nodes: dict[str, TlsNode],
) -> None:
    prison = nodes[PRISON]
    token = {"Authorization": f"Bearer {prison.tokens['caseworker']}"}
    assert prison.fed("GET", "/api/v1/inbox", headers=token)[0] == 404
    assert prison.fed("GET", "/metrics")[0] == 404
    assert prison.local("GET", "/api/v1/inbox")[0] == 200
    status, text = _call(prison.local_url + "/metrics", "GET")
    assert status == 200 and b"handover_packets_sent_total" in text
    # The local listener serves no federation routes.
    assert _call(prison.local_url + "/federation/v1/log/digests", "GET")[0] == 404


def test_a_revoked_key_is_seen_by_a_peer(nodes: dict[str, TlsNode]) -> None:
    prison, probation = nodes[PRISON], nodes[PROBATION]
    keyset = json.loads((probation.dir / "keys" / "keyset.json").read_text())
    old_kid = _active_signing_kid(probation)
    out = run_cli(
        "keys", "revoke", "--dir", str(probation.dir), old_kid,
        "--reason", "signing key copied to an unmanaged laptop",
    )  # fmt: skip
    assert old_kid in json.loads(out.stdout)["revoked"]
    assert json.loads((probation.dir / "keys" / "keyset.json").read_text()) != keyset
    # Probation goes on sending with its new key; prison learns the new keyset
    # (an unknown kid makes it fetch again) and sees the old key revoked.
    pid = probation.send(PRISON, "handover/condition-update/1")
    (delivery,) = probation.wait_final(pid)["deliveries"]
    assert delivery["status"] == "delivered"
    out = run_cli("peers", "list", "--dir", str(prison.dir))
    (peer,) = [p for p in json.loads(out.stdout) if p["node"] == PROBATION]
    held = _peer_keyset(prison, PROBATION)
    (entry,) = [k for k in held["keys"] if k["kid"] == old_kid]
    assert entry["status"] == "revoked" and peer["serial"] == held["serial"]


def _active_signing_kid(node: TlsNode) -> str:
    from handover.node import keystore

    return keystore.load_keys(node.dir / "keys").identity().kid


def _peer_keyset(node: TlsNode, peer: str) -> dict[str, Any]:
    from handover.protocol.canonical import b64u_decode

    out = run_cli("peers", "list", "--dir", str(node.dir))
    assert any(p["node"] == peer for p in json.loads(out.stdout))
    script = (
        "import asyncio, sys\n"
        "from handover.node.config import load_config\n"
        "from handover.store.db import Database\n"
        "async def main():\n"
        "    c = load_config(__import__('pathlib').Path(sys.argv[1]))\n"
        "    db = await Database.open(c.dsn, c.pgdata)\n"
        "    async with db.connection() as conn:\n"
        "        w = await conn.fetchval('SELECT keyset FROM peers WHERE node = $1', sys.argv[2])\n"
        "    await db.close()\n"
        "    sys.stdout.write(bytes(w).decode())\n"
        "asyncio.run(main())\n"
    )
    raw = subprocess.run(
        [sys.executable, "-c", script, str(node.dir), peer],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=True,
        timeout=60,
    ).stdout
    wire = json.loads(raw)
    keyset: dict[str, Any] = json.loads(b64u_decode(wire["hp1k"]))
    return keyset


def test_a_node_with_an_edited_audit_row_is_not_ready(
    ca: tuple[trustme.CA, Path], tmp_path: Path
) -> None:
    authority, base = ca
    node = TlsNode(tmp_path, authority, "prison-b.example", "prison", mtls=False)
    (tmp_path / "ca.pem").write_bytes((base / "ca.pem").read_bytes())
    node.start()
    try:
        run_cli("operators", "add", "--dir", str(node.dir), "cw", "--role", "caseworker")
    finally:
        node.stop()
    script = (
        "import asyncio, sys\n"
        "from handover.node.config import load_config\n"
        "from handover.store.db import Database\n"
        "async def main():\n"
        "    c = load_config(__import__('pathlib').Path(sys.argv[1]))\n"
        "    db = await Database.open(c.dsn, c.pgdata)\n"
        "    async with db.connection() as conn:\n"
        "        n = await conn.execute(\n"
        '            "UPDATE audit_log SET entry = convert_to(replace(convert_from(entry,'
        " 'UTF8'), 'operator_added', 'operator_removed'), 'UTF8')\"\n"
        "            \" WHERE position('operator_added'::bytea in entry) > 0\")\n"
        "        assert n == 'UPDATE 1', n\n"
        "    await db.close()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(node.dir)], env=cli_env(), check=True, timeout=60
    )
    node.start(wait_ready=False)
    try:
        status, answer = node.fed("GET", "/readyz")
        assert status == 503 and answer["checks"]["audit_chain"] is False
        status, text = _call(node.local_url + "/metrics", "GET")
        assert b"handover_audit_chain_ok 0.0" in text
        assert "audit_chain_broken" in node.log_path.read_text()
    finally:
        node.stop()


def test_a_bad_dsn_is_one_line_naming_host_port_and_database(tmp_path: Path) -> None:
    run_cli(
        "init", "--node", "dsn.example", "--dir", str(tmp_path / "n"), "--kind", "prison",
        "--dsn", "postgresql://handover:s3cret-pw@127.0.0.1:1/handover_db",
    )  # fmt: skip
    out = run_cli("serve", "--dir", str(tmp_path / "n"), check=False, timeout=90)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "127.0.0.1:1/handover_db" in lines[0]
    assert "s3cret-pw" not in out.stderr and "Traceback" not in out.stderr


def test_init_on_a_public_address_puts_the_local_api_on_loopback(tmp_path: Path) -> None:
    out = run_cli(
        "init", "--node", "pub.example", "--dir", str(tmp_path / "n"), "--kind", "exit",
        "--listen", "0.0.0.0:9443",
    )  # fmt: skip
    assert json.loads(out.stdout)["local_url"] == "http://127.0.0.1:9444"
    assert "127.0.0.1:9444" in out.stderr and "not a loopback address" in out.stderr
    assert 'local_listen = "127.0.0.1:9444"' in (tmp_path / "n" / "handover.toml").read_text()


def test_version() -> None:
    import handover

    assert run_cli("--version").stdout.strip() == f"handover {handover.__version__}"
