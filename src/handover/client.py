"""A small typed client of a handover node's local API, for case management
systems and scripts; the `handover` command line uses it too.

Standard library only (`urllib`), blocking, one HTTP request per call; it
imports nothing of the node. The paths, payloads and answers are those of
`schemas/openapi.yaml` (served by the node at `/api/v1/openapi.yaml` where the
node has it). Typical use::

    import os
    from handover.client import ApiError, Client

    api = Client("http://127.0.0.1:8481", token=os.environ["HANDOVER_TOKEN"])
    sent = api.submit(
        to=["probation.example"],
        schema="handover/release-notice/1",
        body=body,
        justification="release planning for the shared case",
    )
    status = api.wait(sent[0]["pid"], timeout=60)   # until no delivery is pending
    page = api.inbox(case="HC-...")                   # what arrived, newest first
    packet = api.read(page["items"][0]["pid"], justification="preparing the release plan")

Typed calls return the JSON answer (typed dicts below) and raise
:class:`ApiError` (with the node's error code, e.g. `unauthorized`,
`schema_invalid`) when the node refuses; :meth:`Client.request` returns any
answer as an :class:`Answer` without raising. A node that cannot be reached
raises :class:`Unreachable`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypedDict, cast
from urllib.parse import quote, urlencode

from handover.protocol.errors import HandoverError

__all__ = [
    "Answer",
    "ApiError",
    "CaseSummary",
    "Client",
    "ClientError",
    "Delivery",
    "InboxItem",
    "InboxPacket",
    "InboxPage",
    "OverdueItem",
    "PacketStatus",
    "SubmittedPacket",
    "Unreachable",
    "is_pending",
]

DeliveryStatus = Literal["pending", "delivered", "rejected", "expired"]
MAX_ERROR_TEXT = 200
CHUNK = 1024 * 1024


# --- answers ------------------------------------------------------------------------------


class SubmittedPacket(TypedDict, total=False):
    """One packet of a submission (one per recipient group); `removed` with `minimise`."""

    pid: str
    to: list[str]
    removed: list[str]


class Delivery(TypedDict):
    node: str
    status: DeliveryStatus
    attempts: int
    receipt: dict[str, Any] | None
    reason: str | None
    last_error: str | None


class PacketStatus(TypedDict):
    pid: str
    schema: str
    case_ref: str | None
    iat: int
    exp: int
    deliveries: list[Delivery]


class InboxItem(TypedDict, total=False):
    pid: str
    sender: str
    schema: str
    case_ref: str | None
    iat: int
    exp: int
    received_at: int
    erased: bool
    restricted: bool


class InboxPage(TypedDict):
    items: list[InboxItem]
    next_before: int | None


class InboxPacket(TypedDict):
    pid: str
    schema: str
    body: dict[str, Any]
    sender: str
    case_ref: str | None
    iat: int
    exp: int
    received_at: int
    receipt: dict[str, Any]


class CaseSummary(TypedDict, total=False):
    case_ref: str
    local_id: str | None
    created_at: int
    updated_at: int
    release_date: str | None
    supervision_end: str | None
    sent: int
    received: int
    overdue: bool


class OverdueItem(TypedDict, total=False):
    case_ref: str
    local_id: str | None
    pid: str
    node: str
    expected: list[str]
    deadline: int
    overdue_days: int


def is_pending(status: PacketStatus) -> bool:
    """Whether a delivery of the packet is still pending."""
    return any(d["status"] == "pending" for d in status["deliveries"])


@dataclass(frozen=True)
class Answer:
    """An HTTP answer of the node: its status and decoded JSON (an answer that is
    not JSON comes back as `{"error": <its first 200 characters>}`)."""

    status: int
    data: Any

    @property
    def ok(self) -> bool:
        return self.status < HTTPStatus.BAD_REQUEST

    def __iter__(self) -> Any:  # `status, data = api.get(...)`
        return iter((self.status, self.data))


# --- errors ---------------------------------------------------------------------------------


class ClientError(HandoverError):
    """Something went wrong talking to the node."""


class Unreachable(ClientError):
    """No answer from the node (refused, reset, timed out); the message names the URL."""


class ApiError(ClientError):
    """The node refused the request: HTTP `status`, the error `code` of the
    OpenAPI `Error` enumeration (e.g. `schema_invalid`) and its `message`."""

    def __init__(self, status: int, code: str, message: str | None, answer: Any) -> None:
        super().__init__(f"{status} {code}" + (f": {message}" if message else ""))
        self.status = status
        self.code = code
        self.message = message
        self.answer = answer


# --- the client ---------------------------------------------------------------------------


def segment(value: str) -> str:
    """A path segment (a case reference, a pid) with `/` and the rest escaped."""
    return quote(value, safe="")


class Client:
    """Calls to one node's local API (`/api/v1/...`) as one operator.

    Args:
        base_url: the node's local URL, e.g. `http://127.0.0.1:8481`.
        token: the operator's bearer token (`handover operators add`).
        on_behalf_of: for an operator of role `system`, the staff member a
            request is made for (sent as `Handover-On-Behalf-Of`).
        timeout: seconds to wait for each answer.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        on_behalf_of: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.on_behalf_of = on_behalf_of
        self.timeout = timeout

    # --- any operation ------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        payload: object = None,
        *,
        query: Mapping[str, str | int | None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send `payload` (if not None) as JSON to `path`; any answer, refusals included.

        Query values that are None are left out.

        Raises:
            Unreachable: the node did not answer.
        """
        data = None
        sent = {"Accept": "application/json"}
        if payload is not None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        return self._send(method, path, data, query, sent, lambda resp: resp.read())

    def _send(
        self,
        method: str,
        path: str,
        data: bytes | BinaryIO | None,
        query: Mapping[str, str | int | None] | None,
        headers: Mapping[str, str],
        read: Callable[[Any], bytes],
    ) -> Answer:
        """One request; `read(response)` takes the body of a success."""
        url = self.base_url + path
        if query:
            given = {k: str(v) for k, v in query.items() if v is not None}
            if given:
                url += ("&" if "?" in path else "?") + urlencode(given)
        sent = {"Authorization": f"Bearer {self.token}"}
        if self.on_behalf_of:
            sent["Handover-On-Behalf-Of"] = self.on_behalf_of
        sent.update(headers)
        req = urllib.request.Request(url, data=data, headers=sent, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return _answer(resp.status, read(resp))
        except urllib.error.HTTPError as exc:
            with exc:
                return _answer(exc.code, exc.read())
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            where = self.base_url + path  # no query string: it may carry a justification
            raise Unreachable(f"cannot reach the node's API at {where}: {_words(reason)}") from exc

    # --- files ----------------------------------------------------------------------------

    def upload_file(self, path: Path, media_type: str) -> Answer:
        """`POST /api/v1/attachments` with the file streamed as the body (its media
        type, and its name in `Handover-Filename`); the answer is 201 `{"aid": ...}`
        for a submission's `attachments`.

        Raises:
            ClientError: the file cannot be read.
            Unreachable: the node did not answer.
        """
        try:
            size = path.stat().st_size
            source = path.open("rb")
        except OSError as exc:
            raise ClientError(f"cannot read {path}: {exc.strerror}") from exc
        headers = {
            "Content-Type": media_type,
            "Content-Length": str(size),
            "Handover-Filename": quote(path.name, safe=""),
        }
        with source:
            return self._send(
                "POST", "/api/v1/attachments", source, None, headers, lambda r: r.read()
            )

    def download_file(self, path: str, target: Path) -> Answer:
        """GET `path` into the file `target` (written 0600 under a temporary name,
        kept only when the whole answer arrived); `{"saved": target}` on success,
        else the node's answer.

        Raises:
            ClientError: the file cannot be written.
            Unreachable: the node did not answer.
        """
        temp = target.with_name(f".{target.name}.part")

        def save(resp: Any) -> bytes:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while chunk := resp.read(CHUNK):
                        out.write(chunk)
                temp.rename(target)
            except OSError as exc:
                raise ClientError(f"cannot write {target}: {exc.strerror}") from exc
            return json.dumps({"saved": str(target)}).encode()

        try:
            return self._send("GET", path, None, None, {}, save)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def get(self, path: str, **query: str | int | None) -> Answer:
        return self.request("GET", path, query=query)

    def post(self, path: str, payload: object) -> Answer:
        return self.request("POST", path, payload)

    def put(self, path: str, payload: object) -> Answer:
        return self.request("PUT", path, payload)

    def call(
        self,
        method: str,
        path: str,
        payload: object = None,
        *,
        query: Mapping[str, str | int | None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """:meth:`request`, returning the JSON answer of a success.

        Raises:
            ApiError: the node answered with an error.
            Unreachable: the node did not answer.
        """
        answer = self.request(method, path, payload, query=query, headers=headers)
        if not answer.ok:
            data = answer.data if isinstance(answer.data, dict) else {}
            code = data.get("error")
            if not isinstance(code, str) or not _CODE.fullmatch(code):  # not the node's JSON
                code = _phrase(answer.status)
            message = data.get("message")
            raise ApiError(answer.status, code, message, answer.data)
        return answer.data

    # --- typed operations ----------------------------------------------------------------

    def submit(
        self,
        to: Sequence[str],
        schema: str,
        body: Mapping[str, Any],
        justification: str,
        *,
        minimise: bool = False,
    ) -> list[SubmittedPacket]:
        """Seal and queue a packet to `to` (`submitPacket`); one entry per packet made."""
        payload: dict[str, Any] = {
            "to": list(to),
            "schema": schema,
            "body": dict(body),
            "justification": justification,
        }
        if minimise:
            payload["minimise"] = True
        return cast(list[SubmittedPacket], self.call("POST", "/api/v1/packets", payload)["packets"])

    def packet(self, pid: str) -> PacketStatus:
        """A sent packet and the state of each delivery (`getPacket`)."""
        return cast(PacketStatus, self.call("GET", f"/api/v1/packets/{segment(pid)}"))

    def wait(self, pid: str, timeout: float = 30.0, interval: float = 0.2) -> PacketStatus:
        """:meth:`packet`, asked again until no delivery is pending or `timeout`
        seconds passed; check :func:`is_pending` on the answer."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.packet(pid)
            if not is_pending(status) or time.monotonic() >= deadline:
                return status
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    def inbox(
        self, *, limit: int | None = None, before: int | None = None, case: str | None = None
    ) -> InboxPage:
        """Received packets, newest first, without bodies (`listInbox`); pass
        `next_before` as `before` for the next page."""
        query = {"limit": limit, "before": before, "case": case}
        return cast(InboxPage, self.call("GET", "/api/v1/inbox", query=query))

    def read(self, pid: str, justification: str) -> InboxPacket:
        """A received packet with its body (`readInbox`), logged as a consultation
        with the justification (sent in the `Handover-Justification` header, or
        in the query string when it is not ASCII, which headers cannot carry)."""
        path = f"/api/v1/inbox/{segment(pid)}"
        if justification.isascii() and justification.isprintable():
            data = self.call("GET", path, headers={"Handover-Justification": justification})
        else:
            data = self.call("GET", path, query={"justification": justification})
        return cast(InboxPacket, data)

    def cases(self, *, limit: int | None = None, before: int | None = None) -> list[CaseSummary]:
        """Cases this node holds, most recently updated first (`listCases`)."""
        page = self.call("GET", "/api/v1/cases", query={"limit": limit, "before": before})
        return cast(list[CaseSummary], page["items"])

    def case(self, ref: str) -> dict[str, Any]:
        """A case's timeline, consent, expectations and agreement (`showCase`)."""
        return cast(dict[str, Any], self.call("GET", f"/api/v1/cases/{segment(ref)}"))

    def overdue(self) -> list[OverdueItem]:
        """Continuity-of-care answers past their deadline (`listOverdue`)."""
        return cast(list[OverdueItem], self.call("GET", "/api/v1/overdue")["items"])


def _words(reason: object) -> str:
    """Why the node did not answer, in plain words."""
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is `handover serve` running?)"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    if isinstance(reason, socket.gaierror):
        return "host name not found"
    return str(reason)


_CODE = re.compile(r"[a-z][a-z_]{0,63}")


def _phrase(status: int) -> str:
    """`bad_gateway` for 502: a code for an error answer that is not the node's."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


def _answer(status: int, raw: bytes) -> Answer:
    text = raw.decode("utf-8", errors="replace")
    try:
        return Answer(status, json.loads(text))
    except ValueError:
        return Answer(status, {"error": text[:MAX_ERROR_TEXT]})
