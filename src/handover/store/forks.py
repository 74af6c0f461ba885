"""Declared forks of the node's own audit log (docs/protocol.md section 5.1).

A restore from backup loses the entries written after the backup. The chain
the backup holds is moved whole to `audit_archive` as chain N, `audit_log`
starts again at seq 1, and `audit_forks` keeps the signed declaration that
peers fetch. Everything runs inside the caller's transaction, which holds the
audit lock (:func:`lock`), so no entry is appended in between.
"""

from __future__ import annotations

from dataclasses import dataclass

from handover.protocol import auditchain
from handover.protocol.canonical import cj_loads
from handover.protocol.errors import EncodingError
from handover.store.audit import AuditEntry
from handover.store.auditlog import ChainReport
from handover.store.db import AUDIT_LOCK, Connection, Database, to_row, to_rows


@dataclass(frozen=True, slots=True)
class Fork:
    """A declared fork: archived chain `chain` ends at (`prev_seq`, `prev_head`)."""

    chain: int
    prev_seq: int
    prev_head: bytes
    backup_at: int
    declared_at: int
    reason: str
    wire: bytes


async def lock(conn: Connection) -> None:
    """Take the audit lock for the rest of the transaction (the writer's own lock)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK)


async def archive_chain(conn: Connection) -> int:
    """Move every entry of `audit_log` to `audit_archive` as a new chain; its number."""
    chain = int(
        await conn.fetchval(
            "SELECT coalesce(greatest((SELECT max(chain) FROM audit_forks),"
            " (SELECT max(chain) FROM audit_archive)), 0) + 1"
        )
    )
    await conn.execute(
        "INSERT INTO audit_archive (chain, seq, at, op, entry, head, pid, case_ref)"
        " SELECT $1, seq, at, op, entry, head, pid, case_ref FROM audit_log",
        chain,
    )
    await conn.execute("DELETE FROM audit_log")
    return chain


async def add(conn: Connection, fork: Fork) -> None:
    await conn.execute(
        "INSERT INTO audit_forks"
        " (chain, prev_seq, prev_head, backup_at, declared_at, reason, wire)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        fork.chain,
        fork.prev_seq,
        fork.prev_head,
        fork.backup_at,
        fork.declared_at,
        fork.reason,
        fork.wire,
    )


async def all_forks(conn: Connection) -> list[Fork]:
    """Every declared fork, oldest first."""
    rows = await conn.fetch(
        "SELECT chain, prev_seq, prev_head, backup_at, declared_at, reason, wire"
        " FROM audit_forks ORDER BY chain"
    )
    return to_rows(Fork, rows)


async def archived(conn: Connection, chain: int, after: int, limit: int) -> list[AuditEntry]:
    """Entries of archived chain `chain` after seq `after`, in order."""
    rows = await conn.fetch(
        "SELECT seq, entry, head FROM audit_archive WHERE chain = $1 AND seq > $2"
        " ORDER BY seq LIMIT $3",
        chain,
        after,
        limit,
    )
    return to_rows(AuditEntry, rows)


async def first_entry(conn: Connection, chain: int | None) -> bytes | None:
    """Entry 1 of archived chain `chain`, or of the current chain (None)."""
    if chain is None:
        row = await conn.fetchrow("SELECT seq, entry, head FROM audit_log WHERE seq = 1")
    else:
        row = await conn.fetchrow(
            "SELECT seq, entry, head FROM audit_archive WHERE chain = $1 AND seq = 1", chain
        )
    return None if row is None else to_row(AuditEntry, row).entry


async def packet_times(conn: Connection, node: str) -> dict[str, int]:
    """When each packet received from `node` was signed (its iat), by pid: the time
    of the sender commitment it carries, for telling chains of a declared fork apart."""
    rows = await conn.fetch(
        "SELECT pid, iat FROM received WHERE sender = $1 AND sender_seq > 0", node
    )
    return {str(r["pid"]): int(r["iat"]) for r in rows}


async def verify_archived(db: Database, fork: Fork, page_size: int = 5000) -> ChainReport:
    """Recompute archived chain `fork.chain` from the zero head, as `verify_chain`
    does for the current one, and check it ends where the declaration says."""
    head = auditchain.ZERO_HEAD
    expected = 1
    async with db.connection() as conn:
        while True:
            rows = await archived(conn, fork.chain, expected - 1, page_size)
            for row in rows:
                if row.seq != expected:
                    return ChainReport(False, row.seq - 1, head, expected, "entry is missing")
                try:
                    parsed = cj_loads(row.entry)
                except EncodingError:
                    return ChainReport(False, row.seq - 1, head, row.seq, "entry is not canonical")
                if not isinstance(parsed, dict) or parsed.get("seq") != row.seq:
                    return ChainReport(
                        False, row.seq - 1, head, row.seq, "entry seq does not match"
                    )
                head = auditchain.next_head(head, row.entry)
                if head != row.head:
                    return ChainReport(
                        False, row.seq - 1, head, row.seq, "stored head does not match"
                    )
                expected += 1
            if len(rows) < page_size:
                break
    entries = expected - 1
    if (entries, head) != (fork.prev_seq, fork.prev_head):
        return ChainReport(
            False,
            entries,
            head,
            min(entries, fork.prev_seq) + 1,
            f"the archived chain ends at seq {entries}, not at the declared seq"
            f" {fork.prev_seq} and head",
        )
    return ChainReport(True, entries, head)
