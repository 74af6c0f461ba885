#!/usr/bin/env python3
"""Container health check: GET /readyz on the node's federation listener.

Usage: handover-healthcheck [NODE_DIR]   (default $HANDOVER_DIR or /var/lib/handover)

Reads `listen` (or $HANDOVER_LISTEN) from NODE_DIR/handover.toml, as the node
does, and asks the node itself over loopback. When `tls_cert` is set the
listener speaks TLS: the check then skips certificate verification (it talks
to its own process) and presents `tls_client_cert`/`tls_client_key`, if set, in
case the listener asks peers for a client certificate. Exit status 0: ready;
1: not ready or unreachable; 2: no usable settings. Standard library only.
"""

from __future__ import annotations

import os
import ssl
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 4.0
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def readyz_url(directory: Path) -> tuple[str, ssl.SSLContext | None]:
    """The URL of /readyz on this node and, for a TLS listener, the context to use."""
    settings = tomllib.loads((directory / "handover.toml").read_text("utf-8"))
    listen = os.environ.get("HANDOVER_LISTEN") or settings.get("listen", "127.0.0.1:8480")
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    host = WILDCARDS.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    context = None
    scheme = "http"
    if settings.get("tls_cert"):
        scheme = "https"
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        cert, key = settings.get("tls_client_cert"), settings.get("tls_client_key")
        if cert and key:
            context.load_cert_chain(directory / cert, directory / key)
    return f"{scheme}://{host}:{port}/readyz", context


def main(argv: list[str]) -> int:
    directory = Path(
        argv[1] if len(argv) > 1 else os.environ.get("HANDOVER_DIR", "/var/lib/handover")
    )
    try:
        url, context = readyz_url(directory)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"handover-healthcheck: {directory}: {exc}", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:  # noqa: S310
            ready = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"handover-healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
