"""The node's own audit log as others see it: signed checkpoints and entry
digests for peers (docs/protocol.md section 5), pages for auditors, and
verification of the own chain and of peers' chains (witnessing)."""

from __future__ import annotations

from typing import Any

from handover.node import witness
from handover.node.directory import Directory
from handover.node.transport import Transport
from handover.protocol import auditchain
from handover.protocol.canonical import b64u_encode, cj_loads
from handover.protocol.timeutil import Clock
from handover.store import audit as audit_store
from handover.store.auditlog import verify_chain
from handover.store.db import Database


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
        self, *, after: int, limit: int, case_ref: str | None, pid: str | None
    ) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            rows = await audit_store.page(
                conn, after=after, limit=limit, case_ref=case_ref, pid=pid
            )
        return [
            {"seq": r.seq, "entry": cj_loads(r.entry), "head": b64u_encode(r.head)} for r in rows
        ]

    async def verify(self, *, peers: bool) -> dict[str, Any]:
        """The own chain recomputed; with `peers`, every peer's log witnessed too."""
        chain = await verify_chain(self.db)
        out: dict[str, Any] = {"ok": chain.ok, "chain": chain.to_json()}
        if peers:
            reports = await self.witness_peers()
            out["peers"] = [r.to_json() for r in reports]
            out["ok"] = chain.ok and all(r.ok for r in reports)
        return out

    async def witness_peers(self) -> list[witness.PeerReport]:
        return await witness.verify_peers(self.db, self.directory, self.transport, self.clock)
