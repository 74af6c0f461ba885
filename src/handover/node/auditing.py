"""The node's own audit log as others see it: signed checkpoints, entry digests
and fork declarations for peers (docs/protocol.md section 5 and 5.1),
pages for auditors, and verification of the own chains (the current one and
those archived by a restore) and of peers' chains (witnessing)."""

from __future__ import annotations

from typing import Any

from handover.node import witness
from handover.node.directory import Directory
from handover.node.transport import Transport
from handover.protocol import auditchain
from handover.protocol.auditchain import LogPosition
from handover.protocol.canonical import b64u_encode, cj_loads
from handover.protocol.errors import EncodingError, InvalidCheckpoint
from handover.protocol.packet import Identity
from handover.protocol.timeutil import Clock
from handover.store import audit as audit_store
from handover.store import forks as forks_store
from handover.store.auditlog import Appender, verify_chain
from handover.store.db import Database

RESTORED = "restored_from_backup"


class AuditLog:
    def __init__(
        self, *, node: str, db: Database, directory: Directory, transport: Transport, clock: Clock
    ) -> None:
        self.node = node
        self.db = db
        self.directory = directory
        self.transport = transport
        self.clock = clock

    async def checkpoint(self) -> bytes:
        """A fresh checkpoint of the log head, signed with the node's identity key."""
        async with self.db.connection() as conn:
            seq, head = await audit_store.last_head(conn)
        identity = self.directory.keys.identity()
        return auditchain.make_checkpoint(
            node=self.node,
            kid=identity.kid,
            key=identity.key,
            position=auditchain.LogPosition(seq, head),
            now=self.clock(),
        )

    async def entry_digests(self, after: int, limit: int) -> list[bytes]:
        async with self.db.connection() as conn:
            rows = await audit_store.entries(conn, after, limit)
        return [auditchain.entry_digest(r.entry) for r in rows]

    async def entries(
        self,
        *,
        after: int,
        limit: int,
        case_ref: str | None,
        pid: str | None,
        purpose: str | None = None,
    ) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            rows = await audit_store.page(
                conn, after=after, limit=limit, case_ref=case_ref, pid=pid, purpose=purpose
            )
        return [
            {"seq": r.seq, "entry": cj_loads(r.entry), "head": b64u_encode(r.head)} for r in rows
        ]

    async def fork_declarations(self) -> list[bytes]:
        """The signed declarations of every fork of our log, oldest first."""
        async with self.db.connection() as conn:
            return [fork.wire for fork in await forks_store.all_forks(conn)]

    async def verify(self, *, peers: bool) -> dict[str, Any]:
        """The own chain recomputed, and the chains archived by restores with their
        declarations; with `peers`, every peer's log witnessed too."""
        chain = await verify_chain(self.db)
        out: dict[str, Any] = {"ok": chain.ok, "chain": chain.to_json()}
        forks = await self.verify_forks()
        if forks:
            out["forks"] = forks
            out["ok"] = out["ok"] and all(f["ok"] for f in forks)
        if peers:
            reports = await self.witness_peers()
            out["peers"] = [r.to_json() for r in reports]
            out["ok"] = out["ok"] and all(r.ok for r in reports)
        return out

    async def witness_peers(self) -> list[witness.PeerReport]:
        return await witness.verify_peers(self.db, self.directory, self.transport, self.clock)

    async def verify_forks(self) -> list[dict[str, Any]]:
        """Each declared fork: its archived chain recomputed to the declared head, its
        declaration's signature, and the `alteration` entry that begins the next chain."""
        async with self.db.connection() as conn:
            forks = await forks_store.all_forks(conn)
        keyset = self.directory.keys.keyset
        out = []
        for i, fork in enumerate(forks):
            report = await forks_store.verify_archived(self.db, fork)
            item: dict[str, Any] = {
                "chain": fork.chain,
                "previous": LogPosition(fork.prev_seq, fork.prev_head).to_json(),
                "backup_at": fork.backup_at,
                "declared_at": fork.declared_at,
                "reason": fork.reason,
                **report.to_json(),
            }
            problem = report.problem if not report.ok else ""
            try:
                declared = auditchain.verify_fork_declaration(fork.wire, keyset, self.clock())
                if (declared.previous.seq, declared.previous.head, declared.iat) != (
                    fork.prev_seq,
                    fork.prev_head,
                    fork.declared_at,
                ):
                    problem = problem or "the signed declaration does not match the archive"
            except InvalidCheckpoint as exc:
                problem = problem or str(exc)
            after = forks[i + 1].chain if i + 1 < len(forks) else None
            async with self.db.connection() as conn:
                first = await forks_store.first_entry(conn, after)
            if not problem and not _begins_after(first, fork):
                where = "the current chain" if after is None else f"archived chain {after}"
                problem = f"{where} does not begin with the alteration entry naming this fork"
            item["ok"] = not problem
            if problem:
                item["problem"] = problem
            out.append(item)
        return out


def _begins_after(first: bytes | None, fork: forks_store.Fork) -> bool:
    """Whether entry 1 of a chain is the `alteration` entry that names `fork`."""
    if first is None:
        return False
    try:
        entry = cj_loads(first)
    except EncodingError:
        return False
    previous = LogPosition(fork.prev_seq, fork.prev_head).to_json()
    return (
        isinstance(entry, dict)
        and entry.get("op") == "alteration"
        and entry.get("action") == RESTORED
        and entry.get("chain") == fork.chain
        and entry.get("previous") == previous
    )


async def declare_fork(
    db: Database, identity: Identity, *, reason: str, backup_at: int, clock: Clock
) -> forks_store.Fork:
    """Declare that our log restarts here (after a restore from backup).

    In one transaction under the audit lock: the chain the database holds is
    archived whole, a new chain begins with an `alteration` entry naming its
    last position, and the signed declaration peers fetch is stored.
    """
    now = clock()
    async with db.transaction() as conn:
        await forks_store.lock(conn)
        seq, head = await audit_store.last_head(conn)
        previous = LogPosition(seq, head)
        chain = await forks_store.archive_chain(conn)
        appender = Appender(0, auditchain.ZERO_HEAD, lambda: now)
        appender.append(
            "alteration",
            action=RESTORED,
            chain=chain,
            previous=previous.to_json(),
            backup_at=backup_at,
            justification=reason,
            org=identity.node,
        )
        await appender.flush(conn)
        wire = auditchain.make_fork_declaration(
            node=identity.node, kid=identity.kid, key=identity.key, previous=previous, now=now
        )
        fork = forks_store.Fork(chain, seq, head, backup_at, now, reason, wire)
        await forks_store.add(conn, fork)
    return fork
