"""Crypto-shredding at the node: re-wrapping every data key under a new storage
key (`handover keys rotate-storage`), and sealing content stored before data
keys (migration 014) under data keys of its own.

Erasure destroys a packet's wrapped data key (`store/lifecycle.erase`), but
copies of that wrapped key stay where PostgreSQL leaves old row versions: dead
tuples until VACUUM reuses their space, the WAL, and backups. They open only
with the storage key that wrapped them, so rotating the storage key (which
destroys the old one) is what makes erased content unrecoverable everywhere.
docs/operations.md says how often and what backups hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from handover.node import keystore
from handover.protocol import crypto
from handover.protocol.canonical import b64u_encode
from handover.store import erasure as erasure_store
from handover.store.auditlog import Appender, AuditWriter
from handover.store.db import Connection, Database
from handover.workflow.vault import Vault

log = structlog.get_logger(__name__)

BATCH = 500


async def _reseal_legacy(conn: Connection, vault: Vault, batch: int = BATCH) -> int:
    """Seal content without a data key (sealed with the storage key itself) under a
    data key of its own; a received packet's wire too. The number of rows."""
    done = 0
    while True:
        rows = await erasure_store.legacy_rows(conn, batch)
        updates = []
        for row in rows:
            assert row.body_box is not None
            body = vault.open_bytes(row.pid, row.body_box, None)
            sealed = vault.seal(body)
            wire = None if row.wire is None else vault.seal(bytes(row.wire), sealed.key).box
            updates.append((row.tbl, row.pid, row.sender, sealed.box, wire, sealed.key))
        await erasure_store.set_keys(conn, updates)
        done += len(rows)
        if len(rows) < batch:
            return done


async def wrap_legacy(db: Database, vault: Vault) -> int:
    """At startup: give rows stored before migration 014 data keys of their own."""
    async with db.transaction() as conn:
        done = await _reseal_legacy(conn, vault)
    if done:
        log.info("legacy_bodies_sealed_with_data_keys", rows=done)
    return done


async def rotate_storage(
    *, db: Database, writer: AuditWriter, vault: Vault, keys_dir: Path, org: str
) -> dict[str, Any]:
    """Re-wrap every data key under a new storage key, in one transaction with a
    `key` audit entry; then destroy the old key file and use the new key.

    Stop the node's other processes first: one that seals content with the old
    key after the rotation committed and before it reloads would lose it.
    """
    new_key = crypto.random_bytes(32)
    new = Vault(new_key)
    pending = keys_dir / (keystore.STORAGE_FILE + ".next")
    # Kept until the transaction commits: a crash in between leaves both keys.
    keystore.write_private(pending, b64u_encode(new_key).encode() + b"\n")

    async def job(conn: Connection, appender: Appender) -> dict[str, int]:
        legacy = await _reseal_legacy(conn, vault)
        rewrapped, after = 0, ("", "", "")
        while True:  # in batches of keys only (content is not read)
            keys = await erasure_store.data_keys(conn, after, BATCH)
            await erasure_store.set_data_keys(
                conn, [(k.tbl, k.pid, k.sender, vault.rewrap(k.pid, k.data_key, new)) for k in keys]
            )
            rewrapped += len(keys)
            if len(keys) < BATCH:
                break
            after = (keys[-1].tbl, keys[-1].pid, keys[-1].sender)
        items = await erasure_store.item_boxes(conn)
        await erasure_store.set_item_boxes(
            conn, [(origin, aid, vault.reseal(aid, box, new)) for origin, aid, box in items]
        )
        notices = await erasure_store.notice_keys(conn)
        await erasure_store.rewrap_notice_keys(
            conn, [(rid, node, vault.rewrap("notice", key, new)) for rid, node, key in notices]
        )
        counts = {
            "data_keys": rewrapped,
            "legacy_sealed": legacy,
            "notice_keys": len(notices),
            "attachment_items": len(items),
        }
        appender.append(
            "key",
            action="storage_rotated",
            org=org,
            data_keys=rewrapped,
            legacy_sealed=legacy,
            notice_keys=len(notices),
            attachment_items=len(items),
        )
        return counts

    counts: dict[str, int] = await writer.run(job)
    keystore.replace_storage_key(keys_dir, new_key)
    pending.unlink()
    vault.rekey(new_key)
    log.info("storage_key_rotated", **counts)
    return counts
