"""`handover restore`: a node directory, and its database, from a backup file.

In order, so that a refusal or a bad file leaves nothing behind:

1. The whole file is read and authenticated (a wrong passphrase, any altered
   byte, a truncated file: one line, nothing written). Settings and keys are
   kept in memory; the database is only counted.
2. The database it will go to is chosen: a new embedded PostgreSQL in
   DIR/pgdata, or the DSN of the restored settings (HANDOVER_DSN overrides it,
   as for `handover serve`), which must be empty.
3. The directory is written (settings and keys 0600, folders 0700), and the
   dump is loaded by psql in one transaction, authenticated again as it goes.
4. The keyset is signed again with a serial above any the node issued before
   the restore (peers refuse a lower one as a rollback; the node re-signs it
   daily, so a backup's is soon behind what peers accepted).
5. The fork is declared (node/auditing.py `declare_fork`): the restored chain
   is archived, a new chain begins with an `alteration` entry naming its last
   head, and a signed declaration is kept for peers (docs/protocol.md 5.1).

A failure in 3 to 5 removes what was written (the embedded database with it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tomllib
from pathlib import Path
from typing import Any

from handover.node import keystore
from handover.node.auditing import declare_fork
from handover.node.backup import FILE_SETTINGS, BackupError, Contents, database_sql, scan
from handover.protocol.canonical import b64u_encode
from handover.protocol.keyset import MAX_KEYSET_LIFETIME_MS, build_keyset
from handover.protocol.timeutil import Clock, now_ms
from handover.store import dump as pg
from handover.store.db import Database, EmbeddedPostgres, describe_dsn

DEFAULT_REASON = "restored from backup"


def _settings(contents: Contents, name: str) -> tuple[str, str]:
    """The restored node's id and the DSN it will use ("" for embedded)."""
    try:
        raw = tomllib.loads(contents.files["handover.toml"].decode("utf-8"))
    except (KeyError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BackupError(f"{name} holds no readable handover.toml") from exc
    node = raw.get("node")
    if not isinstance(node, str) or node != contents.manifest.get("node"):
        raise BackupError(f"{name}: the settings are not those of the node in its manifest")
    dsn = os.environ.get("HANDOVER_DSN", raw.get("dsn", ""))
    return node, dsn if isinstance(dsn, str) else ""


def relocate_settings(settings: bytes, old: object, new: Path) -> tuple[bytes, list[str]]:
    """Settings naming files inside the old node directory by absolute path (as
    `handover init` writes them) name the same files inside the new one."""
    if not isinstance(old, str) or not old.startswith("/"):
        return settings, []
    moved, lines = [], []
    for line in settings.decode("utf-8").splitlines():
        key, sep, value = line.partition("=")
        name, text = key.strip(), value.strip()
        if sep and name in FILE_SETTINGS and text.startswith(f'"{old}/'):
            relative = json.loads(text)[len(old) + 1 :]
            line = f"{name} = {json.dumps(str(new / relative))}"
            moved.append(name)
        lines.append(line)
    return ("\n".join(lines) + "\n").encode("utf-8"), moved


def _write_tree(directory: Path, files: dict[str, bytes]) -> None:
    """Every file 0600, every folder 0700 (settings may hold a DSN password)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for rel, data in files.items():
        path = directory / rel
        for parent in reversed(path.relative_to(directory).parents[:-1]):
            folder = directory / parent
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            os.fchmod(out.fileno(), 0o600)


def _load(source: Path, passphrase: bytes, dsn: str) -> None:
    """Load the backup's database into `dsn` in one transaction."""
    loader = pg.Loader(dsn)
    try:
        with open(source, "rb") as inp:
            for chunk in database_sql(inp, passphrase, source.name):
                loader.write(chunk)
    except BaseException:
        loader.abort()
        raise
    loader.finish()


def _renew_keyset(keys_dir: Path, now: int) -> int:
    """Re-sign the restored keyset (same keys) with serial max(serial + 1, now in
    seconds): daily re-signing adds 1 a day, so a serial taken from the clock at a
    restore is above every serial issued before it. Returns the new serial."""
    keys = keystore.load_keys(keys_dir)
    serial = max(keys.keyset.serial + 1, now // 1000)
    wire = build_keyset(
        node=keys.node,
        serial=serial,
        iat=now,
        exp=now + MAX_KEYSET_LIFETIME_MS,
        root=keys.root,
        keys=list(keys.keyset.keys),
    )
    keystore.write_public(keys_dir / keystore.KEYSET_FILE, wire)
    os.chmod(keys_dir / keystore.KEYSET_FILE, 0o600)  # as restored: every file 0600
    return serial


async def _declare(
    dsn: str, pgdata: Path, keys_dir: Path, *, reason: str, backup_at: int, clock: Clock
) -> dict[str, Any]:
    db = await Database.open(dsn, pgdata, min_size=1, max_size=2)
    try:
        identity = keystore.load_keys(keys_dir).identity()
        fork = await declare_fork(db, identity, reason=reason, backup_at=backup_at, clock=clock)
    finally:
        await db.close()
    return {
        "chain": fork.chain,
        "previous": {"seq": fork.prev_seq, "head": b64u_encode(fork.prev_head)},
        "declared_at": fork.declared_at,
        "reason": fork.reason,
    }


def _clear(directory: Path, created: bool) -> None:
    if created:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def restore(
    source: Path,
    directory: Path,
    passphrase: bytes,
    *,
    reason: str = DEFAULT_REASON,
    clock: Clock = now_ms,
) -> dict[str, Any]:
    """Make the node directory `directory` from the backup `source`.

    Raises:
        BackupError: the file cannot be read or authenticated, the directory is
            not new or empty, the DSN's database is not empty.
        StoreError, ConfigError: loading the database or reading the keys failed
            (what was written is removed).
    """
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise BackupError(f"{directory} is not empty: restore into a new directory")
    name = source.name
    try:
        with open(source, "rb") as inp:
            contents = scan(inp, passphrase, name)
    except FileNotFoundError as exc:
        raise BackupError(f"{source} does not exist") from exc
    node, dsn = _settings(contents, name)
    if "keys/keyset.json" not in contents.files or "keys/storage.key" not in contents.files:
        raise BackupError(f"{name} holds no complete key directory")
    contents.files["handover.toml"], moved = relocate_settings(
        contents.files["handover.toml"], contents.manifest.get("directory"), directory
    )
    backup_at = contents.manifest.get("created_at")
    if not isinstance(backup_at, int) or isinstance(backup_at, bool):
        raise BackupError(f"{name} does not say when it was taken")
    if dsn and not asyncio.run(pg.is_empty(dsn)):
        raise BackupError(
            f"the database at {describe_dsn(dsn)} (dsn in the restored settings) is not empty:"
            " restore loads only into an empty database; give it a new one, or remove dsn"
            " to restore into an embedded database"
        )
    created = not directory.exists()
    embedded = None if dsn else EmbeddedPostgres(directory / "pgdata")
    try:
        _write_tree(directory, contents.files)
        target = dsn if embedded is None else embedded.start()
        _load(source, passphrase, target)
        serial = _renew_keyset(directory / "keys", clock())
        fork = asyncio.run(
            _declare(
                target,
                directory / "pgdata",
                directory / "keys",
                reason=reason,
                backup_at=backup_at,
                clock=clock,
            )
        )
    except BaseException:
        if embedded is not None:
            embedded.stop()
        _clear(directory, created)
        raise
    if embedded is not None:
        embedded.stop()
    return {
        "node": node,
        "dir": str(directory),
        "database": "embedded" if embedded is not None else describe_dsn(dsn),
        "backup_at": backup_at,
        "files": sorted(contents.files),
        "settings_moved": moved,
        "keyset_serial": serial,
        "fork": fork,
        "next": f"handover serve --dir {directory}",
    }
