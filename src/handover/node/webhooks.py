"""Webhooks: adding and listing targets, and the worker that POSTs each queued
event to its target, signed, retried with exponential backoff, at least once.

Every event of a kind a webhook takes is queued for it in the transaction that
writes the event (store/events.py), so nothing is lost across restarts. The
worker leases due rows, POSTs them in event order per webhook and deletes a row
only after a 2xx answer; on a failure that row and the webhook's later rows wait
(1 s, 2 s, 4 s ... up to 10 minutes). A row still failing 3 days after its event
is marked failed and no longer tried (`handover webhooks list` counts them).

Secrets are stored sealed with the node's storage key (`keys/storage.key`,
mode 0600): a database dump alone does not reveal them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import structlog

from handover.node.events import event_json
from handover.node.webhook_signature import sign
from handover.protocol import crypto
from handover.protocol.crypto import CryptoFailure
from handover.protocol.errors import HandoverError
from handover.protocol.timeutil import DAY_MS, Clock
from handover.store import events as event_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database

log = structlog.get_logger(__name__)

MAX_URL = 2000
MIN_SECRET = 16
MAX_SECRET = 1024
LEASE_MS = 60_000
CLAIM = 100
TIMEOUT_S = 10.0
GIVE_UP_MS = 3 * DAY_MS
POLL_S = 5.0
ROUND_S = 0.05
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")


class WebhookError(HandoverError):
    """A webhook cannot be added as asked (bad URL, kind or secret)."""


def check_target(url: str, kinds: Sequence[str], secret: bytes) -> list[str]:
    """The kinds, checked with the URL and secret.

    Raises:
        WebhookError: a URL that is not http(s), an unknown kind, a short secret.
    """
    if len(url) > MAX_URL or not _URL.match(url):
        raise WebhookError("the webhook URL must be an http:// or https:// URL")
    wanted = [k.strip() for k in kinds if k.strip()]
    unknown = sorted(set(wanted) - set(event_store.KINDS))
    if not wanted or unknown:
        raise WebhookError(
            f"unknown event kinds {unknown}; choose from {', '.join(event_store.KINDS)}"
            if unknown
            else f"name at least one event kind: {', '.join(event_store.KINDS)}"
        )
    if not MIN_SECRET <= len(secret) <= MAX_SECRET:
        raise WebhookError(f"the secret must be {MIN_SECRET} to {MAX_SECRET} bytes")
    return sorted(set(wanted), key=event_store.KINDS.index)


async def add(
    writer: AuditWriter,
    storage_key: bytes,
    url: str,
    kinds: Sequence[str],
    secret: bytes,
    *,
    node: str,
    now: int,
) -> int:
    """Add a target and its `key` audit entry (action `webhook_added`, host only)."""
    checked = check_target(url, kinds, secret)
    box = crypto.seal_at_rest(storage_key, secret)

    async def job(conn: Connection, appender: Appender) -> int:
        webhook_id = await event_store.add_webhook(conn, url, checked, box, now)
        appender.append(
            "key",
            action="webhook_added",
            webhook=webhook_id,
            target=_url_for_log(url),
            kinds=checked,
            org=node,
        )
        return webhook_id

    added: int = await writer.run(job)
    return added


async def remove(writer: AuditWriter, webhook_id: int, *, node: str) -> bool:
    """Remove a target (its queue goes with it) with a `key` audit entry."""

    async def job(conn: Connection, appender: Appender) -> bool:
        if not await event_store.remove_webhook(conn, webhook_id):
            return False
        appender.append("key", action="webhook_removed", webhook=webhook_id, org=node)
        return True

    removed: bool = await writer.run(job)
    return removed


def _url_for_log(url: str) -> str:
    """Scheme, host and port only (a path or query may hold a token)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].rsplit('@', 1)[-1]}"


class WebhookWorker:
    def __init__(
        self,
        *,
        db: Database,
        storage_key: bytes,
        clock: Clock,
        retry_base_ms: int = 1000,
        retry_max_ms: int = 600_000,
    ) -> None:
        self.db = db
        self.storage_key = storage_key
        self.clock = clock
        self.retry_base_ms = retry_base_ms
        self.retry_max_ms = retry_max_ms
        self.wake = asyncio.Event()
        self.sent = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _loop(self) -> None:
        while True:
            self.wake.clear()
            began = time.monotonic()
            try:
                await self.run_once()
                async with self.db.connection() as conn:
                    due = await event_store.next_due(conn)
            except HandoverError as exc:
                log.error("webhook_round_failed", error=str(exc))
                due = None
            pause = POLL_S if due is None else max(0.0, min(POLL_S, (due - self.clock()) / 1000))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self.wake.wait()
            # Every commit that writes an event wakes this worker (hundreds a second
            # under load): one round per ROUND_S at most, two queries each.
            await asyncio.sleep(max(0.0, ROUND_S - (time.monotonic() - began)))

    async def run_once(self) -> int:
        """POST what is due; returns how many were delivered."""
        now = self.clock()
        async with self.db.connection() as conn:
            rows = await event_store.claim(conn, now, LEASE_MS, CLAIM)
        blocked: set[int] = set()
        delivered = 0
        for row in rows:
            if row.webhook_id in blocked:
                continue  # an earlier event of this webhook failed: keep the order
            error = await self._post(row)
            async with self.db.connection() as conn:
                if error is None:
                    await event_store.delivered(conn, row.webhook_id, row.event.id)
                    delivered += 1
                    self.sent += 1
                    continue
                blocked.add(row.webhook_id)
                self.failed += 1
                now = self.clock()
                delay = min(self.retry_base_ms * 2 ** min(row.attempts, 30), self.retry_max_ms)
                await event_store.retry_later(
                    conn,
                    row.webhook_id,
                    row.event.id,
                    next_at=now + delay,
                    error=error,
                    give_up_before=now - GIVE_UP_MS,
                    now=now,
                )
            log.info(
                "webhook_failed",
                webhook=row.webhook_id,
                event_id=row.event.id,
                target=_url_for_log(row.url),
                attempts=row.attempts + 1,
                error=error,
            )
        return delivered

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self._session

    async def _post(self, row: event_store.Queued) -> str | None:
        """POST one event; None on a success answer, else a short reason."""
        try:
            secret = crypto.open_at_rest(self.storage_key, row.secret_box)
        except CryptoFailure:
            return "the secret cannot be opened with this node's storage key"
        payload: dict[str, Any] = event_json(row.event)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "Handover-Signature": sign(secret, body, self.clock() // 1000),
            "Handover-Event-Id": str(row.event.id),
            "Handover-Webhook-Id": str(row.webhook_id),
            "User-Agent": "handover-webhooks/1",
        }
        try:
            async with self._client().post(
                row.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.content.read(4096)
                if response.status // 100 == 2:  # any success
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _reason(exc)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT_S:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        return os.strerror(errno).lower() if errno else "connection failed"
    return type(exc).__name__
