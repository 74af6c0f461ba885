"""Sending: a local submission becomes sealed packets in the outbox.

The path of one handover starts here (docs/architecture.md): the local API
calls :meth:`Sender.submit`; the workflow plans one view per recipient kind;
each packet's `disclosure` entry, outbox row and case bookkeeping commit in
one audit-writer job; `delivery.py` then posts it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog

from handover.node.attachments import Attachments
from handover.node.directory import Directory
from handover.node.metrics import Metrics
from handover.protocol.attachments import MAX_ATTACHMENTS, AttachmentItem
from handover.protocol.canonical import check_value, cj_dumps
from handover.protocol.errors import (
    EncodingError,
    SchemaInvalid,
    SealError,
    UnknownSchema,
)
from handover.protocol.keyset import is_node_id
from handover.protocol.packet import (
    Recipient,
    new_pid,
    seal,
)
from handover.protocol.timeutil import Clock
from handover.store import outbox as outbox_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database
from handover.store.receipts import receipt_json
from handover.workflow.access import Operator, require_justification, require_staff
from handover.workflow.engine import SentHook, Workflow, case_ref_of
from handover.workflow.errors import ErrorCode, RequestRefused
from handover.workflow.quality import check_quality, judicial_fields
from handover.workflow.schemas import SchemaRegistry
from handover.workflow.vault import Vault

log = structlog.get_logger(__name__)


class _NoRevalidation:
    """The body was validated once at submission; sealing does not repeat it."""

    def validate(self, schema_id: str, body: object) -> None:
        return None


class Sender:
    """Local submissions: validate, apply the sharing policy, log each disclosure,
    seal and queue (the delivery worker takes it from the outbox)."""

    def __init__(
        self,
        *,
        node: str,
        db: Database,
        writer: AuditWriter,
        directory: Directory,
        registry: SchemaRegistry,
        metrics: Metrics,
        vault: Vault,
        workflow: Workflow,
        clock: Clock,
        ttl_ms: int,
        sent_hooks: Sequence[SentHook] = (),
        attachments: Attachments | None = None,
    ) -> None:
        """`sent_hooks` run inside the audit writer's transaction after the
        workflow's bookkeeping for a packet with a case."""
        self.node = node
        self.db = db
        self.writer = writer
        self.directory = directory
        self.registry = registry
        self.metrics = metrics
        self.vault = vault
        self.workflow = workflow
        self.clock = clock
        self.ttl_ms = ttl_ms
        self._sent_hooks = tuple(sent_hooks)
        self.attachments = attachments

    async def submit(
        self,
        operator: Operator,
        *,
        to: object,
        schema_id: object,
        body: object,
        justification: object,
        minimise: object = False,
        attachments: object = None,
        share_attachments: bool = False,
    ) -> list[dict[str, Any]]:
        """Validate, apply the sharing policy, log each disclosure, seal and queue.

        A submission becomes one packet per distinct view of the body (the
        policy may reduce it per recipient kind); each packet gets its own
        `disclosure` audit entry naming the fields it carries and those removed.

        Raises:
            RequestRefused: `bad_request` for a malformed request;
                `unknown_schema`, `schema_invalid`, `unknown_recipient`,
                `not_permitted` or `consent_required` (naming the field or scope
                and the recipient).
        """
        started = time.perf_counter()
        require_staff(operator)
        why = require_justification(justification, self.workflow.policy.purposes)
        self._check(to, schema_id, body, minimise)
        assert isinstance(to, list) and isinstance(schema_id, str) and isinstance(body, dict)
        assert isinstance(minimise, bool)
        self._check_recipients(to)
        aids = _aids(attachments)
        now = self.clock()
        case_ref = case_ref_of(body)
        identity = self.directory.keys.identity()
        ttl_ms = self.ttl_ms

        async def job(conn: Connection, appender: Appender) -> list[dict[str, Any]]:
            planned = await self.workflow.plan(
                conn, to=list(to), schema=schema_id, body=body, minimise=minimise
            )
            results = []
            for index, packet in enumerate(planned):
                recipients = [self._recipient(node, now) for node in packet.recipients]
                pid = new_pid()
                # Every packet of the submission carries the same streams (same aid
                # and key): each recipient gets its own upload of them.
                again = index > 0 or share_attachments
                items = await self._claim(conn, aids, pid, again=again)
                position = appender.append(
                    "disclosure",
                    pid=pid,
                    case_ref=case_ref,
                    schema=schema_id,
                    to=packet.recipients,
                    fields=sorted(packet.body),
                    removed=packet.removed or None,
                    consents=packet.consents or None,
                    # Art 18: fields taken from judicial decisions are marked.
                    judicial=judicial_fields(self.registry, schema_id, packet.body) or None,
                    attachments=aids or None,
                    operator=operator.name,
                    on_behalf_of=operator.on_behalf_of,
                    org=self.node,
                    justification=why,
                )
                body_cj = cj_dumps(packet.body)
                sealed = seal(
                    identity,
                    recipients,
                    schema_id,
                    packet.body,
                    log=position,
                    ttl_ms=ttl_ms,
                    now=now,
                    pid=pid,
                    validator=_NoRevalidation(),
                    body_cj=body_cj,
                    attachments=items,
                )
                stored = self.vault.seal(body_cj)
                await outbox_store.insert(
                    conn,
                    pid=pid,
                    schema_id=schema_id,
                    case_ref=case_ref,
                    wire=sealed.wire,
                    pd=sealed.pd,
                    iat=sealed.iat,
                    exp=sealed.exp,
                    operator=operator.name,
                    log_seq=position.seq,
                    recipients=sealed.to,
                    now=now,
                    body_box=stored.box,
                    data_key=stored.key,
                    fields=sorted(packet.body),
                    removed=packet.removed,
                    consents=packet.consents,
                    defer=appender.deferred,
                )
                sent = await self.workflow.after_send(
                    conn,
                    pid=pid,
                    schema=schema_id,
                    body=body,
                    recipients=packet.recipients,
                    now=now,
                    defer=appender.deferred,
                )
                if sent is not None:
                    for hook in self._sent_hooks:
                        await hook(conn, sent)
                results.append({"pid": pid, "to": list(sealed.to), "removed": packet.removed})
            await outbox_store.notify(conn, appender.deferred)
            return results

        packets: list[dict[str, Any]] = await self.writer.run(job)
        self.metrics.sent.inc(len(packets), schema=schema_id)
        self.metrics.submit_seconds.observe(time.perf_counter() - started)
        for packet in packets:
            log.info(
                "packet_queued",
                pid=packet["pid"],
                schema=schema_id,
                to=packet["to"],
                removed=packet["removed"],
                operator=operator.name,
            )
        return packets

    def _check_recipients(self, to: list[str]) -> None:
        """Yourself and a node that is not pinned are refused before the policy is asked."""
        for node in to:
            if node == self.node:
                raise RequestRefused(
                    ErrorCode.RECIPIENT_IS_SELF,
                    f"{node} is this node: a packet goes to another agency's node",
                )
            if not is_node_id(node) or self.directory.keyset(node) is None:
                raise RequestRefused(
                    ErrorCode.UNKNOWN_RECIPIENT,
                    f"{node[:253]} is not a pinned peer with a valid keyset"
                    " (`handover peers list` shows the pinned ones)",
                )

    async def _claim(
        self, conn: Connection, aids: list[str], pid: str, *, again: bool
    ) -> list[AttachmentItem]:
        if not aids:
            return []
        if self.attachments is None:
            raise RequestRefused(ErrorCode.BAD_REQUEST, "this node does not send attachments")
        return await self.attachments.claim_own(conn, aids, pid, again=again)

    def _check(self, to: object, schema_id: object, body: object, minimise: object) -> None:
        """The shape of a submission and its body's validity (submit and preview alike).

        Raises:
            RequestRefused: `bad_request`, `unknown_schema`, `schema_invalid`.
        """
        if not isinstance(to, list) or not to or not all(isinstance(n, str) for n in to):
            raise RequestRefused(ErrorCode.BAD_REQUEST, "'to' must be a non-empty list of node ids")
        if len(set(to)) != len(to):
            raise RequestRefused(ErrorCode.BAD_REQUEST, "'to' lists a node twice")
        if not isinstance(schema_id, str):
            raise RequestRefused(ErrorCode.BAD_REQUEST, "'schema' must be a schema id string")
        if not isinstance(body, dict):
            raise RequestRefused(ErrorCode.BAD_REQUEST, "'body' must be a JSON object")
        if not isinstance(minimise, bool):
            raise RequestRefused(ErrorCode.BAD_REQUEST, "'minimise' must be true or false")
        try:
            self.registry.validate(schema_id, body)
            # What JSON Schema lets through but canonical JSON cannot carry (1.0).
            check_value(body)
            # Art 7(2): the basis per field group; an assessment is never FACT.
            check_quality(self.registry, schema_id, body)
        except UnknownSchema as exc:
            raise RequestRefused(ErrorCode.UNKNOWN_SCHEMA, str(exc)) from exc
        except SchemaInvalid as exc:
            raise RequestRefused(ErrorCode.SCHEMA_INVALID, str(exc)) from exc
        except EncodingError as exc:
            raise RequestRefused(
                ErrorCode.SCHEMA_INVALID, f"the body cannot be sent: {exc}"
            ) from exc

    async def preview(self, *, to: object, schema_id: object, body: object) -> list[dict[str, Any]]:
        """What a minimised submission would send, per recipient, without sealing,
        queueing or logging anything: the fields each one gets and those the
        sharing policy withholds.

        Raises:
            RequestRefused: as :meth:`submit` (`schema_invalid`, `not_permitted`,
                `consent_required`, ...).
        """
        self._check(to, schema_id, body, True)
        assert isinstance(to, list) and isinstance(schema_id, str) and isinstance(body, dict)
        self._check_recipients(to)
        for node in to:
            self._recipient(node, self.clock())
        async with self.db.connection() as conn:
            planned = await self.workflow.plan(
                conn, to=list(to), schema=schema_id, body=body, minimise=True
            )
        return [
            {"node": node, "kind": kind, "body": packet.body, "removed": packet.removed}
            for packet in planned
            for node, kind in zip(packet.recipients, packet.kinds, strict=True)
        ]

    def _recipient(self, node: str, now: int) -> Recipient:
        keyset = self.directory.keyset(node) if is_node_id(node) else None
        if keyset is None:
            raise RequestRefused(
                ErrorCode.UNKNOWN_RECIPIENT, f"{node} is not a pinned peer with a valid keyset"
            )
        try:
            return Recipient.from_keyset(keyset, now)
        except SealError as exc:
            raise RequestRefused(ErrorCode.UNKNOWN_RECIPIENT, str(exc)) from exc

    async def packet_status(self, pid: str) -> dict[str, Any]:
        async with self.db.connection() as conn:
            row = await outbox_store.packet(conn, pid)
        if row is None:
            raise RequestRefused(ErrorCode.NOT_FOUND, "no sent packet with that pid")
        return {
            "pid": row.pid,
            "schema": row.schema_id,
            "case_ref": row.case_ref,
            "iat": row.iat,
            "exp": row.exp,
            "deliveries": [
                {
                    "node": d.node,
                    "status": d.status,
                    "attempts": d.attempts,
                    "receipt": receipt_json(d.receipt),
                    "reason": d.reason,
                    "last_error": d.last_error,
                }
                for d in row.deliveries
            ],
        }


def _aids(attachments: object) -> list[str]:
    """The submission's `attachments`: a list of at most 16 distinct aids."""
    if attachments is None:
        return []
    if (
        not isinstance(attachments, list)
        or len(attachments) > MAX_ATTACHMENTS
        or not all(isinstance(a, str) and len(a) == 22 for a in attachments)
        or len(set(attachments)) != len(attachments)
    ):
        raise RequestRefused(
            ErrorCode.BAD_REQUEST,
            f"'attachments' must be a list of at most {MAX_ATTACHMENTS} distinct attachment ids",
        )
    return list(attachments)
