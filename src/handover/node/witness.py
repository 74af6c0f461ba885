"""Witnessing peers' audit logs (docs/protocol.md section 5).

Every receipt a peer signed for us carries its log position after recording
our packet; every packet it sent us carries its position after the
disclosure. With a fresh signed checkpoint `(M, head_M)` and the entry digests
`1..M`, we recompute the peer's chain and check that each held statement lies
on it. A mismatch, or a log that shrank below a position the peer signed,
is a fork: the two conflicting signed statements are the proof.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from handover.node.directory import Directory
from handover.node.errors import TransportError
from handover.node.transport import Transport
from handover.protocol import auditchain
from handover.protocol.canonical import b64u_decode, b64u_encode
from handover.protocol.errors import EncodingError, InvalidCheckpoint, InvalidReceipt
from handover.protocol.receipt import parse_receipt
from handover.protocol.timeutil import Clock
from handover.store import outbox as outbox_store
from handover.store import peers as peer_store
from handover.store import received as received_store
from handover.store.db import Database

DIGEST_PAGE = 10_000


@dataclass(frozen=True)
class Statement:
    """A signed claim by a peer that its log had `head` after entry `seq`."""

    seq: int
    head: bytes
    kind: str  # "receipt" | "packet" | "checkpoint"
    ref: str  # pid, or checkpoint iat
    wire: str  # the signed statement as held (receipt / checkpoint wire, or packet pid)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "ref": self.ref,
            "seq": self.seq,
            "head": b64u_encode(self.head),
            "signed": self.wire,
        }


@dataclass
class PeerReport:
    node: str
    ok: bool = True
    checked: int = 0
    checkpoint_seq: int | None = None
    problem: str = ""
    conflict: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "ok": self.ok, "checked": self.checked}
        if self.checkpoint_seq is not None:
            out["checkpoint_seq"] = self.checkpoint_seq
        if not self.ok:
            out["problem"] = self.problem
            out["conflict"] = self.conflict
        return out


async def _statements(db: Database, node: str) -> list[Statement]:
    held: list[Statement] = []
    async with db.connection() as conn:
        for r in await outbox_store.receipts_from(conn, node):
            try:
                receipt, _sig = parse_receipt(r.receipt)
            except InvalidReceipt:
                continue
            held.append(
                Statement(receipt.log.seq, receipt.log.head, "receipt", r.pid, r.receipt.decode())
            )
        for c in await received_store.sender_commitments(conn, node):
            signed = f"packet {c.pid} (sender log inside)"
            held.append(Statement(c.sender_seq, c.sender_head, "packet", c.pid, signed))
        for p in await peer_store.checkpoints(conn, node):
            held.append(Statement(p.seq, p.head, "checkpoint", str(p.seq), p.wire.decode()))
    return held


async def verify_peer(
    db: Database, directory: Directory, transport: Transport, node: str, clock: Clock
) -> PeerReport:
    report = PeerReport(node)
    url = directory.url(node)
    keyset = directory.keyset(node) or await directory.refresh(node)
    if url is None or keyset is None:
        report.ok = False
        report.problem = "no pinned URL or valid keyset for this peer"
        return report
    now = clock()
    try:
        wire = await transport.fetch_log_head(url)
        checkpoint = auditchain.verify_checkpoint(wire, keyset, now)
    except InvalidCheckpoint:
        # Perhaps a rotated key: refetch the keyset once and try again.
        keyset = await directory.refresh(node) or keyset
        try:
            checkpoint = auditchain.verify_checkpoint(wire, keyset, now)
        except InvalidCheckpoint as exc:
            report.ok = False
            report.problem = f"checkpoint refused: {exc}"
            return report
    except TransportError as exc:
        report.ok = False
        report.problem = f"checkpoint fetch failed: {exc}"
        return report
    async with db.connection() as conn:
        await peer_store.store_checkpoint(
            conn,
            node,
            checkpoint.seq,
            checkpoint.head,
            checkpoint.iat,
            checkpoint.wire,
            keyset.serial,
            now,
        )
    report.checkpoint_seq = checkpoint.seq
    current = Statement(
        checkpoint.seq, checkpoint.head, "checkpoint", str(checkpoint.iat), wire.decode()
    )
    held = await _statements(db, node)
    report.checked = len(held)

    # Two statements for one seq with different heads: a fork, whatever the digests say.
    by_seq: dict[int, list[Statement]] = defaultdict(list)
    for s in [*held, current]:
        by_seq[s.seq].append(s)
    for seq in sorted(by_seq):
        heads = {s.head for s in by_seq[seq]}
        if len(heads) > 1:
            a = by_seq[seq][0]
            b = next(s for s in by_seq[seq] if s.head != a.head)
            report.ok = False
            report.problem = f"two signed statements give different heads for seq {seq}"
            report.conflict = [a.to_json(), b.to_json()]
            return report

    beyond = [s for s in held if s.seq > checkpoint.seq]
    if beyond:
        worst = max(beyond, key=lambda s: s.seq)
        report.ok = False
        report.problem = (
            f"the peer's log has {checkpoint.seq} entries but it signed a position at seq"
            f" {worst.seq}: entries were removed"
        )
        report.conflict = [worst.to_json(), current.to_json()]
        return report

    wanted = {s.seq: s for s in held if s.seq > 0}
    head = auditchain.ZERO_HEAD
    seq = 0
    while seq < checkpoint.seq:
        try:
            page = await transport.fetch_digests(url, seq, min(DIGEST_PAGE, checkpoint.seq - seq))
        except TransportError as exc:
            report.ok = False
            report.problem = f"digest fetch failed: {exc}"
            return report
        if not page:
            report.ok = False
            report.problem = f"the peer served no digests after seq {seq} below its checkpoint"
            report.conflict = [current.to_json()]
            return report
        for text in page:
            try:
                digest = b64u_decode(text, 32)
            except EncodingError:
                report.ok = False
                report.problem = f"malformed digest after seq {seq}"
                return report
            seq += 1
            head = auditchain.next_head(head, digest, is_digest=True)
            statement = wanted.get(seq)
            if statement is not None and statement.head != head:
                report.ok = False
                report.problem = (
                    f"the peer's chain does not pass through the head it signed at seq {seq}"
                )
                report.conflict = [statement.to_json(), current.to_json()]
                return report
            if seq == checkpoint.seq:
                break
    if head != checkpoint.head:
        report.ok = False
        report.problem = "the served digests do not lead to the checkpoint head"
        report.conflict = [current.to_json()]
    return report


async def verify_peers(
    db: Database, directory: Directory, transport: Transport, clock: Clock
) -> list[PeerReport]:
    await directory.load()
    return [
        await verify_peer(db, directory, transport, node, clock) for node in sorted(directory.peers)
    ]
