"""Submit, receive and read: the orchestration between API, policy, crypto and store.

Handlers in `web/` authenticate and parse, then call one method here. Every
write that must be logged runs as a job through the :class:`AuditWriter`, so
the audit entry and the data it describes commit together.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

import structlog

from handover import crypto
from handover.audit import Appender, AuditWriter
from handover.canonical import b64u_encode, check_value, cj_dumps, cj_loads
from handover.config import NodeConfig
from handover.directory import Directory
from handover.errors import (
    ApiError,
    EncodingError,
    InvalidPacket,
    Reason,
    RejectCode,
    SchemaInvalid,
    SealError,
    UnknownSchema,
)
from handover.keyset import is_node_id
from handover.metrics import Metrics
from handover.packet import (
    Opened,
    Recipient,
    StoredReplay,
    UnverifiedPacket,
    check_replay,
    make_receipt,
    new_pid,
    open_parsed,
    parse_packet,
    parse_receipt,
    seal,
)
from handover.schemas import SchemaRegistry
from handover.store import outbox as outbox_store
from handover.store import received as received_store
from handover.store.db import Connection, Database
from handover.timeutil import DAY_MS, Clock
from handover.workflow import Workflow

log = structlog.get_logger(__name__)

INVALID_PACKET_BODY = b'{"error":"invalid_packet"}'
MAX_JUSTIFICATION = 1000


@dataclass(frozen=True)
class Operator:
    """An authenticated local API user (verified at the edge, passed inward)."""

    name: str
    role: str


@dataclass(frozen=True)
class ReceiveResult:
    status: int
    body: bytes


@dataclass(frozen=True)
class _Stored:
    """What the receive job stored (or found stored) for one packet."""

    opened: Opened
    pd: bytes
    receipt: bytes
    reason: RejectCode | None
    replay: bool = False
    conflict: bool = False


class _NoRevalidation:
    """The body was validated once at submission; sealing does not repeat it."""

    def validate(self, schema_id: str, body: object) -> None:
        return None


def case_ref_of(body: dict[str, Any]) -> str | None:
    value = body.get("case_ref")
    return value if isinstance(value, str) and 0 < len(value) <= 64 else None


def require_justification(justification: object) -> str:
    if not isinstance(justification, str) or not justification.strip():
        raise ApiError(400, "justification_required", "a justification is required")
    if len(justification) > MAX_JUSTIFICATION:
        raise ApiError(400, "justification_too_long", "the justification is over 1000 characters")
    return justification.strip()


class Service:
    def __init__(
        self,
        *,
        config: NodeConfig,
        db: Database,
        writer: AuditWriter,
        directory: Directory,
        registry: SchemaRegistry,
        metrics: Metrics,
        clock: Clock,
        storage_key: bytes,
        workflow: Workflow,
    ) -> None:
        self.config = config
        self.db = db
        self.writer = writer
        self.directory = directory
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self.storage_key = storage_key
        self.workflow = workflow

    @property
    def node(self) -> str:
        return self.config.node

    # --- sending ------------------------------------------------------------------

    async def submit(
        self,
        operator: Operator,
        *,
        to: object,
        schema_id: object,
        body: object,
        justification: object,
        minimise: object = False,
    ) -> list[dict[str, Any]]:
        """Validate, apply the sharing policy, log each disclosure, seal and queue.

        A submission becomes one packet per distinct view of the body (the
        policy may reduce it per recipient kind); each packet gets its own
        `disclosure` audit entry naming the fields it carries and those removed.

        Raises:
            ApiError: 400 for a malformed request; 422 for an unknown schema, an
                invalid body, a recipient that cannot be sealed to, or a policy
                or consent refusal (naming the field or scope and the recipient).
        """
        started = time.perf_counter()
        why = require_justification(justification)
        if not isinstance(to, list) or not to or not all(isinstance(n, str) for n in to):
            raise ApiError(400, "bad_request", "'to' must be a non-empty list of node ids")
        if len(set(to)) != len(to):
            raise ApiError(400, "bad_request", "'to' lists a node twice")
        if not isinstance(schema_id, str):
            raise ApiError(400, "bad_request", "'schema' must be a schema id string")
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "'body' must be a JSON object")
        if not isinstance(minimise, bool):
            raise ApiError(400, "bad_request", "'minimise' must be true or false")
        try:
            self.registry.validate(schema_id, body)
            # What JSON Schema lets through but canonical JSON cannot carry (1.0).
            check_value(body)
        except UnknownSchema as exc:
            raise ApiError(422, "unknown_schema", str(exc)) from exc
        except SchemaInvalid as exc:
            raise ApiError(422, "schema_invalid", str(exc)) from exc
        except EncodingError as exc:
            raise ApiError(422, "schema_invalid", f"the body cannot be sent: {exc}") from exc
        now = self.clock()
        case_ref = case_ref_of(body)
        identity = self.directory.keys.identity()
        ttl_ms = self.config.ttl_days * DAY_MS

        async def job(conn: Connection, appender: Appender) -> list[dict[str, Any]]:
            planned = await self.workflow.plan(
                conn, to=list(to), schema=schema_id, body=body, minimise=minimise
            )
            results = []
            for packet in planned:
                recipients = [self._recipient(node, now) for node in packet.recipients]
                pid = new_pid()
                position = appender.append(
                    "disclosure",
                    pid=pid,
                    case_ref=case_ref,
                    schema=schema_id,
                    to=packet.recipients,
                    fields=sorted(packet.body),
                    removed=packet.removed or None,
                    consents=packet.consents or None,
                    operator=operator.name,
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
                )
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
                    body_box=crypto.seal_at_rest(self.storage_key, body_cj),
                    fields=sorted(packet.body),
                    removed=packet.removed,
                    consents=packet.consents,
                    defer=appender.deferred,
                )
                await self.workflow.after_send(
                    conn,
                    pid=pid,
                    schema=schema_id,
                    body=body,
                    recipients=packet.recipients,
                    now=now,
                    defer=appender.deferred,
                )
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

    def _recipient(self, node: str, now: int) -> Recipient:
        keyset = self.directory.keyset(node) if is_node_id(node) else None
        if keyset is None:
            raise ApiError(
                422, "unknown_recipient", f"{node} is not a pinned peer with a valid keyset"
            )
        try:
            return Recipient.from_keyset(keyset, now)
        except SealError as exc:
            raise ApiError(422, "unknown_recipient", str(exc)) from exc

    async def packet_status(self, pid: str) -> dict[str, Any]:
        async with self.db.connection() as conn:
            row = await outbox_store.packet(conn, pid)
        if row is None:
            raise ApiError(404, "not_found", "no sent packet with that pid")
        return {
            "pid": row["pid"],
            "schema": row["schema_id"],
            "case_ref": row["case_ref"],
            "iat": row["iat"],
            "exp": row["exp"],
            "deliveries": [
                {
                    "node": d["node"],
                    "status": d["status"],
                    "attempts": d["attempts"],
                    "receipt": None if d["receipt"] is None else json.loads(d["receipt"]),
                    "reason": d["reason"],
                    "last_error": d["last_error"],
                }
                for d in row["deliveries"]
            ],
        }

    # --- receiving -----------------------------------------------------------------

    async def receive(self, wire: bytes) -> ReceiveResult:
        """Every receive check of PROTOCOL.md section 3 for one packet."""
        (result,) = await self.receive_many([wire])
        return result

    async def receive_many(self, wires: list[bytes]) -> list[ReceiveResult]:
        """Receive packets, each handled exactly as if posted alone.

        Steps 1-2 and the replay shortcut (3) run first for all of them (one
        replay lookup), steps 4-8 per packet, then one audit-writer job stores
        every packet, replay record, audit entry and receipt of
        the batch together (step 9's policy check runs inside it, so it sees
        consent recorded by packets earlier in the same batch).
        """
        started = time.perf_counter()
        results: list[ReceiveResult | None] = [None] * len(wires)
        invalid: list[tuple[InvalidPacket, UnverifiedPacket | None]] = []
        parsed: list[tuple[int, UnverifiedPacket]] = []
        for i, wire in enumerate(wires):
            try:
                parsed.append((i, parse_packet(wire)))
            except InvalidPacket as exc:
                invalid.append((exc, None))
                results[i] = ReceiveResult(400, INVALID_PACKET_BODY)
        stored: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        if parsed:
            async with self.db.connection() as conn:
                stored = await received_store.replay_records(
                    conn, [(p.sender, p.pid) for _, p in parsed]
                )
        opened: list[tuple[int, Opened]] = []
        for i, packet in parsed:
            try:
                hit = stored.get((packet.sender, packet.pid))
                replayed = check_replay(packet, None if hit is None else StoredReplay(*hit))
                if replayed is not None:
                    results[i] = self._answer_stored(replayed)
                    continue
                keyset = await self.directory.keyset_for_kid(
                    packet.sender, packet.unverified_header["from"]["kid"]
                )
                opened.append(
                    (
                        i,
                        open_parsed(
                            packet,
                            receiver=self.directory.keys.receiver_keys(),
                            sender_keyset=keyset,
                            now=self.clock(),
                            validator=self.registry,
                        ),
                    )
                )
            except InvalidPacket as exc:
                invalid.append((exc, packet))
                results[i] = ReceiveResult(400, INVALID_PACKET_BODY)
        for refusal, claimed in invalid:
            self._note_invalid(refusal, claimed)

        async def job(conn: Connection, appender: Appender) -> list[_Stored]:
            for refusal, claimed in invalid:
                self._audit_invalid(appender, refusal, claimed)
            done: dict[tuple[str, str], _Stored] = {}
            again = await received_store.replay_records(
                conn, [(o.sender, o.pid) for _, o in opened]
            )
            out = []
            for _, got in opened:
                key = (got.sender, got.pid)
                if key in done or key in again:
                    # A copy of this packet was stored first (same batch or concurrently).
                    pd, receipt = (done[key].pd, done[key].receipt) if key in done else again[key]
                    conflict = not crypto.constant_time_equal(pd, got.pd)
                    out.append(_Stored(got, got.pd, receipt, None, replay=True, conflict=conflict))
                    continue
                item = await self._store_received(conn, appender, got)
                done[key] = item
                out.append(item)
            return out

        if opened or invalid:
            stored_items: list[_Stored] = await self.writer.run(job)
            for (i, _), item in zip(opened, stored_items, strict=True):
                results[i] = self._after_store(item)
        elapsed = time.perf_counter() - started
        for _ in opened:
            self.metrics.receive_seconds.observe(elapsed)
        final = [r for r in results if r is not None]
        assert len(final) == len(wires)
        return final

    @staticmethod
    def _answer_stored(receipt: bytes) -> ReceiveResult:
        """A stored receipt is returned unchanged, with the HTTP status it had first."""
        stored, _sig = parse_receipt(receipt)
        return ReceiveResult(422 if stored.status == "rejected" else 200, receipt)

    def _after_store(self, item: _Stored) -> ReceiveResult:
        """Log and count once the transaction has committed (jobs may run twice)."""
        opened = item.opened
        if item.conflict:
            self._note_invalid(
                InvalidPacket(Reason.REPLAY_CONFLICT, "pid already received with another digest"),
                None,
            )
            return ReceiveResult(400, INVALID_PACKET_BODY)
        if item.replay:
            return self._answer_stored(item.receipt)
        status = "accepted" if item.reason is None else "rejected"
        self.metrics.received.inc(status=status)
        log.info(
            "packet_received",
            pid=opened.pid,
            sender=opened.sender,
            schema=opened.schema,
            status=status,
            reason=None if item.reason is None else item.reason.value,
        )
        return ReceiveResult(200 if item.reason is None else 422, item.receipt)

    async def _store_received(
        self, conn: Connection, appender: Appender, opened: Opened
    ) -> _Stored:
        now = self.clock()
        if opened.rejection is None:
            rejection = await self.workflow.check_receive(
                conn, sender=opened.sender, schema=opened.schema, body=opened.body
            )
            if rejection is not None:
                opened = dataclasses.replace(opened, rejection=rejection)
        accepted = opened.rejection is None
        case_ref = case_ref_of(opened.body) if accepted else None
        reason = None if opened.rejection is None else opened.rejection.code
        position = appender.append(
            "collection" if accepted else "rejection",
            pid=opened.pid,
            case_ref=case_ref,
            pd=b64u_encode(opened.pd),
            counterpart=opened.sender,
            schema=opened.schema,
            fields=sorted(opened.body) if accepted else None,
            reason=None if reason is None else reason.value,
            org=self.node,
            sender_log=opened.log.to_json(),
        )
        receipt = make_receipt(
            self.directory.keys.identity(),
            pid=opened.pid,
            pd=opened.pd,
            to=opened.sender,
            status="accepted" if accepted else "rejected",
            reason=reason,
            log=position,
            now=now,
        )
        defer = appender.deferred
        await received_store.insert(
            conn,
            defer,
            sender=opened.sender,
            pid=opened.pid,
            pd=opened.pd,
            status="accepted" if accepted else "rejected",
            reason=None if reason is None else reason.value,
            receipt=receipt,
            schema_id=opened.schema if accepted else None,
            case_ref=case_ref,
            iat=opened.iat,
            exp=opened.exp,
            received_at=now,
            log_seq=position.seq,
            sender_seq=opened.log.seq,
            sender_head=opened.log.head,
            keyset_serial=opened.keyset.serial,
            wire=opened.wire if accepted else None,
            body_box=(crypto.seal_at_rest(self.storage_key, opened.body_cj) if accepted else None),
        )
        if accepted:
            await self.workflow.after_receive(
                conn,
                pid=opened.pid,
                sender=opened.sender,
                schema=opened.schema,
                body=opened.body,
                now=now,
                defer=defer,
                appender=appender,
            )
        return _Stored(opened, opened.pd, receipt, reason)

    def _note_invalid(self, exc: InvalidPacket, packet: UnverifiedPacket | None) -> None:
        self.metrics.invalid.inc(reason=exc.reason.value)
        log.warning(
            "packet_invalid",
            reason=exc.reason.value,
            detail=exc.detail,
            claimed_sender=None if packet is None else packet.sender,
            claimed_pid=None if packet is None else packet.pid,
        )

    def _audit_invalid(
        self, appender: Appender, exc: InvalidPacket, packet: UnverifiedPacket | None
    ) -> None:
        """A precise local audit entry for a refused packet; the peer only sees
        `invalid_packet`. Claimed identifiers are marked unverified."""
        appender.append(
            "rejection",
            reason=exc.reason.value,
            detail=exc.detail[:200],
            unverified_sender=None if packet is None else packet.sender,
            unverified_pid=None if packet is None else packet.pid,
            pd=None if packet is None else b64u_encode(packet.pd),
            org=self.node,
        )

    # --- reading -------------------------------------------------------------------

    async def inbox(
        self, *, limit: int, before: int | None, case_ref: str | None
    ) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            rows = await received_store.inbox(conn, limit=limit, before=before, case_ref=case_ref)
        return [
            {
                "pid": r["pid"],
                "sender": r["sender"],
                "schema": r["schema_id"],
                "case_ref": r["case_ref"],
                "iat": r["iat"],
                "exp": r["exp"],
                "received_at": r["received_at"],
                "erased": not r["has_body"],
                "restricted": r["restricted"],
            }
            for r in rows
        ]

    async def read_inbox(
        self, operator: Operator, pid: str, justification: object
    ) -> dict[str, Any]:
        """Open a received body for an operator; logs a `consultation` entry first.

        Raises:
            ApiError: 400 without a justification, 403 restricted, 404 unknown pid, 410 erased.
        """
        why = require_justification(justification)
        async with self.db.connection() as conn:
            row = await received_store.get(conn, pid)
        if row is None:
            raise ApiError(404, "not_found", "no received packet with that pid")
        if row["body_box"] is None:
            raise ApiError(410, "erased", "the content of this packet has been erased")
        if row["restricted"] is not None:
            raise ApiError(
                403,
                "restricted",
                "this packet is restricted: its content is shown to no one until an admin"
                " lifts the restriction (POST /api/v1/packets/{pid}/restriction/lift)",
            )
        try:
            body = cj_loads(crypto.open_at_rest(self.storage_key, bytes(row["body_box"])))
        except crypto.CryptoFailure as exc:
            raise ApiError(500, "storage_key", "the stored body cannot be decrypted") from exc

        async def job(conn: Connection, appender: Appender) -> None:
            appender.append(
                "consultation",
                pid=pid,
                case_ref=row["case_ref"],
                schema=row["schema_id"],
                counterpart=row["sender"],
                fields=sorted(body),
                operator=operator.name,
                org=self.node,
                justification=why,
            )

        await self.writer.run(job)
        return {
            "pid": pid,
            "schema": row["schema_id"],
            "body": body,
            "sender": row["sender"],
            "case_ref": row["case_ref"],
            "iat": row["iat"],
            "exp": row["exp"],
            "received_at": row["received_at"],
            "receipt": json.loads(row["receipt"]),
        }
