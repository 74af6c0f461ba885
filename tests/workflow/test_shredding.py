"""Issue 16, finding 2 (Art 16, 29), on real nodes: erased content cannot be
recovered. Each stored packet has its own data key, wrapped by the storage key
and destroyed on ERASE; `handover keys rotate-storage` re-wraps the live keys
and destroys the old storage key, so the ciphertext PostgreSQL leaves in its
files opens with no key on disk. Rows stored before migration 014 are sealed
under data keys of their own at startup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handover.node import keystore
from handover.node.runtime import Node
from handover.node.shredding import rotate_storage, wrap_legacy
from handover.protocol import crypto
from handover.protocol.canonical import b64u_decode, cj_dumps
from handover.protocol.errors import HandoverError
from inproc import (
    CASEWORKER,
    PRISON,
    PROBATION,
    RELEASE_NOTICE,
    audit_entries,
    audit_seq,
    release_notice,
    run_cli,
    seal_from,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

WHY = "the review of this record fell due"


async def make_due(node: Node, pid: str) -> None:
    """Bring a held packet's review date into the past (as if its time had come)."""
    async with node.db.connection() as conn:
        await conn.execute("UPDATE received SET review_at = 1 WHERE pid = $1", pid)


async def receive(prison: Node, probation: Node, notice: dict[str, Any]) -> str:
    packet = seal_from(prison, probation, RELEASE_NOTICE, notice)
    (answer,) = await probation.receiver.receive_many([packet.wire])
    assert answer.outcome.value == "accepted"
    return packet.pid


async def read(node: Node, pid: str) -> dict[str, Any]:
    opened = await node.inbox.read(CASEWORKER, pid, "checking what this node holds")
    result: dict[str, Any] = opened["body"]
    return result


# --- finding 2: erased content cannot be recovered -------------------------------------------


def files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            found.append(path)
    return found


def keys_on_disk(node: Node) -> list[bytes]:
    """Every 32-byte key in the node's directory (key files are base64url text)."""
    keys = []
    for path in node.config.directory.rglob("*.key*"):
        try:
            keys.append(b64u_decode(path.read_text("ascii").strip(), 32))
        except (ValueError, UnicodeDecodeError, HandoverError):
            continue
    return keys


def opens(key: bytes, box: bytes) -> bytes | None:
    try:
        return crypto.open_at_rest(key, box)
    except crypto.CryptoFailure:
        return None


async def test_erased_content_left_in_the_database_files_opens_with_no_key_on_disk(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    pid = await receive(prison, probation, notice)
    async with probation.db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT body_box, wire, data_key FROM received WHERE pid = $1 AND sender = $2",
            pid,
            PRISON,
        )
    box, wire, wrapped = bytes(row["body_box"]), bytes(row["wire"]), bytes(row["data_key"])
    # The body opens only through its data key, not with the storage key itself.
    storage = keys_on_disk(probation)
    assert storage and all(opens(k, box) is None for k in storage)

    await make_due(probation, pid)
    await probation.reviews.decide(CASEWORKER, pid, outcome="ERASE", justification=WHY)
    async with probation.db.connection() as conn:
        assert (
            await conn.fetchval(
                "SELECT data_key FROM received WHERE pid = $1 AND sender = $2", pid, PRISON
            )
            is None
        )
        await conn.execute("VACUUM received")
        await conn.execute("CHECKPOINT")
    pgdata = probation.config.pgdata
    # What PostgreSQL leaves behind: the erased ciphertext and its wrapped key are
    # still in the files (the WAL at least) ...
    assert files_holding(pgdata, box[24:88])
    assert files_holding(pgdata, wrapped[24:])
    # ... and until the storage key is rotated, that key on disk would open them.
    dek = next(d for k in keys_on_disk(probation) if (d := opens(k, wrapped)) is not None)
    assert opens(dek, box) is not None

    await rotate_storage(
        db=probation.db,
        writer=probation.writer,
        vault=probation.vault,
        keys_dir=probation.config.keys_dir,
        org=PROBATION,
    )
    assert files_holding(pgdata, box[24:88])  # the bytes are still there
    for key in keys_on_disk(probation):
        assert opens(key, box) is None
        assert opens(key, wire) is None
        assert opens(key, wrapped) is None  # no data key for it any more
    # The node still reads what it holds (re-wrapped under the new key).
    other = release_notice()
    kept = await receive(prison, probation, other)
    await rotate_storage(
        db=probation.db,
        writer=probation.writer,
        vault=probation.vault,
        keys_dir=probation.config.keys_dir,
        org=PROBATION,
    )
    assert await read(probation, kept) == other


async def test_rows_stored_before_data_keys_are_sealed_under_their_own_at_startup(
    prison: Node, probation: Node
) -> None:
    """Migration 014: a body sealed with the storage key itself (and a plain received
    wire) is read as before, then re-sealed under a data key of its own."""
    notice = release_notice()
    pid = await receive(prison, probation, notice)
    storage = keystore.storage_key(probation.config.keys_dir)
    packet_wire = b'{"hp1":"a stored wire"}'
    async with probation.db.connection() as conn:
        await conn.execute(
            "UPDATE received SET body_box = $3, wire = $4, data_key = NULL"
            " WHERE pid = $1 AND sender = $2",
            pid,
            PRISON,
            crypto.seal_at_rest(storage, cj_dumps(notice)),
            packet_wire,
        )
    assert await read(probation, pid) == notice  # the old scheme still reads

    assert await wrap_legacy(probation.db, probation.vault) >= 1
    async with probation.db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT body_box, wire, data_key FROM received WHERE pid = $1 AND sender = $2",
            pid,
            PRISON,
        )
    assert row["data_key"] is not None
    assert opens(storage, bytes(row["body_box"])) is None
    assert probation.vault.open_bytes(pid, row["wire"], row["data_key"]) == packet_wire
    assert await read(probation, pid) == notice
    assert await wrap_legacy(probation.db, probation.vault) == 0


async def test_keys_rotate_storage_rewraps_every_key_and_destroys_the_old_one(
    prison: Node, probation: Node
) -> None:
    notice = release_notice()
    pid = await receive(prison, probation, notice)
    keys_dir = probation.config.keys_dir
    old = keystore.storage_key(keys_dir)
    # The cluster is shared with other tests: read the log from here on.
    start = await audit_seq(probation)
    out = json.loads(
        await run_cli("keys", "rotate-storage", "--dir", str(probation.config.directory))
    )
    assert out["node"] == PROBATION and out["data_keys"] >= 1
    new = keystore.storage_key(keys_dir)
    assert new != old
    assert (keys_dir / "storage.key").stat().st_mode & 0o777 == 0o600
    assert not (keys_dir / "storage.key.next").exists()
    # What every running process does on the NOTIFY the command sends.
    probation._reload_keys()
    assert await read(probation, pid) == notice
    (entry,) = [
        e
        for e in await audit_entries(probation, after=start)
        if e["op"] == "key"
        and e.get("action") == "storage_rotated"
        and e["data_keys"] == out["data_keys"]
    ]
    assert entry["org"] == PROBATION
