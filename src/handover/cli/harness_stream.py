"""Large bodies to and from harness nodes without holding them: the attachment tests
and `make bench ARGS=--attachments` stream random files through the local API and
read the node processes' peak memory.

    sent = upload_random(node, token, 64 * MIB, "report.pdf")   # (status, answer, sha256)
    got = download_sha256(node, token, path)                    # (status, sha256, bytes)
    peak_rss(node.proc.pid)                                     # bytes (VmHWM)
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

MIB = 1024 * 1024
PIECE = MIB


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)


def random_pieces(size: int, digest: Any, seed: int | None = None) -> Iterator[bytes]:
    """`size` random bytes in 1 MiB pieces, fed to `digest` on the way; with a
    `seed`, the same bytes every time (not secret: for comparing two uploads)."""
    rng = None if seed is None else random.Random(seed)  # noqa: S311 - test data
    left = size
    while left > 0:
        n = min(PIECE, left)
        piece = os.urandom(n) if rng is None else rng.randbytes(n)
        digest.update(piece)
        left -= len(piece)
        yield piece


def upload_random(
    url: str, token: str, size: int, name: str, media_type: str = "application/pdf",
    timeout: float = 600, *, seed: int | None = None, path: str = "/api/v1/attachments",
) -> tuple[int, Any, str]:  # fmt: skip
    """POST `path` (default the local API's attachments) with `size` random bytes,
    chunked; (status, answer, sha256)."""
    digest = hashlib.sha256()
    conn = _connection(url, timeout)
    try:
        conn.request(
            "POST",
            path,
            body=random_pieces(size, digest, seed),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": media_type,
                "Handover-Filename": quote(name, safe=""),
            },
            encode_chunked=True,
        )
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"error": raw[:200].decode("utf-8", "replace")}
    return resp.status, answer, digest.hexdigest()


def download_sha256(
    url: str, token: str, path: str, timeout: float = 600
) -> tuple[int, str, int, dict[str, str]]:
    """GET `path`, hashing the body as it arrives; (status, sha256, bytes, headers)."""
    digest = hashlib.sha256()
    total = 0
    conn = _connection(url, timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        while piece := resp.read(PIECE):
            digest.update(piece)
            total += len(piece)
        headers = dict(resp.getheaders())
    finally:
        conn.close()
    return resp.status, digest.hexdigest(), total, headers


def peak_rss(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM), in bytes; 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0
