"""HTTP between nodes (PROTOCOL.md section 6), client side.

The only place that makes outbound requests. aiohttp errors become
:class:`TransportError` here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from handover.errors import TransportError
from handover.packet import MEDIA_TYPE

MAX_BATCH = 256
# A receiver takes 22.5 MiB per request; keep batches well below it.
MAX_BATCH_BYTES = 16 * 1024 * 1024
KEYSET_PATH = "/.well-known/handover/keyset"
LOG_HEAD_PATH = "/.well-known/handover/log-head"
DIGESTS_PATH = "/federation/v1/log/digests"
PACKETS_PATH = "/federation/v1/packets"
BATCH_PATH = "/federation/v1/packets:batch"


@dataclass(frozen=True)
class PostResult:
    """A peer's answer to one packet: HTTP-like status and the receipt wire, if any."""

    status: int
    receipt: bytes | None


class HttpTransport:
    def __init__(self, timeout_s: float = 30.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._no_batch: set[str] = set()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=64),
                headers={"User-Agent": "handover/0.1"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get(self, url: str, params: dict[str, Any] | None = None) -> bytes:
        try:
            async with self._client().get(url, params=params) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise TransportError(f"GET {url} answered {resp.status}")
                return body
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"GET {url} failed: {type(exc).__name__}") from exc

    async def fetch_keyset(self, base_url: str) -> bytes:
        return await self._get(base_url.rstrip("/") + KEYSET_PATH)

    async def fetch_log_head(self, base_url: str) -> bytes:
        return await self._get(base_url.rstrip("/") + LOG_HEAD_PATH)

    async def fetch_digests(self, base_url: str, after: int, limit: int) -> list[str]:
        body = await self._get(
            base_url.rstrip("/") + DIGESTS_PATH, {"after": str(after), "limit": str(limit)}
        )
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise TransportError("digests answer is not JSON") from exc
        if (
            not isinstance(data, dict)
            or set(data) != {"after", "digests"}
            or data["after"] != after
            or not isinstance(data["digests"], list)
            or not all(isinstance(d, str) for d in data["digests"])
        ):
            raise TransportError("digests answer does not have the protocol's shape")
        digests: list[str] = data["digests"]
        return digests

    async def post_packet(self, base_url: str, wire: bytes) -> PostResult:
        url = base_url.rstrip("/") + PACKETS_PATH
        try:
            async with self._client().post(
                url, data=wire, headers={"Content-Type": MEDIA_TYPE}
            ) as resp:
                body = await resp.read()
                if resp.status in (200, 422):
                    return PostResult(resp.status, body)
                return PostResult(resp.status, None)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"POST {url} failed: {type(exc).__name__}") from exc

    async def post_batch(self, base_url: str, wires: Sequence[bytes]) -> list[PostResult]:
        """POST packets in batches of at most 256 and at most ~16 MiB per request.

        Falls back to single POSTs for peers that do not offer the batch endpoint,
        and for a batch the peer refuses as too large (each packet alone may fit).
        """
        results: list[PostResult] = []
        for chunk in _chunks(wires):
            results += await self._post_chunk(base_url, chunk)
        return results

    async def _post_chunk(self, base_url: str, wires: Sequence[bytes]) -> list[PostResult]:
        if len(wires) == 1 or base_url in self._no_batch:
            return [await self.post_packet(base_url, w) for w in wires]
        url = base_url.rstrip("/") + BATCH_PATH
        payload = b'{"packets":[' + b",".join(wires) + b"]}"
        try:
            async with self._client().post(
                url, data=payload, headers={"Content-Type": "application/json"}
            ) as resp:
                body = await resp.read()
                if resp.status in (404, 405):
                    self._no_batch.add(base_url)
                    return [await self.post_packet(base_url, w) for w in wires]
                if resp.status == 413:
                    return [await self.post_packet(base_url, w) for w in wires]
                if resp.status != 200:
                    return [PostResult(resp.status, None) for _ in wires]
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"POST {url} failed: {type(exc).__name__}") from exc
        try:
            results = orjson.loads(body)["results"]
            if not isinstance(results, list) or len(results) != len(wires):
                raise ValueError("result count")
            out = []
            for item in results:
                receipt = item.get("receipt")
                out.append(
                    PostResult(
                        int(item["status"]),
                        None
                        if receipt is None
                        # the receiver's compact wire JSON, as our own CJ writes it
                        else orjson.dumps(receipt, option=orjson.OPT_SORT_KEYS),
                    )
                )
            return out
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TransportError("batch answer does not have the protocol's shape") from exc


def _chunks(wires: Sequence[bytes]) -> list[Sequence[bytes]]:
    """Split into request-sized batches: at most MAX_BATCH packets, ~MAX_BATCH_BYTES each."""
    chunks: list[Sequence[bytes]] = []
    start, size = 0, 0
    for i, wire in enumerate(wires):
        if i > start and (i - start >= MAX_BATCH or size + len(wire) > MAX_BATCH_BYTES):
            chunks.append(wires[start:i])
            start, size = i, 0
        size += len(wire) + 1
    if start < len(wires):
        chunks.append(wires[start:])
    return chunks
