"""The backup file (node/backup.py): what it holds, and that a wrong passphrase,
any changed byte, a cut, extra bytes or records out of place are each refused
with one line before anything is used."""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable
from pathlib import Path

import pytest

from handover.node import backup
from handover.node.backup import (
    HEADER,
    BackupError,
    BackupWriter,
    database_sql,
    node_files,
    records,
    safe_path,
    scan,
)
from handover.node.config import load_config
from handover.node.restore import relocate_settings
from handover.protocol import crypto
from handover.protocol.canonical import cj_dumps

PASS = b"a long enough passphrase"
FAST = {"opslimit": 1, "memlimit": 8 * 1024 * 1024}
MANIFEST = {"format": "handover-backup", "v": 1, "node": "prison.example", "created_at": 5}
SQL = b"".join(b"INSERT INTO t VALUES (%d);\n" % i for i in range(40_000))


def make(
    files: dict[str, bytes] | None = None, sql: Iterable[bytes] = (SQL[:100_000], SQL[100_000:])
) -> bytes:
    out = io.BytesIO()
    writer = BackupWriter(out, PASS, **FAST)
    writer.manifest(MANIFEST)
    for path, data in (files or {"handover.toml": b'node = "prison.example"\n'}).items():
        writer.file(path, data)
    writer.database(sql)
    writer.finish()
    return out.getvalue()


@pytest.fixture(scope="module")
def raw() -> bytes:
    return make({"handover.toml": b"x = 1\n", "keys/storage.key": b"S" * 44, "empty": b""})


def read(data: bytes, passphrase: bytes = PASS) -> backup.Contents:
    return scan(io.BytesIO(data), passphrase, "f.hbk")


def refused(data: bytes, match: str, passphrase: bytes = PASS) -> None:
    with pytest.raises(BackupError, match=match) as caught:
        read(data, passphrase)
    assert "\n" not in str(caught.value)
    with pytest.raises(BackupError, match=match):
        b"".join(database_sql(io.BytesIO(data), passphrase, "f.hbk"))


def test_a_backup_holds_its_manifest_files_and_database(raw: bytes) -> None:
    contents = read(raw)
    assert contents.manifest == MANIFEST
    assert contents.files == {
        "handover.toml": b"x = 1\n",
        "keys/storage.key": b"S" * 44,
        "empty": b"",
    }
    assert b"".join(database_sql(io.BytesIO(raw), PASS, "f.hbk")) == SQL
    assert contents.database_bytes < len(SQL) // 3  # compressed
    # Nothing of the plaintext shows in the file.
    assert b"S" * 44 not in raw and b"INSERT" not in raw and b"prison" not in raw


def test_the_header_says_what_it_is_and_how_the_key_is_derived(raw: bytes) -> None:
    magic, version, kdf, opslimit, memlimit, salt, stream = HEADER.unpack(raw[: HEADER.size])
    assert (magic, version, kdf) == (b"HOVRBAK\x00", 1, 1)
    assert (opslimit, memlimit) == (FAST["opslimit"], FAST["memlimit"])
    assert len(salt) == 16 and len(stream) == crypto.STREAM_HEADER_BYTES
    assert HEADER.size == 62
    assert make()[8 + 2 + 12 : 8 + 2 + 12 + 16] != salt  # a fresh salt each time


def test_a_wrong_passphrase_is_one_line(raw: bytes) -> None:
    refused(raw, "wrong passphrase", passphrase=b"another passphrase")


@pytest.mark.parametrize(
    ("where", "match"),
    [
        (0, "not a handover backup"),
        (8, "format version"),
        (9, "key derivation"),
        (13, "key derivation"),  # opslimit beyond what a reader accepts
        (14, "key derivation"),  # memlimit beyond what a reader accepts
        (30, "wrong passphrase"),  # the salt
        (50, "wrong passphrase"),  # the stream header
        (HEADER.size + 1, "damaged or altered"),  # a record's length
        (HEADER.size + 10, "wrong passphrase"),  # the first record (manifest)
        (-30, "altered or damaged"),  # the final record
    ],
)
def test_any_changed_byte_is_refused(raw: bytes, where: int, match: str) -> None:
    changed = bytearray(raw)
    changed[where] ^= 0x40
    refused(bytes(changed), match)


def test_every_changed_byte_is_refused(raw: bytes) -> None:
    small = make({"handover.toml": b"x"}, [b"SELECT 1;\n"])
    for i in range(len(small)):
        changed = bytearray(small)
        changed[i] ^= 0x01
        with pytest.raises(BackupError):
            read(bytes(changed))


def test_a_cut_or_extended_file_is_refused(raw: bytes) -> None:
    refused(raw[:30], "not a handover backup")
    refused(raw[: HEADER.size], "truncated")
    refused(raw[:-1], "truncated")
    refused(raw + b"\x00", "after its final record")


def test_dropped_or_swapped_records_are_refused() -> None:
    data = make({"a": b"1", "b": b"2"}, [b"SELECT 1;\n"])
    frames, offset = [], HEADER.size
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        frames.append(data[offset : offset + 4 + length])
        offset += 4 + length
    head = data[: HEADER.size]
    refused(head + b"".join(frames[:2] + frames[3:]), "altered or damaged")
    refused(head + b"".join([frames[0], frames[2], frames[1], *frames[3:]]), "altered")
    refused(head + b"".join(frames[:-1]), "truncated")


def records_file(*plain: bytes) -> bytes:
    """A file with the given record plaintexts, properly encrypted (the last final)."""
    out = io.BytesIO()
    writer = BackupWriter(out, PASS, **FAST)
    for i, item in enumerate(plain):
        writer._record(item[:1], item[1:], final=i == len(plain) - 1)
    return out.getvalue()


M = b"M" + cj_dumps(MANIFEST)
B = b"B" + cj_dumps({"format": "plain", "compression": "zlib"})
Z = b"Z" + cj_dumps({"files": 0, "database_bytes": 0})


@pytest.mark.parametrize(
    ("plain", "match"),
    [
        ((B, Z), "not laid out"),  # no manifest first
        ((M, M, Z), "not laid out"),
        ((M, b"D" + b"x", Z), "not laid out"),  # data without a file or database
        ((M, Z), "no database"),
        ((M, B, b"F" + cj_dumps({"path": "a"}), Z), "not laid out"),  # a file after it
        ((M, b"F" + cj_dumps({"path": "../a"}), B, Z), "outside the node directory"),
        ((M, b"F" + cj_dumps({"path": "a"}), b"F" + cj_dumps({"path": "a"}), B, Z), "twice"),
        ((b"M" + cj_dumps({"format": "other", "v": 1}), B, Z), "format"),
        ((M, b"B" + cj_dumps({"format": "custom"}), Z), "database format"),
        ((M, B, b"D" + b"not zlib", Z), "damaged database"),
        ((M, B), "not laid out"),  # ends (final) without an end record
        ((M, b"", Z), "damaged or altered"),  # an empty record: not even a kind
    ],
)
def test_records_out_of_place_are_refused(plain: tuple[bytes, ...], match: str) -> None:
    data = records_file(*plain)
    with pytest.raises(BackupError, match=match):
        read(data)  # all but the damaged database section: only loading decompresses
        b"".join(database_sql(io.BytesIO(data), PASS, "f.hbk"))


def test_records_are_only_yielded_once_authenticated(raw: bytes) -> None:
    kinds = [kind for kind, _ in records(io.BytesIO(raw), PASS, "f.hbk")]
    assert kinds[0] == b"M" and kinds[-1] == b"Z" and kinds.count(b"B") == 1


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../x", "a/../../x", "pgdata/base/1", "", ".", "a\\b", 7, None]
)
def test_paths_outside_the_node_directory_are_refused(path: object) -> None:
    with pytest.raises(BackupError, match="outside"):
        safe_path(path, "f.hbk")


def test_plain_paths_pass() -> None:
    assert safe_path("keys/storage.key", "f") == "keys/storage.key"
    assert safe_path("tls/peers/a.pem", "f") == "tls/peers/a.pem"


def test_the_database_section_is_zlib_of_the_sql() -> None:
    data = make({}, [b"SELECT 1;\n", b"SELECT 2;\n"])
    assert b"".join(database_sql(io.BytesIO(data), PASS, "f")) == b"SELECT 1;\nSELECT 2;\n"
    assert zlib.decompress(zlib.compress(b"x")) == b"x"


# --- restore's settings, backup's files ------------------------------------------------


def test_settings_naming_files_inside_the_old_directory_move_with_it() -> None:
    settings = (
        b'node = "prison.example"\n'
        b'tls_cert = "/srv/old/tls/server.pem"\n'
        b'tls_key = "/elsewhere/server.key"\n'
        b'policy_file = "policy.json"\n'
        b'public_url = "/srv/old/not-a-file-setting"\n'
    )
    moved, names = relocate_settings(settings, "/srv/old", Path("/srv/new"))
    assert names == ["tls_cert"]
    assert moved.decode().splitlines() == [
        'node = "prison.example"',
        'tls_cert = "/srv/new/tls/server.pem"',
        'tls_key = "/elsewhere/server.key"',
        'policy_file = "policy.json"',
        'public_url = "/srv/old/not-a-file-setting"',
    ]
    assert relocate_settings(settings, None, Path("/srv/new")) == (settings, [])


def test_a_backup_takes_keys_tls_and_files_settings_name_inside_the_directory(
    tmp_path: Path,
) -> None:
    node = tmp_path / "node"
    (node / "keys").mkdir(parents=True)
    (node / "keys" / "root.key").write_text("r")
    (node / "keys" / "keyset.json.tmp").write_text("half-written")
    (node / "tls" / "peers").mkdir(parents=True)
    (node / "tls" / "peers" / "a.pem").write_text("ca")
    (node / "policy.json").write_text("{}")
    outside = tmp_path / "server.pem"
    outside.write_text("cert")
    (node / "handover.toml").write_text(
        'node = "prison.example"\nkind = "prison"\npolicy_file = "policy.json"\n'
        f'tls_cert = "{outside}"\ntls_key = "{outside}"\n'
    )
    files, warnings = node_files(load_config(node))
    assert sorted(files) == [
        "handover.toml",
        "keys/root.key",
        "policy.json",
        "tls/peers/a.pem",
    ]
    assert [w.split(" ")[0] for w in warnings] == ["tls_cert", "tls_key"]
    assert all("not in the backup" in w for w in warnings)
