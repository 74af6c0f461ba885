"""Receiving: packets from peers, checked, stored and answered with signed receipts.

Steps 1-2 and the replay shortcut (3) of docs/protocol.md section 3 run first for a
whole batch (one replay lookup), steps 4-8 per packet, then one audit-writer
job stores every packet, replay record, audit entry and receipt together
(step 9's policy check runs inside it, so it sees consent recorded by packets
earlier in the same batch). Answers are :class:`Answer` outcomes; the web
layer turns them into HTTP.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from handover.node.attachments import Attachments
from handover.node.directory import Directory
from handover.node.metrics import Metrics
from handover.node.security import SecurityLog
from handover.node.transport import Answer, Outcome
from handover.protocol import crypto
from handover.protocol.canonical import b64u_encode
from handover.protocol.errors import (
    InvalidPacket,
    Reason,
    RejectCode,
    Rejected,
)
from handover.protocol.opening import (
    AUTHENTICATED_REASONS,
    Opened,
    StoredReplay,
    UnverifiedPacket,
    check_replay,
    open_parsed,
    parse_packet,
)
from handover.protocol.receipt import make_receipt, parse_receipt
from handover.protocol.timeutil import Clock
from handover.store import events as event_store
from handover.store import received as received_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database
from handover.workflow.engine import ReceiveCheck, ReceivedHook, Workflow, case_ref_of
from handover.workflow.schemas import SchemaRegistry
from handover.workflow.vault import Vault

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Stored:
    """What the receive job stored (or found stored) for one packet."""

    opened: Opened
    pd: bytes
    receipt: bytes
    reason: RejectCode | None
    replay: bool = False
    conflict: bool = False
    incomplete: str | None = None  # check 8a: the aid without a complete upload


class Receiver:
    """Packets from peers: every receive check in the protocol's order, then one
    transaction per batch for packets, replay records, audit entries and receipts."""

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
        security: SecurityLog,
        received_hooks: Sequence[ReceivedHook] = (),
        receive_checks: Sequence[ReceiveCheck] = (),
        attachments: Attachments | None = None,
    ) -> None:
        """`received_hooks` run inside the receive transaction after the workflow's
        bookkeeping for an accepted packet with a case; `receive_checks` add to
        the receiver's policy at step 9 (the first rejection wins)."""
        self.node = node
        self.db = db
        self.writer = writer
        self.directory = directory
        self.registry = registry
        self.metrics = metrics
        self.vault = vault
        self.workflow = workflow
        self.clock = clock
        self.security = security
        self._received_hooks = tuple(received_hooks)
        self._receive_checks = tuple(receive_checks)
        self.attachments = attachments

    async def receive(self, wire: bytes, source: str = "unknown") -> Answer:
        """Every receive check of docs/protocol.md section 3 for one packet."""
        (result,) = await self.receive_many([wire], source)
        return result

    async def receive_many(self, wires: list[bytes], source: str = "unknown") -> list[Answer]:
        """Receive packets, each handled exactly as if posted alone.

        Steps 1-2 and the replay shortcut (3) run first for all of them (one
        replay lookup), steps 4-8 per packet, then one audit-writer job stores
        every packet, replay record, audit entry and receipt of
        the batch together (step 9's policy check runs inside it, so it sees
        consent recorded by packets earlier in the same batch).

        A refusal gets a `rejection` audit entry only when its sender was
        authenticated (a pinned peer's signature verified) and within that
        sender's allowance; every other refusal is counted in the security
        log against `source`, the address the packets came from.
        """
        started = time.perf_counter()
        results: list[Answer | None] = [None] * len(wires)
        invalid: list[tuple[InvalidPacket, UnverifiedPacket | None]] = []
        parsed: list[tuple[int, UnverifiedPacket]] = []
        for i, wire in enumerate(wires):
            try:
                parsed.append((i, parse_packet(wire)))
            except InvalidPacket as exc:
                invalid.append((_detached(exc), None))
                results[i] = Answer(Outcome.INVALID)
        stored: dict[tuple[str, str], StoredReplay] = {}
        if parsed:
            async with self.db.connection() as conn:
                stored = await received_store.replay_records(
                    conn, [(p.sender, p.pid) for _, p in parsed]
                )
        opened: list[tuple[int, Opened]] = []
        for i, packet in parsed:
            try:
                replayed = check_replay(packet, stored.get((packet.sender, packet.pid)))
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
                invalid.append((_detached(exc), packet))
                results[i] = Answer(Outcome.INVALID)
        audited: list[tuple[InvalidPacket, UnverifiedPacket]] = []
        for refusal, claimed in invalid:
            self._note_invalid(refusal, claimed)
            if (
                claimed is not None
                and refusal.reason in AUTHENTICATED_REASONS
                and self.security.senders.take(claimed.sender)
            ):
                audited.append((refusal, claimed))
            else:
                self.security.note(source, refusal.reason.value)
                self.security.sources.take(source)

        async def job(conn: Connection, appender: Appender) -> list[_Stored]:
            for refusal, claimed in audited:
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
                    first = done[key] if key in done else again[key]
                    conflict = not crypto.constant_time_equal(first.pd, got.pd)
                    out.append(
                        _Stored(got, got.pd, first.receipt, None, replay=True, conflict=conflict)
                    )
                    continue
                missing = await self._first_missing(conn, got)
                if missing is not None:
                    # Check 8a: no receipt, no replay record, nothing stored.
                    out.append(_Stored(got, got.pd, b"", None, incomplete=missing))
                    continue
                item = await self._store_received(conn, appender, got)
                done[key] = item
                out.append(item)
            return out

        if opened or audited:
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
    def _answer_stored(receipt: bytes) -> Answer:
        """A stored receipt is returned unchanged, with the HTTP status it had first."""
        stored, _sig = parse_receipt(receipt)
        return Answer(Outcome(stored.status), receipt)

    def _after_store(self, item: _Stored) -> Answer:
        """Log and count once the transaction has committed (jobs may run twice)."""
        opened = item.opened
        if item.incomplete is not None:
            log.info("packet_attachment_incomplete", pid=opened.pid, sender=opened.sender)
            return Answer(Outcome.ATTACHMENT_INCOMPLETE, None, detail=item.incomplete)
        if item.conflict:
            self._note_invalid(
                InvalidPacket(Reason.REPLAY_CONFLICT, "pid already received with another digest"),
                None,
            )
            return Answer(Outcome.INVALID)
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
        return Answer(Outcome.ACCEPTED if item.reason is None else Outcome.REJECTED, item.receipt)

    async def _first_missing(self, conn: Connection, opened: Opened) -> str | None:
        """Check 8a (section 8): each attachment has a complete upload from the sender."""
        if not opened.attachments:
            return None
        if self.attachments is None:
            return opened.attachments[0].aid
        return await self.attachments.first_missing(
            conn, opened.sender, opened.pid, opened.attachments
        )

    async def _store_received(
        self, conn: Connection, appender: Appender, opened: Opened
    ) -> _Stored:
        now = self.clock()
        if opened.rejection is None:
            rejection = await self._check_receive(conn, opened)
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
        stored = self.vault.seal(opened.body_cj) if accepted else None
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
            # The wire opens with our own box key: it is sealed with the body's
            # data key, so erasing that key shreds both (crypto-shredding).
            wire=self.vault.seal(opened.wire, stored.key).box if stored else None,
            body_box=stored.box if stored else None,
            data_key=stored.key if stored else None,
        )
        if accepted and opened.attachments and self.attachments is not None:
            # Step 10 binds the uploads: they share the packet's retention from now on.
            await self.attachments.bind(conn, opened.sender, opened.pid, opened.attachments)
        if accepted:
            await event_store.add(
                conn,
                defer,
                "inbox",
                at=now,
                pid=opened.pid,
                case_ref=case_ref,
                node=opened.sender,
                schema=opened.schema,
            )
            received = await self.workflow.after_receive(
                conn,
                pid=opened.pid,
                sender=opened.sender,
                schema=opened.schema,
                body=opened.body,
                now=now,
                defer=defer,
                appender=appender,
            )
            if received is not None:
                for hook in self._received_hooks:
                    await hook(conn, received)
        return _Stored(opened, opened.pd, receipt, reason)

    async def _check_receive(self, conn: Connection, opened: Opened) -> Rejected | None:
        """Step 9: the receiver's policy, then the extra checks the node was built with."""
        rejection = await self.workflow.check_receive(
            conn, sender=opened.sender, schema=opened.schema, body=opened.body
        )
        for check in self._receive_checks:
            if rejection is not None:
                break
            rejection = await check(conn, opened.sender, opened.schema, opened.body)
        return rejection

    def _note_invalid(self, exc: InvalidPacket, packet: UnverifiedPacket | None) -> None:
        # The metric says only whether the sender was authenticated: a label per
        # reason would tell anyone who reads it which agencies are pinned.
        stage = "authenticated" if exc.reason in AUTHENTICATED_REASONS else "unauthenticated"
        self.metrics.invalid.inc(stage=stage)
        # Reason codes only: a parser's detail may quote the sender's bytes.
        log.warning(
            "packet_invalid",
            reason=exc.reason.value,
            claimed_sender=None if packet is None else packet.sender,
            claimed_pid=None if packet is None else packet.pid,
        )

    def _audit_invalid(
        self, appender: Appender, exc: InvalidPacket, packet: UnverifiedPacket
    ) -> None:
        """A precise local audit entry for a refused packet from an authenticated
        sender; the peer only sees `invalid_packet`. Reason codes and lengths,
        never input text; the pid is marked unverified (the payload was not)."""
        appender.append(
            "rejection",
            reason=exc.reason.value,
            bytes=len(packet.wire),
            unverified_sender=packet.sender,
            unverified_pid=packet.pid,
            pd=b64u_encode(packet.pd),
            org=self.node,
        )


def _detached(exc: InvalidPacket) -> InvalidPacket:
    """The refusal without its traceback and chained exceptions: kept in a list in
    the frame that raised it, they would form a cycle holding that frame's
    locals (a wire of up to 22.5 MiB) until the cycle collector runs."""
    exc.__traceback__ = None
    exc.__context__ = None
    exc.__cause__ = None
    return exc
