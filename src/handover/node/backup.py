"""`handover backup`: one encrypted file holding a node's database, settings and keys.

The file (docs/operations.md, "Backup and restore")::

    header   magic "HOVRBAK\\0" (8) | version 1 (1) | kdf 1 = Argon2id v1.3 (1)
             | opslimit (u32 BE) | memlimit in bytes (u64 BE) | salt (16)
             | secretstream header (24)                          62 bytes in all
    records  u32 BE length | crypto_secretstream_xchacha20poly1305 message, ...

The key is Argon2id(passphrase, salt, opslimit, memlimit). Every record is one
stream message, the first authenticating the whole header as its additional
data and the last tagged final, so a wrong passphrase, any changed byte, and
records dropped, reordered or cut off at the end are all detected. A record's
plaintext is a kind byte and a payload:

    M  manifest (CJ): format, v, node, kind, created_at, directory, handover version
    F  a file (CJ {"path"}) relative to the node directory; D records follow
    B  the database (CJ {"format": "plain", "compression": "zlib"}); D records follow
    D  data of the file or database before it (up to 64 KiB)
    Z  the end (CJ {"files", "database_bytes"}), tagged final

The database is `pg_dump` plain SQL from one snapshot, so a backup taken while
the node runs is consistent. Restoring is node/restore.py.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from handover import __version__
from handover.node.config import NodeConfig, load_config
from handover.protocol import crypto
from handover.protocol.canonical import cj_dumps, cj_loads
from handover.protocol.errors import EncodingError, HandoverError
from handover.protocol.timeutil import Clock, now_ms
from handover.store import dump as pg
from handover.store.db import EmbeddedPostgres

MAGIC = b"HOVRBAK\x00"
VERSION = 1
KDF_ARGON2ID13 = 1
HEADER = struct.Struct(">8sBBIQ16s24s")
FRAME = struct.Struct(">I")
CHUNK = 64 * 1024
MAX_RECORD = CHUNK + 1 + crypto.STREAM_ABYTES
# What a reader accepts from a file's header (libsodium's "sensitive" limits at
# most), so a crafted file cannot make a restore spend unbounded time or memory.
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 1024 * 1024 * 1024
MIN_PASSPHRASE = 12
# Files a backup holds besides handover.toml: whole folders, and the files
# settings name when they lie inside the node directory.
FOLDERS = ("keys", "tls")
FILE_SETTINGS = (
    "policy_file",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tls_client_cert",
    "tls_client_key",
)


class BackupError(HandoverError):
    """A backup that cannot be written or read, or a restore that is refused.

    The message is one line that says what to do.
    """


# --- writing -------------------------------------------------------------------------


class BackupWriter:
    """Writes the header at once, then records; :meth:`finish` writes the final one."""

    def __init__(
        self,
        out: IO[bytes],
        passphrase: bytes,
        *,
        opslimit: int = crypto.ARGON2ID_OPSLIMIT,
        memlimit: int = crypto.ARGON2ID_MEMLIMIT,
    ) -> None:
        salt = crypto.random_bytes(crypto.ARGON2ID_SALT_BYTES)
        key = crypto.argon2id_key(passphrase, salt, opslimit=opslimit, memlimit=memlimit)
        self._sealer = crypto.StreamSealer(key)
        header = HEADER.pack(
            MAGIC, VERSION, KDF_ARGON2ID13, opslimit, memlimit, salt, self._sealer.header
        )
        self._out = out
        self._out.write(header)
        self._ad = header  # the first record authenticates the header
        self.files: list[str] = []
        self.database_bytes = 0

    def _record(self, kind: bytes, payload: bytes, *, final: bool = False) -> None:
        sealed = self._sealer.push(kind + payload, self._ad, final=final)
        self._ad = b""
        self._out.write(FRAME.pack(len(sealed)) + sealed)

    def _data(self, data: bytes) -> None:
        for start in range(0, len(data), CHUNK):
            self._record(b"D", data[start : start + CHUNK])

    def manifest(self, manifest: dict[str, Any]) -> None:
        self._record(b"M", cj_dumps(manifest))

    def file(self, path: str, data: bytes) -> None:
        self._record(b"F", cj_dumps({"path": path}))
        self._data(data)
        self.files.append(path)

    def database(self, chunks: Iterable[bytes]) -> None:
        self._record(b"B", cj_dumps({"format": "plain", "compression": "zlib"}))
        packer = zlib.compressobj(6)
        for chunk in chunks:
            self.database_bytes += len(chunk)
            self._data(packer.compress(chunk))
        self._data(packer.flush())

    def finish(self) -> None:
        summary = {"files": len(self.files), "database_bytes": self.database_bytes}
        self._record(b"Z", cj_dumps(summary), final=True)


# --- reading -------------------------------------------------------------------------


def _header(inp: IO[bytes], name: str) -> tuple[bytes, int, int, bytes, bytes]:
    raw = inp.read(HEADER.size)
    if len(raw) < HEADER.size or not raw.startswith(MAGIC):
        raise BackupError(f"{name} is not a handover backup")
    _magic, version, kdf, opslimit, memlimit, salt, stream = HEADER.unpack(raw)
    if version != VERSION:
        raise BackupError(
            f"{name} is a handover backup of format version {version}; this handover reads"
            f" version {VERSION}"
        )
    if kdf != KDF_ARGON2ID13 or not 1 <= opslimit <= MAX_OPSLIMIT or memlimit > MAX_MEMLIMIT:
        raise BackupError(f"{name} asks for key derivation settings this handover refuses")
    return raw, opslimit, memlimit, salt, stream


def records(inp: IO[bytes], passphrase: bytes, name: str) -> Iterator[tuple[bytes, bytes]]:
    """Every record of a backup as (kind, payload), each authenticated before it is
    yielded; the end of the file is checked after the final one.

    Raises:
        BackupError: not a backup, wrong passphrase, altered, truncated.
    """
    header, opslimit, memlimit, salt, stream = _header(inp, name)
    try:
        key = crypto.argon2id_key(passphrase, salt, opslimit=opslimit, memlimit=memlimit)
        opener = crypto.StreamOpener(key, stream)
    except crypto.CryptoFailure as exc:
        raise BackupError(f"{name} asks for key derivation settings libsodium refuses") from exc
    ad, offset, final = header, HEADER.size, False
    while not final:
        prefix = inp.read(FRAME.size)
        if not prefix:
            raise BackupError(f"{name} is truncated: it ends before its final record")
        (length,) = FRAME.unpack(prefix) if len(prefix) == FRAME.size else (0,)
        if len(prefix) < FRAME.size or not crypto.STREAM_ABYTES < length <= MAX_RECORD:
            raise BackupError(f"{name} is damaged or altered at byte {offset}")
        sealed = inp.read(length)
        if len(sealed) != length:
            raise BackupError(f"{name} is truncated: it ends inside the record at byte {offset}")
        try:
            plain, final = opener.pull(sealed, ad)
        except crypto.CryptoFailure as exc:
            if ad:
                raise BackupError(
                    f"cannot decrypt {name}: wrong passphrase, or the file was altered"
                ) from exc
            raise BackupError(f"{name} was altered or damaged at byte {offset}") from exc
        ad, offset = b"", offset + FRAME.size + length
        yield plain[:1], plain[1:]
    if inp.read(1):
        raise BackupError(f"{name} has data after its final record: it was altered")


@dataclass
class Contents:
    """What a backup holds, read and authenticated whole (the database is only counted)."""

    manifest: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    database_bytes: int = 0


def _json(payload: bytes, name: str) -> dict[str, Any]:
    try:
        value = cj_loads(payload)
    except EncodingError as exc:
        raise BackupError(f"{name} is not laid out as a handover backup") from exc
    if not isinstance(value, dict):
        raise BackupError(f"{name} is not laid out as a handover backup")
    return value


def safe_path(path: object, name: str) -> str:
    """A file path from a backup: relative, without `..`, outside pgdata.

    Raises:
        BackupError: any other path.
    """
    pure = PurePosixPath(path) if isinstance(path, str) else None
    if (
        pure is None
        or pure.is_absolute()
        or not pure.parts
        or any(p in ("", ".", "..") for p in pure.parts)
        or pure.parts[0] == "pgdata"
        or "\\" in str(path)
    ):
        raise BackupError(f"{name} names a file outside the node directory: {path!r}")
    return str(pure)


def walk(inp: IO[bytes], passphrase: bytes, name: str) -> Iterator[tuple[str, Any]]:
    """The backup's records in order, checked against the layout of the module
    docstring: ("manifest", dict), ("file", path), ("database", dict),
    ("data", bytes), ("end", dict).

    Raises:
        BackupError: as :func:`records`, or records out of place.
    """
    state = "start"
    for kind, payload in records(inp, passphrase, name):
        if state == "start":
            if kind != b"M":
                raise BackupError(f"{name} is not laid out as a handover backup")
            manifest = _json(payload, name)
            if manifest.get("format") != "handover-backup" or manifest.get("v") != 1:
                raise BackupError(f"{name} holds a backup format this handover does not read")
            state = "body"
            yield "manifest", manifest
        elif kind == b"D" and state in ("file", "database"):
            yield "data", payload
        elif kind == b"F" and state in ("body", "file"):
            state = "file"
            yield "file", safe_path(_json(payload, name).get("path"), name)
        elif kind == b"B" and state in ("body", "file"):
            meta = _json(payload, name)
            if meta != {"format": "plain", "compression": "zlib"}:
                raise BackupError(f"{name} holds a database format this handover does not read")
            state = "database"
            yield "database", meta
        elif kind == b"Z" and state in ("body", "file", "database"):
            state = "end"
            yield "end", _json(payload, name)
        else:
            raise BackupError(f"{name} is not laid out as a handover backup")
    if state != "end":
        raise BackupError(f"{name} is not laid out as a handover backup")


def scan(inp: IO[bytes], passphrase: bytes, name: str, max_file: int = 4 << 20) -> Contents:
    """Read and authenticate the whole backup: the manifest and files in memory,
    the database counted, not kept (:func:`database_sql` reads it again)."""
    contents: Contents | None = None
    current: str | None = None
    seen_database = False
    for what, value in walk(inp, passphrase, name):
        if what == "manifest":
            contents = Contents(value)
        elif contents is None:
            raise BackupError(f"{name} is not laid out as a handover backup")
        elif what == "file":
            if value in contents.files:
                raise BackupError(f"{name} holds {value} twice")
            current, contents.files[value] = value, b""
        elif what == "database":
            current, seen_database = None, True
        elif what == "data" and current is not None:
            contents.files[current] += value
            if len(contents.files[current]) > max_file:
                raise BackupError(f"{name} holds an oversized file {current}")
        elif what == "data":
            contents.database_bytes += len(value)
    if contents is None or not seen_database:
        raise BackupError(f"{name} holds no database")
    return contents


def database_sql(inp: IO[bytes], passphrase: bytes, name: str) -> Iterator[bytes]:
    """The database section as plain SQL chunks, decompressed. The whole file is
    authenticated as it goes: the last chunk comes only after the final record."""
    unpacker = zlib.decompressobj()
    in_database = False
    pending = b""
    try:
        for what, value in walk(inp, passphrase, name):
            if what in ("file", "end"):
                in_database = False
            elif what == "database":
                in_database = True
            elif what == "data" and in_database:
                if pending:
                    yield pending
                pending = unpacker.decompress(value)
        pending += unpacker.flush()
    except zlib.error as exc:
        raise BackupError(f"{name} holds a damaged database section") from exc
    if pending:
        yield pending


# --- taking a backup -----------------------------------------------------------------


def node_files(config: NodeConfig) -> tuple[dict[str, bytes], list[str]]:
    """The settings, keys and TLS files of a node directory, and warnings for
    files the settings name outside it (not in the backup)."""
    root = config.directory
    found: dict[str, bytes] = {"handover.toml": (root / "handover.toml").read_bytes()}
    for folder in FOLDERS:
        base = root / folder
        if base.is_dir():
            for path in sorted(base.rglob("*")):
                if path.is_file() and not path.name.endswith(".tmp"):
                    found[path.relative_to(root).as_posix()] = path.read_bytes()
    warnings = []
    for setting in FILE_SETTINGS:
        value = getattr(config, setting)
        if not value:
            continue
        path = (root / value).resolve()
        if path.is_relative_to(root) and path.is_file():
            found.setdefault(path.relative_to(root).as_posix(), path.read_bytes())
        else:
            warnings.append(
                f"{setting} ({value}) is outside the node directory and not in the backup:"
                " keep a copy of it too"
            )
    return found, warnings


def take_backup(
    directory: Path, out: Path, passphrase: bytes, *, clock: Clock = now_ms
) -> dict[str, Any]:
    """Write the backup of the node in `directory` to `out` (mode 0600, never
    overwriting a file); works while the node runs.

    Raises:
        BackupError: `out` exists, a short passphrase, no database yet.
        ConfigError, StoreError: the node directory or database cannot be read.
    """
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must be at least {MIN_PASSPHRASE} characters long")
    config = load_config(directory)
    if out.exists():
        raise BackupError(f"{out} already exists; choose a new file name")
    if not out.parent.is_dir():
        raise BackupError(f"cannot write {out}: {out.parent} is not a directory")
    files, warnings = node_files(config)
    embedded = None
    if not config.dsn:
        if not config.pgdata.is_dir():
            raise BackupError(f"{directory} has no database yet: run `handover serve` once")
        embedded = EmbeddedPostgres(config.pgdata)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as stream:
            writer = BackupWriter(stream, passphrase)
            dsn = embedded.start() if embedded is not None else config.dsn
            created_at = clock()
            writer.manifest(
                {
                    "format": "handover-backup",
                    "v": 1,
                    "node": config.node,
                    "kind": config.kind,
                    "created_at": created_at,
                    "directory": str(config.directory),
                    "handover": __version__,
                }
            )
            for path, data in files.items():
                writer.file(path, data)
            writer.database(pg.dump(dsn))
            writer.finish()
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(partial, out)  # fails if `out` appeared meanwhile: never overwrite
        except FileExistsError as exc:
            raise BackupError(f"{out} already exists; choose a new file name") from exc
    finally:
        partial.unlink(missing_ok=True)
        if embedded is not None:
            embedded.stop()
    return {
        "file": str(out),
        "node": config.node,
        "created_at": created_at,
        "files": writer.files,
        "database_bytes": writer.database_bytes,
        "bytes": out.stat().st_size,
        "kdf": {
            "alg": "argon2id13",
            "opslimit": crypto.ARGON2ID_OPSLIMIT,
            "memlimit": crypto.ARGON2ID_MEMLIMIT,
        },
        "warnings": warnings,
    }
