"""Queries for sent packets and their per-recipient deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from handover.store.db import Connection, Deferred, to_row, to_rows, write

OUTBOX_CHANNEL = "handover_outbox"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One recipient's delivery of a sent packet; `receipt` is the signed receipt's wire."""

    node: str
    status: str  # pending | delivered | rejected | expired | cancelled
    attempts: int
    receipt: bytes | None
    reason: str | None
    last_error: str | None
    finished_at: int | None


@dataclass(frozen=True, slots=True)
class SentPacket:
    """A packet in the outbox with its deliveries (ordered by node)."""

    pid: str
    schema_id: str
    case_ref: str | None
    iat: int
    exp: int
    created_at: int
    log_seq: int
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class DeliveryLine:
    """One delivery with its packet's metadata (a line of the outbox listing)."""

    pid: str
    schema_id: str
    case_ref: str | None
    created_at: int
    node: str
    status: str
    attempts: int
    reason: str | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class PeerReceipt:
    """A receipt a peer signed for one of our packets, with the serial of the keyset
    that verified it."""

    pid: str
    receipt: bytes
    receipt_serial: int | None


async def insert(
    conn: Connection,
    *,
    pid: str,
    schema_id: str,
    case_ref: str | None,
    wire: bytes,
    pd: bytes,
    iat: int,
    exp: int,
    operator: str | None,
    log_seq: int,
    recipients: Sequence[str],
    now: int,
    body_box: bytes | None = None,
    data_key: bytes | None = None,
    fields: Sequence[str] = (),
    removed: Sequence[str] = (),
    consents: Sequence[str] = (),
    defer: Deferred | None = None,
) -> None:
    await write(
        conn,
        defer,
        "INSERT INTO outbox (pid, schema_id, case_ref, wire, pd, iat, exp, operator, log_seq,"
        " created_at, body_box, fields, removed, consents, data_key)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        pid,
        schema_id,
        case_ref,
        wire,
        pd,
        iat,
        exp,
        operator,
        log_seq,
        now,
        body_box,
        list(fields),
        list(removed),
        list(consents),
        data_key,
    )
    for node in recipients:
        await write(
            conn,
            defer,
            "INSERT INTO deliveries (pid, node, next_attempt_at) VALUES ($1, $2, $3)",
            pid,
            node,
            now,
        )


async def notify(conn: Connection, defer: Deferred | None = None) -> None:
    """Wake delivery workers (delivered by PostgreSQL when the transaction commits)."""
    if defer is None:
        await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")
    else:
        defer.once(f"NOTIFY {OUTBOX_CHANNEL}")


@dataclass(frozen=True, slots=True)
class Claimed:
    """A pending delivery leased to the caller, with what it needs to post it."""

    pid: str
    node: str
    wire: bytes
    pd: bytes
    exp: int
    attempts: int
    recipients: tuple[str, ...]
    carrying: bool = False  # has attachments to upload first (section 8)


# Driven by `deliveries_due` alone. An erased or restricted packet's pending
# deliveries are set to `cancelled` in the same transaction as the erasure or
# restriction (workflow/retention.py, reviews.py, corrections.py), and the row
# lock of `FOR UPDATE` re-checks `d.status`, so the claim needs no condition on
# the outbox row beyond `exp`: conditions on `erased_at` / `restricted` let the
# planner walk every live outbox row instead (a claim of 128 took 142 ms and the
# sender's PostgreSQL 1.5-2.3 ms per packet in the benchmark). Test:
# tests/store/test_store_outbox.py::test_a_claim_reads_little_of_a_full_outbox.
CLAIM_DUE = (
    "SELECT d.pid, d.node, d.next_attempt_at, octet_length(o.wire) AS size"
    " FROM deliveries d JOIN outbox o USING (pid)"
    " WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND o.exp >= $1"
    " ORDER BY d.next_attempt_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED"
)


# One statement (one round trip, one commit): lock the due rows, keep the prefix
# that fits the byte budget (always the first), lease those. Rows locked but not
# kept are free again when the statement ends.
CLAIM = (
    f"WITH due AS ({CLAIM_DUE}),"  # noqa: S608 - a constant
    " sized AS (SELECT pid, node,"
    " row_number() OVER w AS n, sum(size) OVER w AS running"
    " FROM due WINDOW w AS (ORDER BY next_attempt_at, pid, node ROWS UNBOUNDED PRECEDING)),"
    " chosen AS (SELECT pid, node, n FROM sized WHERE n = 1 OR running <= $4)"
    " UPDATE deliveries d SET next_attempt_at = $1::bigint + $3::bigint,"
    " attempts = d.attempts + 1"
    " FROM chosen c, outbox o"
    " WHERE d.pid = c.pid AND d.node = c.node AND o.pid = d.pid"
    " RETURNING c.n, d.pid, d.node, o.wire, o.pd, o.exp, d.attempts,"
    " (SELECT array_agg(x.node ORDER BY x.node) FROM deliveries x WHERE x.pid = d.pid)"
    " AS recipients,"
    " EXISTS (SELECT 1 FROM attachment_sent a WHERE a.pid = d.pid) AS carrying,"
    " (SELECT count(*) FROM due) AS due"
)


async def claim_due(
    conn: Connection, *, now: int, limit: int, lease_ms: int, max_bytes: int
) -> list[Claimed]:
    """Claim up to `limit` due pending deliveries (not yet expired), together at
    most `max_bytes` of packets (always at least one), oldest due first.

    The rows are leased: `next_attempt_at` moves to now + lease, so no other
    worker (in this or another process) claims them while this one delivers.
    `FOR UPDATE SKIP LOCKED` keeps concurrent claimers from blocking each other.
    One statement: it needs no transaction of its own.
    """
    claimed, _more = await claim_batch(
        conn, now=now, limit=limit, lease_ms=lease_ms, max_bytes=max_bytes
    )
    return claimed


async def claim_batch(
    conn: Connection, *, now: int, limit: int, lease_ms: int, max_bytes: int
) -> tuple[list[Claimed], bool]:
    """:func:`claim_due`, and whether more may be due now: the limit or the byte
    budget left some out (a worker that claims again only then saves an empty
    claim per round)."""
    rows = sorted(await conn.fetch(CLAIM, now, limit, lease_ms, max_bytes), key=lambda r: r["n"])
    claimed = [
        Claimed(
            pid=r["pid"],
            node=r["node"],
            wire=bytes(r["wire"]),
            pd=bytes(r["pd"]),
            exp=r["exp"],
            attempts=r["attempts"],
            recipients=tuple(r["recipients"]),
            carrying=r["carrying"],
        )
        for r in rows
    ]
    seen = rows[0]["due"] if rows else 0
    return claimed, seen >= limit or seen > len(claimed)


async def claim_expired(conn: Connection, *, now: int, limit: int) -> list[tuple[str, str]]:
    """Pending deliveries whose packet expired: lock them for the caller to finish."""
    rows = await conn.fetch(
        "SELECT d.pid, d.node FROM deliveries d JOIN outbox o USING (pid)"
        # Not while a worker holds the lease: its POST may yet bring a receipt.
        " WHERE d.status = 'pending' AND o.exp < $1 AND d.next_attempt_at <= $1"
        " LIMIT $2 FOR UPDATE OF d SKIP LOCKED",
        now,
        limit,
    )
    return [(r["pid"], r["node"]) for r in rows]


async def finish(
    conn: Connection,
    *,
    pid: str,
    node: str,
    status: str,
    receipt: bytes | None,
    receipt_serial: int | None,
    reason: str | None,
    now: int,
) -> bool:
    """Record a final state; False if the delivery was no longer pending."""
    result: str = await conn.execute(
        "UPDATE deliveries SET status = $3, receipt = $4, receipt_serial = $5, reason = $6,"
        " finished_at = $7, last_error = NULL WHERE pid = $1 AND node = $2"
        " AND status = 'pending'",
        pid,
        node,
        status,
        receipt,
        receipt_serial,
        reason,
        now,
    )
    return result.endswith(" 1")


async def finish_many(
    conn: Connection,
    rows: Sequence[tuple[str, str, str, bytes | None, int | None, str | None]],
    *,
    now: int,
) -> dict[tuple[str, str], int]:
    """Record final states for (pid, node, status, receipt, receipt_serial, reason) rows
    still pending; returns when each updated row's packet was queued.

    A delivery cancelled (its packet erased or restricted) while its POST was in
    flight still records a receipt that says the recipient holds the packet: the
    erasure's notice was sent to it too (`Rectification`)."""
    updated = await conn.fetch(
        "UPDATE deliveries d SET status = u.status, receipt = u.receipt,"
        " receipt_serial = u.serial, reason = u.reason, finished_at = $7, last_error = NULL"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[],"
        " $6::text[]) AS u(pid, node, status, receipt, serial, reason), outbox o"
        " WHERE d.pid = u.pid AND d.node = u.node AND o.pid = d.pid AND (d.status = 'pending'"
        "  OR (d.status = 'cancelled' AND u.status = 'delivered'))"
        " RETURNING d.pid, d.node, o.created_at",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
        [r[5] for r in rows],
        now,
    )
    return {(r["pid"], r["node"]): int(r["created_at"]) for r in updated}


async def reschedule_many(
    conn: Connection, rows: Sequence[tuple[str, str, int]], *, error: str
) -> None:
    """Move pending deliveries (pid, node, next attempt at) to their next attempt."""
    await conn.execute(
        "UPDATE deliveries d SET next_attempt_at = u.at, last_error = $4"
        " FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(pid, node, at)"
        " WHERE d.pid = u.pid AND d.node = u.node AND d.status = 'pending'",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        error,
    )


async def any_expired(conn: Connection, now: int) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM deliveries d JOIN outbox o USING (pid)"
            " WHERE d.status = 'pending' AND o.exp < $1 AND d.next_attempt_at <= $1)",
            now,
        )
    )


async def packet(conn: Connection, pid: str) -> SentPacket | None:
    found = await conn.fetchrow(
        "SELECT pid, schema_id, case_ref, iat, exp, created_at, log_seq FROM outbox WHERE pid = $1",
        pid,
    )
    if found is None:
        return None
    deliveries = await conn.fetch(
        "SELECT node, status, attempts, receipt, reason, last_error, finished_at"
        " FROM deliveries WHERE pid = $1 ORDER BY node",
        pid,
    )
    return to_row(SentPacket, found, deliveries=tuple(to_rows(Delivery, deliveries)))


async def packets(
    conn: Connection, *, status: str | None, limit: int, before: int | None
) -> list[DeliveryLine]:
    """Delivery rows (newest first), optionally only those with `status` (e.g. dead letters)."""
    found = await conn.fetch(
        "SELECT o.pid, o.schema_id, o.case_ref, o.created_at, d.node, d.status, d.attempts,"
        " d.reason, d.last_error FROM outbox o JOIN deliveries d USING (pid)"
        " WHERE ($1::text IS NULL OR d.status = $1) AND ($2::bigint IS NULL OR o.created_at < $2)"
        " ORDER BY o.created_at DESC, o.pid, d.node LIMIT $3",
        status,
        before,
        limit,
    )
    return to_rows(DeliveryLine, found)


async def depth(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM deliveries WHERE status = 'pending'"))


async def receipts_from(conn: Connection, node: str) -> list[PeerReceipt]:
    """Every receipt held from `node`."""
    found = await conn.fetch(
        "SELECT pid, receipt, receipt_serial FROM deliveries"
        " WHERE node = $1 AND receipt IS NOT NULL",
        node,
    )
    return to_rows(PeerReceipt, found)


async def oldest_pending(conn: Connection) -> int | None:
    """When the oldest pending delivery's packet was queued (ms), or None."""
    value = await conn.fetchval(
        "SELECT min(o.created_at) FROM deliveries d JOIN outbox o USING (pid)"
        " WHERE d.status = 'pending'"
    )
    return None if value is None else int(value)


async def pending_to(conn: Connection, node: str) -> int:
    """Deliveries to `node` still waiting (planned under the peer's current kind)."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE node = $1 AND status = 'pending'", node
        )
    )
