"""A node's own key material on disk.

Layout of a key directory (mode 0700; every file mode 0600)::

    root.key            Ed25519 root seed (b64u): signs only the keyset
    sig-<kid>.key       Ed25519 signing seeds, one per signing key
    box-<kid>.key       X25519 secret keys, one per encryption key
    keyset.json         the current signed keyset (wire JSON), public

The keyset itself records each key's status, so it is the index of the
private files. Retired x25519 private keys are destroyed once the protocol's
grace period (until + 30 days + 5 min) has passed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from handover.protocol import crypto
from handover.protocol.canonical import b64u_decode, b64u_encode
from handover.protocol.errors import ConfigError, EncodingError, InvalidKeyset
from handover.protocol.keyset import (
    MAX_KEYSET_LIFETIME_MS,
    RETIRED_BOX_GRACE_MS,
    KeyEntry,
    Keyset,
    build_keyset,
    is_node_id,
    parse_keyset,
)
from handover.protocol.opening import OwnBoxKey, ReceiverKeys
from handover.protocol.packet import Identity
from handover.protocol.timeutil import DAY_MS

KEYSET_FILE = "keyset.json"
ROOT_FILE = "root.key"
STORAGE_FILE = "storage.key"


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by the owner only, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _read_secret(path: Path) -> bytes:
    try:
        text = path.read_text("ascii").strip()
        return b64u_decode(text, 32)
    except FileNotFoundError as exc:
        raise ConfigError(f"key file {path} is missing") from exc
    except (EncodingError, UnicodeDecodeError) as exc:
        raise ConfigError(f"key file {path} is not a 32-byte base64url key") from exc


ROOT_SEALED_PREFIX = "hov-root-v1:"
# Argon2id "interactive" limits: the root key is read at every start and
# rotation, and a node's memory bound matters more than the extra cost.
ROOT_KDF_OPS = 2
ROOT_KDF_MEM = 64 * 1024 * 1024
ROOT_PASSPHRASE_ENV = "HANDOVER_ROOT_PASSPHRASE_FILE"  # noqa: S105 - a variable name
ROOT_CREDENTIAL = "handover-root-passphrase"  # systemd LoadCredential= name


def root_passphrase() -> bytes | None:
    """The passphrase of an encrypted root key: the file named by
    HANDOVER_ROOT_PASSPHRASE_FILE, else the systemd credential
    `handover-root-passphrase`; None when neither is set."""
    named = os.environ.get(ROOT_PASSPHRASE_ENV)
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    path = Path(named) if named else None
    if path is None and credentials:
        candidate = Path(credentials) / ROOT_CREDENTIAL
        path = candidate if candidate.exists() else None
    if path is None:
        return None
    try:
        lines = path.read_bytes().splitlines()
        return lines[0] if lines else b""
    except OSError as exc:
        raise ConfigError(f"cannot read the root key passphrase file {path}") from exc


def _read_root(path: Path) -> bytes:
    """The root key's seed, from a plain or a passphrase-sealed `root.key`."""
    try:
        text = path.read_text("ascii").strip()
    except FileNotFoundError as exc:
        raise ConfigError(f"key file {path} is missing") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"key file {path} is not a key file") from exc
    if not text.startswith(ROOT_SEALED_PREFIX):
        return _read_secret(path)
    passphrase = root_passphrase()
    if not passphrase:
        raise ConfigError(
            f"{path} is encrypted: give its passphrase in a file named by"
            f" {ROOT_PASSPHRASE_ENV}, or as the systemd credential {ROOT_CREDENTIAL}"
        )
    try:
        raw = b64u_decode(text.removeprefix(ROOT_SEALED_PREFIX))
        salt, nonce, box = raw[:16], raw[16:40], raw[40:]
        key = crypto.argon2id_key(passphrase, salt, opslimit=ROOT_KDF_OPS, memlimit=ROOT_KDF_MEM)
        seed = crypto.secretbox_open(box, nonce, key)
    except (EncodingError, crypto.CryptoFailure) as exc:
        raise ConfigError(f"{path} does not open with the given passphrase") from exc
    if len(seed) != 32:
        raise ConfigError(f"{path} does not hold a 32-byte key")
    return seed


def protect_root(directory: Path, passphrase: bytes) -> None:
    """Encrypt `root.key` in place with a passphrase (Argon2id + secretbox).

    Raises:
        ConfigError: no root key, a short passphrase, or it is already encrypted.
    """
    path = directory / ROOT_FILE
    if len(passphrase) < 12:
        raise ConfigError("the passphrase must be at least 12 characters")
    if path.exists() and path.read_text("ascii").startswith(ROOT_SEALED_PREFIX):
        raise ConfigError(f"{path} is already encrypted")
    seed = _read_secret(path)
    salt, nonce = crypto.random_bytes(16), crypto.random_bytes(24)
    key = crypto.argon2id_key(passphrase, salt, opslimit=ROOT_KDF_OPS, memlimit=ROOT_KDF_MEM)
    sealed = salt + nonce + crypto.secretbox_seal(seed, nonce, key)
    # Opened again before it replaces the plain key: the passphrase given is the one
    # the node will need.
    if crypto.secretbox_open(sealed[40:], nonce, key) != seed:
        raise ConfigError("the root key did not survive encryption; root.key is unchanged")
    write_private(path, (ROOT_SEALED_PREFIX + b64u_encode(sealed) + "\n").encode("ascii"))


@dataclass(frozen=True)
class NodeKeys:
    """The node's root, signing and encryption keys and its current keyset."""

    directory: Path
    root: crypto.SigningKey
    keyset: Keyset
    signing: dict[str, crypto.SigningKey]
    boxes: dict[str, crypto.BoxKey]

    @property
    def node(self) -> str:
        return self.keyset.node

    @property
    def fingerprint(self) -> str:
        return self.keyset.fingerprint

    def identity(self) -> Identity:
        """The active signing key (the newest if several); computed once per load."""
        cached: Identity | None = self.__dict__.get("_identity")
        if cached is not None:
            return cached
        active = [k for k in self.keyset.keys if k.type == "ed25519-sig" and k.status == "active"]
        if not active:
            raise ConfigError("the keyset has no active signing key; run `handover keys rotate`")
        entry = min(active, key=lambda k: (-k.nbf, k.kid.encode("ascii")))
        identity = Identity(self.node, entry.kid, self.signing[entry.kid])
        self.__dict__["_identity"] = identity  # frozen dataclass: cache beside the fields
        return identity

    def receiver_keys(self) -> ReceiverKeys:
        """Our x25519 keys whose private halves we still hold; computed once per load."""
        cached: ReceiverKeys | None = self.__dict__.get("_receiver_keys")
        if cached is not None:
            return cached
        own = {}
        for entry in self.keyset.keys:
            if entry.type == "x25519-box" and entry.kid in self.boxes:
                own[entry.kid] = OwnBoxKey(self.boxes[entry.kid], entry)
        keys = ReceiverKeys(self.node, own)
        self.__dict__["_receiver_keys"] = keys
        return keys


def _sign_and_write(
    directory: Path,
    root: crypto.SigningKey,
    node: str,
    serial: int,
    keys: list[KeyEntry],
    now: int,
    lifetime_ms: int,
) -> bytes:
    wire = build_keyset(
        node=node, serial=serial, iat=now, exp=now + lifetime_ms, root=root, keys=keys
    )
    write_public(directory / KEYSET_FILE, wire)
    return wire


def _new_key(directory: Path, key_type: str, now: int) -> KeyEntry:
    """A new active key of `key_type`, its private half written 0600."""
    if key_type == "ed25519-sig":
        sig = crypto.SigningKey.generate()
        kid = crypto.kid("ed25519-sig", sig.public_key)
        write_private(directory / f"sig-{kid}.key", b64u_encode(sig.seed).encode() + b"\n")
        return KeyEntry(kid, "ed25519-sig", sig.public_key, now, "active")
    box = crypto.BoxKey.generate()
    kid = crypto.kid("x25519-box", box.public_key)
    write_private(directory / f"box-{kid}.key", b64u_encode(box.secret).encode() + b"\n")
    return KeyEntry(kid, "x25519-box", box.public_key, now, "active")


def _new_keys(directory: Path, now: int) -> list[KeyEntry]:
    return [_new_key(directory, "ed25519-sig", now), _new_key(directory, "x25519-box", now)]


def init_keys(
    directory: Path, node: str, now: int, lifetime_ms: int = MAX_KEYSET_LIFETIME_MS
) -> NodeKeys:
    """Create a new key directory for `node`.

    Raises:
        ConfigError: bad node id, or the directory already holds keys.
    """
    if not is_node_id(node):
        raise ConfigError(f"{node!r} is not a valid node id (lowercase DNS-style name)")
    if (directory / ROOT_FILE).exists():
        raise ConfigError(f"{directory} already holds keys; refusing to overwrite them")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    root = crypto.SigningKey.generate()
    write_private(directory / ROOT_FILE, b64u_encode(root.seed).encode() + b"\n")
    keys = _new_keys(directory, now)
    _sign_and_write(directory, root, node, 1, keys, now, lifetime_ms)
    return load_keys(directory)


def load_keys(directory: Path) -> NodeKeys:
    """Load a key directory and check it is self-consistent.

    Raises:
        ConfigError: missing or mismatching files.
    """
    try:
        wire = (directory / KEYSET_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{directory / KEYSET_FILE} is missing; run `handover keys init`"
        ) from exc
    try:
        keyset = parse_keyset(wire)
    except InvalidKeyset as exc:
        raise ConfigError(f"{directory / KEYSET_FILE} is not a valid keyset: {exc}") from exc
    root = crypto.SigningKey.from_seed(_read_root(directory / ROOT_FILE))
    if root.public_key != keyset.root:
        raise ConfigError("root.key does not match the keyset's root key")
    signing: dict[str, crypto.SigningKey] = {}
    boxes: dict[str, crypto.BoxKey] = {}
    for entry in keyset.keys:
        if entry.type == "ed25519-sig" and entry.status != "revoked":
            path = directory / f"sig-{entry.kid}.key"
            if path.exists() or entry.status == "active":
                key = crypto.SigningKey.from_seed(_read_secret(path))
                if key.public_key != entry.public_key:
                    raise ConfigError(f"{path.name} does not match its keyset entry")
                signing[entry.kid] = key
        elif entry.type == "x25519-box":
            path = directory / f"box-{entry.kid}.key"
            if path.exists():
                box = crypto.BoxKey.from_secret(_read_secret(path))
                if box.public_key != entry.public_key:
                    raise ConfigError(f"{path.name} does not match its keyset entry")
                boxes[entry.kid] = box
    return NodeKeys(directory, root, keyset, signing, boxes)


def resign(keys: NodeKeys, now: int, lifetime_ms: int = MAX_KEYSET_LIFETIME_MS) -> NodeKeys:
    """Re-sign the keyset with a fresh validity window.

    The window starts at 00:00 UTC of `now` and the serial is that moment in
    seconds (or the old serial + 1 if that is higher), so replicas of one node
    holding the same keys, each with its own copy of `keys/` (a Kubernetes
    Secret), re-sign to byte-identical keysets on the same day: Ed25519 is
    deterministic, and peers never see two keysets with one serial.
    """
    day = now - now % DAY_MS
    _sign_and_write(
        keys.directory,
        keys.root,
        keys.node,
        max(keys.keyset.serial + 1, day // 1000),
        list(keys.keyset.keys),
        day,
        lifetime_ms,
    )
    return load_keys(keys.directory)


def rotate(keys: NodeKeys, now: int, lifetime_ms: int = MAX_KEYSET_LIFETIME_MS) -> NodeKeys:
    """New signing and encryption keys; the active ones become `retired` with `until = now`.

    Packets signed before now still verify (iat <= until); packets sealed to the
    old x25519 key still open for 30 days + 5 min (docs/protocol.md section 2).
    """
    entries = [
        KeyEntry(k.kid, k.type, k.public_key, k.nbf, "retired", now) if k.status == "active" else k
        for k in keys.keyset.keys
    ]
    entries.extend(_new_keys(keys.directory, now))
    _sign_and_write(
        keys.directory, keys.root, keys.node, keys.keyset.serial + 1, entries, now, lifetime_ms
    )
    return load_keys(keys.directory)


def revoke(
    keys: NodeKeys, kid: str, now: int, lifetime_ms: int = MAX_KEYSET_LIFETIME_MS
) -> NodeKeys:
    """Mark key `kid` revoked with `until = now` (docs/protocol.md section 2: peers accept
    nothing signed by it dated after, and a revoked x25519 key decrypts nothing).

    Revoking an active key puts a new key of its type in its place, so the node
    goes on signing and receiving; the private key of a revoked x25519 key is
    destroyed at once.

    Raises:
        ConfigError: no such kid, or it is already revoked.
    """
    entry = next((k for k in keys.keyset.keys if k.kid == kid), None)
    if entry is None:
        raise ConfigError(f"the keyset has no key {kid}: see `handover keys fingerprint`")
    if entry.status == "revoked":
        raise ConfigError(f"key {kid} is already revoked")
    entries = [
        KeyEntry(k.kid, k.type, k.public_key, k.nbf, "revoked", now) if k.kid == kid else k
        for k in keys.keyset.keys
    ]
    if entry.status == "active":
        entries.append(_new_key(keys.directory, entry.type, now))
    _sign_and_write(
        keys.directory, keys.root, keys.node, keys.keyset.serial + 1, entries, now, lifetime_ms
    )
    if entry.type == "ed25519-sig":
        (keys.directory / f"sig-{kid}.key").unlink(missing_ok=True)
    revoked = load_keys(keys.directory)
    if destroy_expired(revoked, now):
        revoked = load_keys(keys.directory)
    return revoked


def destroy_expired(keys: NodeKeys, now: int) -> list[str]:
    """Delete retired or revoked x25519 private keys past their decryption grace."""
    destroyed = []
    for entry in keys.keyset.keys:
        if entry.type != "x25519-box" or entry.status == "active" or entry.until is None:
            continue
        if entry.status == "revoked" or now > entry.until + RETIRED_BOX_GRACE_MS:
            path = keys.directory / f"box-{entry.kid}.key"
            if path.exists():
                path.unlink()
                destroyed.append(entry.kid)
    return destroyed


def replace_storage_key(directory: Path, new: bytes) -> None:
    """Make `new` the storage key and destroy the old one: its file is overwritten
    with zeros (and synced) before the new key takes its name."""
    path = directory / STORAGE_FILE
    if path.exists():
        size = path.stat().st_size
        with path.open("r+b") as old:
            old.write(bytes(size))
            old.flush()
            os.fsync(old.fileno())
    write_private(path, b64u_encode(new).encode() + b"\n")


def storage_key(directory: Path) -> bytes:
    """The key that encrypts bodies at rest in this node's database (created once).

    Back it up with the database: without it, stored bodies cannot be read.
    """
    path = directory / STORAGE_FILE
    if not path.exists():
        write_private(path, b64u_encode(crypto.random_bytes(32)).encode() + b"\n")
    return _read_secret(path)
