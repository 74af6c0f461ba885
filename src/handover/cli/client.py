"""A client for a node's local API, the one the `handover` API commands use.

Case management systems and scripts may use it too::

    import os
    from handover.cli.client import LocalApi

    api = LocalApi("http://127.0.0.1:8481", token=os.environ["HANDOVER_TOKEN"])
    status, answer = api.post(
        "/api/v1/packets",
        {
            "to": ["probation.example"],
            "schema": "handover/release-notice/1",
            "body": body,
            "justification": "release planning for the shared case",
        },
    )
    if status == 202:
        pid = answer["packets"][0]["pid"]
        status, packet = api.get(f"/api/v1/packets/{pid}")

The paths, payloads and answers are those of `schemas/openapi.yaml`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from handover.protocol.errors import ConfigError


class LocalApi:
    """Blocking calls to one node's local API (`/api/v1/...`) as one operator.

    Every call returns `(HTTP status, decoded JSON answer)`, refusals
    included: the caller decides what a status means. An answer that is not
    JSON comes back as `{"error": <its first 200 characters>}`.

    Args:
        base_url: the node's URL, e.g. `http://127.0.0.1:8481`.
        token: the operator's bearer token (from `handover operators add`).
    """

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, payload: object = None) -> tuple[int, Any]:
        """Send `payload` (if not None) as JSON to `path` (with any query string).

        Raises:
            ConfigError: the node cannot be reached (the message names the URL).
        """
        # aiohttp on first use: the offline commands start faster without it.
        import aiohttp

        url = self.base_url + path
        try:
            return asyncio.run(self._request(method, url, payload))
        except (aiohttp.ClientError, OSError) as exc:
            raise ConfigError(f"cannot reach the node's API at {url}: {exc}") from exc

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(self, path: str, payload: object) -> tuple[int, Any]:
        return self.request("POST", path, payload)

    def put(self, path: str, payload: object) -> tuple[int, Any]:
        return self.request("PUT", path, payload)

    def upload_file(self, path: Path, media_type: str) -> tuple[int, Any]:
        """`POST /api/v1/attachments` with the file streamed as the body.

        Raises:
            ConfigError: the node cannot be reached, or the file cannot be read.
        """
        import aiohttp

        url = self.base_url + "/api/v1/attachments"
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": media_type,
            "Handover-Filename": quote(path.name, safe=""),
        }

        async def call() -> tuple[int, Any]:
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, data=_read_pieces(path), headers=headers) as resp,
            ):
                return resp.status, await _json(resp)

        try:
            return asyncio.run(call())
        except (aiohttp.ClientError, OSError) as exc:
            raise ConfigError(f"cannot upload {path.name} to {url}: {exc}") from exc

    def download_file(self, path: str, target: Path) -> tuple[int, Any]:
        """GET `path` into `target` (written under a temporary name, kept only when the
        whole answer arrived with 200); on another status, the JSON answer.

        Raises:
            ConfigError: the node cannot be reached or the file cannot be written.
        """
        import aiohttp

        url = self.base_url + path
        temp = target.with_name(f".{target.name}.part")

        async def call() -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {self.token}"}
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, headers=headers) as resp,
            ):
                if resp.status != 200:
                    return resp.status, await _json(resp)
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    async for chunk in resp.content.iter_chunked(1024 * 1024):
                        out.write(chunk)
                temp.rename(target)
                return 200, {"saved": str(target)}

        try:
            return asyncio.run(call())
        except (aiohttp.ClientError, OSError) as exc:
            raise ConfigError(f"cannot download {url} to {target}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    async def _request(self, method: str, url: str, payload: object) -> tuple[int, Any]:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, json=payload, headers=headers) as resp,
        ):
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, {"error": text[:200]}


async def _read_pieces(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as src:
        while data := src.read(1024 * 1024):
            yield data


async def _json(resp: Any) -> Any:
    text = await resp.text()
    try:
        return json.loads(text)
    except ValueError:
        return {"error": text[:200]}
