"""Witnessing peers' audit logs (docs/protocol.md section 5).

Every receipt a peer signed for us carries its log position after recording
our packet; every packet it sent us carries its position after the
disclosure. With a fresh signed checkpoint `(M, head_M)` and the entry digests
`1..M`, we recompute the peer's chain and check that each held statement lies
on it. A mismatch, or a log that shrank below a position the peer signed,
is a fork: the two conflicting signed statements are the proof.

A fork the peer declared (a restore from backup, docs/protocol.md 5.1) is
told apart from a silent one: statements signed before its declaration must
agree with the position it names, those signed after must lie on the current
chain. Both leave the peer not `ok`; the report says which (`fork`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from handover.node.directory import Directory
from handover.node.errors import TransportError
from handover.node.transport import Transport
from handover.protocol import auditchain
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_loads, parse_wire_object
from handover.protocol.errors import EncodingError, InvalidCheckpoint, InvalidReceipt
from handover.protocol.keyset import Keyset
from handover.protocol.receipt import parse_receipt
from handover.protocol.timeutil import Clock, date_time
from handover.store import forks as forks_store
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
    at: int = 0  # when it was signed (its iat), to place it before or after a declared fork

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
    fork: str | None = None  # "silent" | "declared", when signed statements contradict
    declared_fork: dict[str, Any] | None = None
    # Not `ok` only because the peer could not be reached: its log was not checked.
    unreachable: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "ok": self.ok, "checked": self.checked}
        if self.checkpoint_seq is not None:
            out["checkpoint_seq"] = self.checkpoint_seq
        if not self.ok:
            out["problem"] = self.problem
            out["conflict"] = self.conflict
        if self.fork is not None:
            out["fork"] = self.fork
        if self.declared_fork is not None:
            out["declared_fork"] = self.declared_fork
        if self.unreachable:
            out["unreachable"] = True
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
                Statement(
                    receipt.log.seq,
                    receipt.log.head,
                    "receipt",
                    r.pid,
                    r.receipt.decode(),
                    receipt.iat,
                )
            )
        times = await forks_store.packet_times(conn, node)
        for c in await received_store.sender_commitments(conn, node):
            signed = f"packet {c.pid} (sender log inside)"
            held.append(
                Statement(c.sender_seq, c.sender_head, "packet", c.pid, signed, times.get(c.pid, 0))
            )
        for p in await peer_store.checkpoints(conn, node):
            wire = p.wire.decode()
            held.append(Statement(p.seq, p.head, "checkpoint", str(p.seq), wire, _iat_of(wire)))
    return held


def _iat_of(checkpoint_wire: str) -> int:
    """The iat of a checkpoint we verified when we stored it."""
    try:
        body = cj_loads(b64u_decode(parse_wire_object(checkpoint_wire, ("hp1c", "sig"))["hp1c"]))
    except EncodingError:
        return 0
    iat = body.get("iat") if isinstance(body, dict) else None
    return iat if isinstance(iat, int) else 0


@dataclass(frozen=True)
class _Finding:
    problem: str
    conflict: list[dict[str, Any]] = field(default_factory=list)
    fork: bool = False  # signed statements contradict each other (not a fetch failure)
    unreachable: bool = False  # a fetch failed: nothing was found wrong, nothing checked


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
        report.unreachable = True
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
        checkpoint.seq,
        checkpoint.head,
        "checkpoint",
        str(checkpoint.iat),
        wire.decode(),
        checkpoint.iat,
    )
    held = await _statements(db, node)
    report.checked = len(held)
    finding = await _check(transport, url, held, current)
    if finding is None:
        return report
    report.ok = False
    report.problem, report.conflict = finding.problem, finding.conflict
    report.unreachable = finding.unreachable
    if finding.fork:
        await _classify_fork(report, transport, url, keyset, now, held, current)
    return report


async def _check(
    transport: Transport, url: str, held: list[Statement], current: Statement
) -> _Finding | None:
    """Whether every held statement lies on the chain that ends at `current`."""
    # Two statements for one seq with different heads: a fork, whatever the digests say.
    by_seq: dict[int, list[Statement]] = defaultdict(list)
    for s in [*held, current]:
        by_seq[s.seq].append(s)
    for seq in sorted(by_seq):
        heads = {s.head for s in by_seq[seq]}
        if len(heads) > 1:
            a = by_seq[seq][0]
            b = next(s for s in by_seq[seq] if s.head != a.head)
            return _Finding(
                f"two signed statements give different heads for seq {seq}",
                [a.to_json(), b.to_json()],
                fork=True,
            )

    beyond = [s for s in held if s.seq > current.seq]
    if beyond:
        worst = max(beyond, key=lambda s: s.seq)
        return _Finding(
            f"the peer's log has {current.seq} entries but it signed a position at seq"
            f" {worst.seq}: entries were removed",
            [worst.to_json(), current.to_json()],
            fork=True,
        )

    wanted = {s.seq: s for s in held if s.seq > 0}
    head = auditchain.ZERO_HEAD
    seq = 0
    while seq < current.seq:
        try:
            page = await transport.fetch_digests(url, seq, min(DIGEST_PAGE, current.seq - seq))
        except TransportError as exc:
            return _Finding(f"digest fetch failed: {exc}", unreachable=True)
        if not page:
            return _Finding(
                f"the peer served no digests after seq {seq} below its checkpoint",
                [current.to_json()],
            )
        for text in page:
            try:
                digest = b64u_decode(text, 32)
            except EncodingError:
                return _Finding(f"malformed digest after seq {seq}")
            seq += 1
            head = auditchain.next_head(head, digest, is_digest=True)
            statement = wanted.get(seq)
            if statement is not None and statement.head != head:
                return _Finding(
                    f"the peer's chain does not pass through the head it signed at seq {seq}",
                    [statement.to_json(), current.to_json()],
                    fork=True,
                )
            if seq == current.seq:
                break
    if head != current.head:
        return _Finding(
            "the served digests do not lead to the checkpoint head", [current.to_json()]
        )
    return None


# --- declared forks (docs/protocol.md 5.1) ---------------------------------------------


async def _classify_fork(
    report: PeerReport,
    transport: Transport,
    url: str,
    keyset: Keyset,
    now: int,
    held: list[Statement],
    current: Statement,
) -> None:
    """A fork was found: tell whether a valid declaration of the peer covers it."""
    report.fork = "silent"
    try:
        wires = await transport.fetch_forks(url)
    except TransportError as exc:
        report.problem = (
            f"silent fork: {report.problem} (its fork declarations could not be fetched: {exc})"
        )
        return
    declarations: list[auditchain.ForkDeclaration] = []
    refused: list[str] = []
    for wire in wires:
        try:
            declarations.append(auditchain.verify_fork_declaration(wire, keyset, now))
        except InvalidCheckpoint as exc:
            refused.append(str(exc))
    if not declarations:
        note = f"; {len(refused)} refused, e.g. {refused[0]}" if refused else ""
        report.problem = f"silent fork: {report.problem} (the peer declared no fork{note})"
        return
    declarations.sort(key=lambda d: (d.iat, d.previous.seq))
    latest = declarations[-1]
    before = [s for s in held if s.at < latest.iat]
    after = [s for s in held if s.at >= latest.iat]
    finding = await _check(transport, url, after, current) or _against(before, declarations)
    if finding is not None:
        report.problem = f"silent fork: {finding.problem} (no fork declaration covers it)"
        report.conflict = finding.conflict
        return
    lost = [s for s in before if s.seq > _declaration_for(s, declarations).previous.seq]
    report.fork = "declared"
    report.declared_fork = {
        "declarations": [d.to_json() for d in declarations],
        "before": len(before),
        "lost": len(lost),
    }
    report.problem = (
        f"declared fork: the peer restored its log from a backup ending at seq"
        f" {latest.previous.seq} and began a new chain on {date_time(latest.iat)};"
        f" {len(lost)} of the {len(before)} statements it signed before then name entries"
        " lost in the restore"
    )
    report.conflict = [max(lost, key=lambda s: s.seq).to_json()] if lost else []


def _declaration_for(
    statement: Statement, declarations: list[auditchain.ForkDeclaration]
) -> auditchain.ForkDeclaration:
    """The declaration that ended the chain `statement` was signed on."""
    return next(d for d in declarations if statement.at < d.iat)


def _declared(declaration: auditchain.ForkDeclaration) -> dict[str, Any]:
    return {
        "kind": "fork",
        "ref": str(declaration.iat),
        "seq": declaration.previous.seq,
        "head": b64u_encode(declaration.previous.head),
        "signed": declaration.wire.decode(),
    }


def _against(
    before: list[Statement], declarations: list[auditchain.ForkDeclaration]
) -> _Finding | None:
    """Statements signed on earlier chains: each must agree with the position the
    declaration that ended its chain names, and with the others of its chain."""
    chains: dict[int, list[Statement]] = defaultdict(list)
    for s in before:
        chains[declarations.index(_declaration_for(s, declarations))].append(s)
    for index, statements in sorted(chains.items()):
        end = declarations[index].previous
        first: dict[int, Statement] = {}
        for s in sorted(statements, key=lambda s: s.at):
            if s.seq == end.seq and s.head != end.head:
                return _Finding(
                    f"the peer signed seq {s.seq} with another head than its fork"
                    " declaration names",
                    [s.to_json(), _declared(declarations[index])],
                    fork=True,
                )
            other = first.setdefault(s.seq, s)
            if other.head != s.head:
                return _Finding(
                    f"two signed statements give different heads for seq {s.seq} before the"
                    " peer's declared fork",
                    [other.to_json(), s.to_json()],
                    fork=True,
                )
    return None


async def verify_peers(
    db: Database, directory: Directory, transport: Transport, clock: Clock
) -> list[PeerReport]:
    await directory.load()
    return [
        await verify_peer(db, directory, transport, node, clock) for node in sorted(directory.peers)
    ]
