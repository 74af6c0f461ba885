"""Pairing invitations and the one session in progress for each (migration 012)."""

from __future__ import annotations

from dataclasses import dataclass

from handover.store.db import Connection, to_row


@dataclass(frozen=True, slots=True)
class Invitation:
    invitation: int
    code_sealed: bytes
    kind: str
    created_at: int
    expires_at: int
    attempts: int
    status: str
    msg_inviter: bytes | None
    msg_accepter: bytes | None
    key_sealed: bytes | None
    offer: bytes | None
    session_at: int | None
    partner: str | None
    ended_at: int | None


async def expire(conn: Connection, now: int) -> None:
    """Mark open invitations past their hour as expired."""
    await conn.execute(
        "UPDATE pair_invitations SET status = 'expired', ended_at = expires_at,"
        " key_sealed = NULL WHERE status = 'open' AND expires_at < $1",
        now,
    )


async def create(
    conn: Connection, number: int, code_sealed: bytes, kind: str, now: int, expires_at: int
) -> bool:
    """A new open invitation under `number`; False if that number is taken by an
    open one (an ended one is replaced)."""
    row = await conn.fetchrow(
        "INSERT INTO pair_invitations (invitation, code_sealed, kind, created_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (invitation) DO UPDATE SET code_sealed = excluded.code_sealed,"
        " kind = excluded.kind, created_at = excluded.created_at,"
        " expires_at = excluded.expires_at, attempts = 0, status = 'open',"
        " msg_inviter = NULL, msg_accepter = NULL, key_sealed = NULL, offer = NULL,"
        " session_at = NULL, partner = NULL, ended_at = NULL"
        " WHERE pair_invitations.status <> 'open' RETURNING invitation",
        number,
        code_sealed,
        kind,
        now,
        expires_at,
    )
    return row is not None


async def get(conn: Connection, number: int, *, lock: bool = False) -> Invitation | None:
    sql = "SELECT * FROM pair_invitations WHERE invitation = $1"
    r = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), number)
    return None if r is None else to_row(Invitation, r)


async def start_session(
    conn: Connection,
    number: int,
    msg_inviter: bytes,
    msg_accepter: bytes,
    key_sealed: bytes,
    now: int,
) -> int:
    """Count an attempt and hold its session (replacing any earlier one); the attempts."""
    attempts: int = await conn.fetchval(
        "UPDATE pair_invitations SET attempts = attempts + 1, msg_inviter = $2,"
        " msg_accepter = $3, key_sealed = $4, offer = NULL, session_at = $5"
        " WHERE invitation = $1 RETURNING attempts",
        number,
        msg_inviter,
        msg_accepter,
        key_sealed,
        now,
    )
    return attempts


async def hold_offer(conn: Connection, number: int, offer: bytes) -> None:
    await conn.execute(
        "UPDATE pair_invitations SET offer = $2 WHERE invitation = $1", number, offer
    )


async def end(conn: Connection, number: int, status: str, now: int, partner: str | None) -> None:
    """End an invitation (`paired` or `ended`); its session key is dropped."""
    await conn.execute(
        "UPDATE pair_invitations SET status = $2, ended_at = $3, partner = $4,"
        " key_sealed = NULL WHERE invitation = $1",
        number,
        status,
        now,
        partner,
    )


async def drop_session(conn: Connection, number: int) -> None:
    """Forget a failed session (the attempt stays counted)."""
    await conn.execute(
        "UPDATE pair_invitations SET key_sealed = NULL, offer = NULL WHERE invitation = $1",
        number,
    )


async def open_numbers(conn: Connection) -> set[int]:
    rows = await conn.fetch("SELECT invitation FROM pair_invitations WHERE status = 'open'")
    return {int(r["invitation"]) for r in rows}
