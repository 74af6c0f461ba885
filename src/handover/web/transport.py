"""HTTP between nodes (docs/protocol.md section 6), client side: the real
:class:`handover.node.transport.Transport`.

The only place that makes outbound requests. aiohttp errors become
:class:`TransportError` here, and HTTP statuses become outcomes
(`web/errors.py` holds the one table both sides use).
"""

from __future__ import annotations

import errno
import json
import ssl
from collections.abc import AsyncIterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from handover.node.config import NodeConfig
from handover.node.errors import PairingRefused, TransportError
from handover.node.transport import Answer, Outcome, UploadAnswer, UploadStatus, chunks
from handover.protocol.packet import MEDIA_TYPE
from handover.web.errors import outcome_of
from handover.web.tls import client_context

KEYSET_PATH = "/.well-known/handover/keyset"
LOG_HEAD_PATH = "/.well-known/handover/log-head"
DIGESTS_PATH = "/federation/v1/log/digests"
FORKS_PATH = "/federation/v1/log/forks"
PACKETS_PATH = "/federation/v1/packets"
BATCH_PATH = "/federation/v1/packets:batch"
ATTACHMENTS_PATH = "/federation/v1/attachments/"
UPLOAD_STATUS: dict[int, UploadStatus] = {
    200: "ok",
    204: "ok",
    401: "unauthorized",
    413: "too_large",
    422: "hash",
}
PROFILE_PATH = "/.well-known/handover/profile"
PAIRING_PATH = "/federation/v1/pairing"


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by the peer",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed by the peer",
}


def plain_error(exc: BaseException) -> str:
    """What went wrong with a request to a peer, in plain words for people
    (`peers list`, a delivery's `last_error`): "connection refused", not
    "ClientConnectorError"."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "the peer's TLS certificate was not accepted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "the TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not found"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed by the peer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(cause, OSError) and cause.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[cause.errno]
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return "cannot connect"
    return "the request failed"


# Answers from peers are read up to a cap: a peer (or whatever answers at its
# URL) cannot make this node hold more than a few MiB per request.
MAX_KEYSET_ANSWER = 1024 * 1024
MAX_SMALL_ANSWER = 64 * 1024
MAX_RECEIPT_ANSWER = 16 * 1024
DIGEST_CHARS = 48  # a quoted 43-character b64u digest and a comma


async def read_capped(resp: aiohttp.ClientResponse, cap: int, url: str) -> bytes:
    """The answer's body, or TransportError once it passes `cap` bytes."""
    if resp.content_length is not None and resp.content_length > cap:
        raise TransportError(f"{url} answered with more than {cap} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > cap:
            raise TransportError(f"{url} answered with more than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def peer_ca_path(directory: Path, base_url: str) -> Path:
    """Where `handover peers add --ca FILE` keeps the CA bundle for a peer's URL."""
    netloc = urlsplit(base_url).netloc.replace(":", "_").replace("/", "_")
    return directory / "tls" / "peers" / f"{netloc}.pem"


class HttpTransport:
    def __init__(self, timeout_s: float = 30.0, config: NodeConfig | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._no_batch: set[str] = set()
        self._config = config
        self._contexts: dict[str, ssl.SSLContext] = {}

    @classmethod
    def for_config(cls, config: NodeConfig) -> HttpTransport:
        """The node's transport: its timeout, client certificate and peers' CA bundles."""
        return cls(config.delivery_timeout_s, config)

    def _ssl(self, url: str) -> ssl.SSLContext | bool:
        """Verification for an https URL: the peer's pinned CA bundle if there is one,
        else the system trust store (True); plain http needs none."""
        if not url.startswith("https://") or self._config is None:
            return True
        netloc = urlsplit(url).netloc
        context = self._contexts.get(netloc)
        if context is None:
            ca = peer_ca_path(self._config.directory, url)
            context = client_context(self._config, str(ca) if ca.exists() else None)
            self._contexts[netloc] = context
        return context

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

    async def _get(self, url: str, cap: int, params: dict[str, Any] | None = None) -> bytes:
        try:
            async with self._client().get(url, params=params, ssl=self._ssl(url)) as resp:
                body = await read_capped(resp, cap, url)
                if resp.status != 200:
                    raise TransportError(f"GET {url} answered {resp.status}")
                return body
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"GET {url} failed: {plain_error(exc)}") from exc

    async def fetch_keyset(self, base_url: str) -> bytes:
        return await self._get(base_url.rstrip("/") + KEYSET_PATH, MAX_KEYSET_ANSWER)

    async def fetch_profile(self, base_url: str) -> bytes:
        return await self._get(base_url.rstrip("/") + PROFILE_PATH, MAX_SMALL_ANSWER)

    async def post_pairing(self, base_url: str, message: bytes) -> bytes:
        url = base_url.rstrip("/") + PAIRING_PATH
        try:
            async with self._client().post(
                url, data=message, headers={"Content-Type": "application/json"}, ssl=self._ssl(url)
            ) as resp:
                body = await read_capped(resp, MAX_SMALL_ANSWER, url)
                if resp.status == 200:
                    return body
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"POST {url} failed: {plain_error(exc)}") from exc
        try:
            error = json.loads(body)
            code, text = str(error["error"]), str(error.get("message", ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise TransportError(f"POST {url} answered {resp.status}") from exc
        raise PairingRefused(code, text[:500])

    async def fetch_log_head(self, base_url: str) -> bytes:
        return await self._get(base_url.rstrip("/") + LOG_HEAD_PATH, MAX_SMALL_ANSWER)

    async def fetch_digests(self, base_url: str, after: int, limit: int) -> list[str]:
        body = await self._get(
            base_url.rstrip("/") + DIGESTS_PATH,
            MAX_SMALL_ANSWER + limit * DIGEST_CHARS,
            {"after": str(after), "limit": str(limit)},
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

    async def fetch_forks(self, base_url: str) -> list[bytes]:
        body = await self._get(base_url.rstrip("/") + FORKS_PATH, MAX_SMALL_ANSWER)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise TransportError("fork declarations answer is not JSON") from exc
        if (
            not isinstance(data, dict)
            or set(data) != {"forks"}
            or not isinstance(data["forks"], list)
            or not all(isinstance(f, dict) for f in data["forks"])
        ):
            raise TransportError("fork declarations answer does not have the protocol's shape")
        return [json.dumps(f, separators=(",", ":")).encode("utf-8") for f in data["forks"]]

    async def post_packet(self, base_url: str, wire: bytes) -> Answer:
        url = base_url.rstrip("/") + PACKETS_PATH
        try:
            async with self._client().post(
                url, data=wire, headers={"Content-Type": MEDIA_TYPE}, ssl=self._ssl(url)
            ) as resp:
                body = await read_capped(resp, MAX_RECEIPT_ANSWER, url)
                outcome = outcome_of(resp.status)
                if outcome in (Outcome.ACCEPTED, Outcome.REJECTED):
                    return Answer(outcome, body)
                return Answer(outcome, None, f"peer answered HTTP {resp.status}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"POST {url} failed: {plain_error(exc)}") from exc

    async def upload_offset(self, base_url: str, aid: str, ticket: str) -> UploadAnswer:
        url = base_url.rstrip("/") + ATTACHMENTS_PATH + aid
        headers = {"Handover-Upload": ticket, "Tus-Resumable": "1.0.0"}
        try:
            async with self._client().head(url, headers=headers, ssl=self._ssl(url)) as resp:
                return _upload_answer(resp)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"HEAD {url} failed: {type(exc).__name__}") from exc

    async def upload_bytes(
        self, base_url: str, aid: str, ticket: str, offset: int, body: AsyncIterable[bytes]
    ) -> UploadAnswer:
        """Stream up to 16 MiB; a slow peer is cut off by the read timeout, not a total."""
        url = base_url.rstrip("/") + ATTACHMENTS_PATH + aid
        headers = {
            "Handover-Upload": ticket,
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        }
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._timeout.total, sock_read=self._timeout.total
        )
        try:
            async with self._client().patch(
                url, data=body, headers=headers, ssl=self._ssl(url), timeout=timeout
            ) as resp:
                await read_capped(resp, MAX_SMALL_ANSWER, url)
                return _upload_answer(resp)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"PATCH {url} failed: {type(exc).__name__}") from exc

    async def post_batch(self, base_url: str, wires: Sequence[bytes]) -> list[Answer]:
        """POST packets in batches of at most 256 and at most ~16 MiB per request.

        Falls back to single POSTs for peers that do not offer the batch endpoint,
        and for a batch the peer refuses as too large (each packet alone may fit).
        """
        results: list[Answer] = []
        for chunk in chunks(wires):
            results += await self._post_chunk(base_url, chunk)
        return results

    async def _post_chunk(self, base_url: str, wires: Sequence[bytes]) -> list[Answer]:
        if len(wires) == 1 or base_url in self._no_batch:
            return [await self.post_packet(base_url, w) for w in wires]
        url = base_url.rstrip("/") + BATCH_PATH
        payload = b'{"packets":[' + b",".join(wires) + b"]}"
        try:
            async with self._client().post(
                url, data=payload, headers={"Content-Type": "application/json"}, ssl=self._ssl(url)
            ) as resp:
                body = await read_capped(
                    resp, MAX_SMALL_ANSWER + len(wires) * MAX_RECEIPT_ANSWER, url
                )
                if resp.status in (404, 405):
                    self._no_batch.add(base_url)
                    return [await self.post_packet(base_url, w) for w in wires]
                if resp.status == 413:
                    return [await self.post_packet(base_url, w) for w in wires]
                if resp.status != 200:
                    detail = f"peer answered HTTP {resp.status} to a batch"
                    return [Answer(Outcome.UNAVAILABLE, None, detail) for _ in wires]
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"POST {url} failed: {plain_error(exc)}") from exc
        try:
            results = orjson.loads(body)["results"]
            if not isinstance(results, list) or len(results) != len(wires):
                raise ValueError("result count")
            out = []
            for item in results:
                receipt = item.get("receipt")
                # the receiver's compact wire JSON, as our own CJ writes it
                wire = (
                    None if receipt is None else orjson.dumps(receipt, option=orjson.OPT_SORT_KEYS)
                )
                out.append(Answer(outcome_of(int(item["status"])), wire))
            return out
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TransportError("batch answer does not have the protocol's shape") from exc


def _upload_answer(resp: aiohttp.ClientResponse) -> UploadAnswer:
    """An upload answer from its status and `Upload-Offset` (tus 1.0 core)."""
    try:
        offset = int(resp.headers.get("Upload-Offset", "0"))
    except ValueError:
        offset = 0
    if resp.status == 409:
        has_offset = "Upload-Offset" in resp.headers
        return UploadAnswer("offset" if has_offset else "conflict", offset)
    status = UPLOAD_STATUS.get(resp.status, "unavailable")
    return UploadAnswer(status, offset, f"HTTP {resp.status}")
