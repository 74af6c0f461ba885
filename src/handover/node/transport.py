"""How a node talks to its peers: the `Transport` interface and its in-memory twin.

Delivery, the directory and witnessing depend only on :class:`Transport`. The
HTTP implementation (docs/protocol.md section 6, written down in docs/protocol.md)
is `handover.web.transport.HttpTransport`; :class:`MemoryTransport` connects
nodes in one process for fast tests, calling each peer's :class:`Endpoint`
directly with the same bytes HTTP would carry.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

from handover.node.errors import PairingRefused, TransportError
from handover.protocol.canonical import b64u_encode
from handover.workflow.errors import RequestRefused

MAX_BATCH = 256
# A receiver takes 22.5 MiB per request; keep batches well below it.
MAX_BATCH_BYTES = 16 * 1024 * 1024


class Outcome(StrEnum):
    """What became of one posted packet (the receiver's answer, by meaning)."""

    ACCEPTED = "accepted"
    """Stored; the answer carries a signed `accepted` receipt."""
    REJECTED = "rejected"
    """Refused at step 9; the answer carries a signed `rejected` receipt."""
    INVALID = "invalid_packet"
    """Refused at steps 1-8 (or a replay conflict); no receipt, the reason stays local."""
    TOO_LARGE = "too_large"
    """Over the receiver's size limit: it will never be taken."""
    ATTACHMENT_INCOMPLETE = "attachment_incomplete"
    """An attachment's upload is missing or incomplete (`detail` names its aid):
    upload it, then post the packet again."""
    UNAVAILABLE = "unavailable"
    """Any other answer (overload, a proxy's error page): try again later."""


@dataclass(frozen=True)
class Answer:
    """A peer's answer to one packet: its outcome and the receipt wire, if any."""

    outcome: Outcome
    receipt: bytes | None = None
    detail: str = ""


UploadStatus = Literal[
    "ok", "offset", "conflict", "unauthorized", "too_large", "hash", "unavailable"
]


@dataclass(frozen=True)
class UploadAnswer:
    """A peer's answer to an attachment upload request (docs/protocol.md section 8).

    `ok`: `offset` is the peer's offset now; `offset`: the offset we sent was not
    the peer's (`offset` is the peer's); `conflict`: the upload exists with
    another alen/ah; `unauthorized`: the ticket was refused; `too_large`: over
    a limit; `hash`: the completed stream did not match and was discarded;
    `unavailable`: anything else (retry later).
    """

    status: UploadStatus
    offset: int = 0
    detail: str = ""


class Transport(Protocol):
    """Outbound calls to peers, by base URL.

    Every method raises :class:`TransportError` when the peer cannot be reached
    or answers outside the protocol.
    """

    async def fetch_keyset(self, base_url: str) -> bytes: ...

    async def fetch_log_head(self, base_url: str) -> bytes: ...

    async def fetch_digests(self, base_url: str, after: int, limit: int) -> list[str]: ...

    async def fetch_forks(self, base_url: str) -> list[bytes]:
        """The peer's signed fork declarations (docs/protocol.md 5.1), each a wire object."""
        ...

    async def post_batch(self, base_url: str, wires: Sequence[bytes]) -> list[Answer]:
        """One answer per packet, in order."""
        ...

    async def upload_offset(self, base_url: str, aid: str, ticket: str) -> UploadAnswer:
        """HEAD /federation/v1/attachments/{aid}: the bytes the peer holds."""
        ...

    async def upload_bytes(
        self, base_url: str, aid: str, ticket: str, offset: int, body: AsyncIterable[bytes]
    ) -> UploadAnswer:
        """PATCH /federation/v1/attachments/{aid} with the stream from `offset`."""
        ...

    async def fetch_profile(self, base_url: str) -> bytes:
        """The peer's signed profile (docs/protocol.md 9.1); TransportError if it has none."""
        ...

    async def post_pairing(self, base_url: str, message: bytes) -> bytes:
        """One pairing message (docs/protocol.md 9) and its answer.

        Raises:
            PairingRefused: the peer answered with an error (its code and message).
        """
        ...

    async def close(self) -> None: ...


class Endpoint(Protocol):
    """What a node offers its peers (the federation routes, without HTTP)."""

    def keyset_wire(self) -> bytes: ...

    async def checkpoint(self) -> bytes: ...

    async def entry_digests(self, after: int, limit: int) -> list[bytes]: ...

    async def fork_declarations(self) -> list[bytes]: ...

    async def receive_many(self, wires: list[bytes], source: str = ...) -> list[Answer]: ...

    async def upload_head(self, aid: str, ticket: str) -> UploadAnswer: ...

    async def upload_patch(
        self, aid: str, ticket: str, offset: int, body: AsyncIterable[bytes]
    ) -> UploadAnswer: ...
    async def profile_wire(self) -> bytes | None: ...

    async def pairing_answer(self, message: bytes) -> bytes: ...


class MemoryTransport:
    """Nodes in one process: `base_url` -> that node's :class:`Endpoint`.

    A URL with no endpoint, or one marked down with :meth:`down`, raises
    :class:`TransportError` as an unreachable HTTP peer would.
    """

    def __init__(self) -> None:
        self._endpoints: dict[str, Endpoint] = {}
        self._down: set[str] = set()
        self.posted: list[tuple[str, int]] = []  # (base_url, packets) per call, for tests

    def attach(self, base_url: str, endpoint: Endpoint) -> None:
        self._endpoints[base_url.rstrip("/")] = endpoint

    def down(self, base_url: str, is_down: bool = True) -> None:
        if is_down:
            self._down.add(base_url.rstrip("/"))
        else:
            self._down.discard(base_url.rstrip("/"))

    def _peer(self, base_url: str) -> Endpoint:
        url = base_url.rstrip("/")
        endpoint = self._endpoints.get(url)
        if endpoint is None or url in self._down:
            raise TransportError(f"{url} cannot be reached")
        return endpoint

    async def fetch_keyset(self, base_url: str) -> bytes:
        return self._peer(base_url).keyset_wire()

    async def fetch_log_head(self, base_url: str) -> bytes:
        return await self._peer(base_url).checkpoint()

    async def fetch_digests(self, base_url: str, after: int, limit: int) -> list[str]:
        digests = await self._peer(base_url).entry_digests(after, limit)
        return [b64u_encode(d) for d in digests]

    async def fetch_forks(self, base_url: str) -> list[bytes]:
        return await self._peer(base_url).fork_declarations()

    async def post_batch(self, base_url: str, wires: Sequence[bytes]) -> list[Answer]:
        answers: list[Answer] = []
        for chunk in chunks(wires):
            self.posted.append((base_url, len(chunk)))
            peer = self._peer(base_url)
            try:
                answers += await peer.receive_many(list(chunk))
            except Exception as exc:  # what HTTP would answer with a 5xx
                detail = f"the peer failed: {type(exc).__name__}"
                answers += [Answer(Outcome.UNAVAILABLE, None, detail) for _ in chunk]
        return answers

    async def upload_offset(self, base_url: str, aid: str, ticket: str) -> UploadAnswer:
        return await self._peer(base_url).upload_head(aid, ticket)

    async def upload_bytes(
        self, base_url: str, aid: str, ticket: str, offset: int, body: AsyncIterable[bytes]
    ) -> UploadAnswer:
        return await self._peer(base_url).upload_patch(aid, ticket, offset, body)

    async def fetch_profile(self, base_url: str) -> bytes:
        wire = await self._peer(base_url).profile_wire()
        if wire is None:
            raise TransportError(f"{base_url.rstrip('/')} has no profile")
        return wire

    async def post_pairing(self, base_url: str, message: bytes) -> bytes:
        try:
            return await self._peer(base_url).pairing_answer(message)
        except RequestRefused as exc:  # what HTTP would answer with an error body
            raise PairingRefused(exc.code.value, exc.message) from exc

    async def close(self) -> None:
        return None


def chunks(wires: Sequence[bytes]) -> list[Sequence[bytes]]:
    """Split into request-sized batches: at most MAX_BATCH packets, ~MAX_BATCH_BYTES each."""
    out: list[Sequence[bytes]] = []
    start, size = 0, 0
    for i, wire in enumerate(wires):
        if i > start and (i - start >= MAX_BATCH or size + len(wire) > MAX_BATCH_BYTES):
            out.append(wires[start:i])
            start, size = i, 0
        size += len(wire) + 1
    if start < len(wires):
        out.append(wires[start:])
    return out
