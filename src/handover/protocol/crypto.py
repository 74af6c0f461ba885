"""The only module that imports nacl: every primitive of hp1 lives here.

Everything above deals in bytes and the small key classes below. Hashes are
BLAKE2b (hashlib's is the same function as libsodium's); signatures follow
libsodium's `crypto_sign_verify_detached` rule (docs/protocol.md section 1).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field
from typing import Literal

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash.argon2id

from handover.protocol.canonical import b64u_encode

KeyType = Literal["ed25519-root", "ed25519-sig", "x25519-box"]
KEY_TYPES: tuple[KeyType, ...] = ("ed25519-root", "ed25519-sig", "x25519-box")
ZERO_HEAD = bytes(32)
WRAP_NONCE_PREFIX = b"hp1/wrap/nonce/1"
assert len(WRAP_NONCE_PREFIX) == 16


class CryptoFailure(Exception):
    """A primitive refused its input (bad MAC, small-order point, bad signature).

    Internal: callers translate it into their own error type at once.
    """


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def h32(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def h64(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=64).digest()


def kh32(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32, key=key).digest()


def le64(n: int) -> bytes:
    return struct.pack("<Q", n)


def be64(n: int) -> bytes:
    return struct.pack(">Q", n)


def pae(*pieces: bytes | str) -> bytes:
    """Pre-authentication encoding: LE64(n) || (LE64(len(p)) || p)*. Strings are UTF-8."""
    out = [le64(len(pieces))]
    for piece in pieces:
        raw = piece.encode("utf-8") if isinstance(piece, str) else piece
        out.append(le64(len(raw)))
        out.append(raw)
    return b"".join(out)


def kid(key_type: KeyType, public_key: bytes) -> str:
    """kid(type, pk) = b64u(H32(PAE("hp1/kid", type, pk))[0:16])."""
    return b64u_encode(h32(pae("hp1/kid", key_type, public_key))[:16])


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# --- Ed25519 ---------------------------------------------------------------


def ed25519_public_key_ok(public_key: bytes) -> bool:
    """Canonical, on the curve, not of small order, in the prime-order subgroup."""
    if len(public_key) != 32:
        return False
    return bool(sodium.crypto_core_ed25519_is_valid_point(public_key))


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """libsodium's `crypto_sign_verify_detached`: rejects S >= L, small-order or
    non-canonical A and R, and compares the recomputed R byte for byte."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        sodium.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key (root or signing) and its public half."""

    seed: bytes = field(repr=False)
    public_key: bytes
    _secret: bytes = field(repr=False, default=b"", compare=False)

    def __post_init__(self) -> None:
        if not self._secret:
            _pk, sk = sodium.crypto_sign_seed_keypair(self.seed)
            object.__setattr__(self, "_secret", sk)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_seed(random_bytes(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        pk, _sk = sodium.crypto_sign_seed_keypair(seed)
        return cls(seed=seed, public_key=pk)

    def sign(self, message: bytes) -> bytes:
        signed: bytes = sodium.crypto_sign(message, self._secret)
        return signed[:64]


# --- X25519 ----------------------------------------------------------------


def x25519_public_key_ok(public_key: bytes) -> bool:
    """False for a small-order (or otherwise degenerate) X25519 public key."""
    if len(public_key) != 32:
        return False
    try:
        # Any clamped scalar times a small-order point is the identity, which
        # libsodium refuses; a point of large order never gives it.
        sodium.crypto_scalarmult(_PROBE_SCALAR, public_key)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True


_PROBE_SCALAR = bytes([9] * 32)


@dataclass(frozen=True)
class BoxKey:
    """An X25519 private key and its public half."""

    secret: bytes = field(repr=False)
    public_key: bytes

    @classmethod
    def generate(cls) -> BoxKey:
        return cls.from_secret(random_bytes(32))

    @classmethod
    def from_secret(cls, secret: bytes) -> BoxKey:
        if len(secret) != 32:
            raise ValueError("an X25519 secret key is 32 bytes")
        return cls(secret=secret, public_key=sodium.crypto_scalarmult_base(secret))


def wrap_nonce(index: int) -> bytes:
    return WRAP_NONCE_PREFIX + be64(index)


def box_wrap(content_key: bytes, index: int, recipient_pk: bytes, ephemeral: BoxKey) -> bytes:
    """crypto_box_easy(K, "hp1/wrap/nonce/1" || BE64(i), pk_i, e): 48 bytes."""
    nonce = wrap_nonce(index)
    wrapped: bytes = sodium.crypto_box(content_key, nonce, recipient_pk, ephemeral.secret)
    return wrapped


def box_unwrap(wrapped: bytes, index: int, ephemeral_pk: bytes, own: BoxKey) -> bytes:
    """Open a wrapped content key.

    Raises:
        CryptoFailure: bad MAC, wrong key, or a small-order ephemeral key.
    """
    try:
        key: bytes = sodium.crypto_box_open(wrapped, wrap_nonce(index), ephemeral_pk, own.secret)
    except (nacl.exceptions.CryptoError, nacl.exceptions.RuntimeError, ValueError) as exc:
        raise CryptoFailure("unwrap failed") from exc
    return key


def secretbox_seal(plaintext: bytes, nonce: bytes, key: bytes) -> bytes:
    """crypto_secretbox_easy: MAC || ciphertext."""
    sealed: bytes = sodium.crypto_secretbox(plaintext, nonce, key)
    return sealed


def secretbox_open(ciphertext: bytes, nonce: bytes, key: bytes) -> bytes:
    """Raises CryptoFailure on a bad MAC."""
    try:
        plain: bytes = sodium.crypto_secretbox_open(ciphertext, nonce, key)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise CryptoFailure("decryption failed") from exc
    return plain


# --- at rest -------------------------------------------------------------------


def seal_at_rest(key: bytes, plaintext: bytes) -> bytes:
    """Encrypt data for the node's own database: nonce (24) || secretbox."""
    nonce = random_bytes(24)
    return nonce + secretbox_seal(plaintext, nonce, key)


def open_at_rest(key: bytes, boxed: bytes) -> bytes:
    """Raises CryptoFailure if the data or the key is wrong."""
    return secretbox_open(boxed[24:], boxed[:24], key)


# --- passphrases and encrypted streams (node backups) ---------------------------

ARGON2ID_SALT_BYTES = 16
# What `handover backup` uses: libsodium's "moderate" limits (256 MiB, 3 passes).
ARGON2ID_OPSLIMIT = int(nacl.pwhash.argon2id.OPSLIMIT_MODERATE)
ARGON2ID_MEMLIMIT = int(nacl.pwhash.argon2id.MEMLIMIT_MODERATE)
STREAM_KEY_BYTES = int(sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES)
STREAM_HEADER_BYTES = int(sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES)
STREAM_ABYTES = int(sodium.crypto_secretstream_xchacha20poly1305_ABYTES)
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
STREAM_TAG_MESSAGE = int(_TAG_MESSAGE)
STREAM_TAG_FINAL = int(_TAG_FINAL)


def argon2id_key(passphrase: bytes, salt: bytes, *, opslimit: int, memlimit: int) -> bytes:
    """A 32-byte key from a passphrase: Argon2id v1.3 (libsodium `crypto_pwhash`).

    Raises:
        CryptoFailure: limits or salt that libsodium refuses.
    """
    try:
        key: bytes = nacl.pwhash.argon2id.kdf(
            STREAM_KEY_BYTES, passphrase, salt, opslimit=opslimit, memlimit=memlimit
        )
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, ValueError) as exc:
        raise CryptoFailure("key derivation refused its parameters") from exc
    return key


# Operators' web sign-in passwords: libsodium's "interactive" Argon2id limits
# (64 MiB, 2 passes), the encoded string (algorithm, limits, salt) is what is stored.
PASSWORD_OPSLIMIT = int(nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE)
PASSWORD_MEMLIMIT = int(nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE)


def hash_password(password: str) -> str:
    """An Argon2id (v1.3) hash of a password in libsodium's encoded form."""
    encoded: bytes = nacl.pwhash.argon2id.str(
        password.encode("utf-8"), opslimit=PASSWORD_OPSLIMIT, memlimit=PASSWORD_MEMLIMIT
    )
    return encoded.decode("ascii")


def verify_password(encoded: str, password: str) -> bool:
    """Whether `password` matches a hash made by :func:`hash_password`."""
    try:
        return bool(nacl.pwhash.argon2id.verify(encoded.encode("ascii"), password.encode("utf-8")))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
        return False


class StreamSealer:
    """crypto_secretstream_xchacha20poly1305, pushing side: messages in order,
    the last one tagged final, so reordering, dropping or truncating is detected."""

    def __init__(self, key: bytes, header: bytes | None = None) -> None:
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        if header is None:
            self.header: bytes = sodium.crypto_secretstream_xchacha20poly1305_init_push(
                self._state, key
            )
        else:
            # Known-answer vectors only: libsodium's init_push draws the header
            # itself; init_pull with a chosen header derives the same state
            # (HChaCha20 subkey, counter 1, the header's last 8 bytes as nonce).
            if len(key) != STREAM_KEY_BYTES or len(header) != STREAM_HEADER_BYTES:
                raise CryptoFailure("stream key or header has the wrong length")
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, header, key)
            self.header = header

    def push(self, message: bytes, ad: bytes = b"", *, final: bool = False) -> bytes:
        sealed: bytes = sodium.crypto_secretstream_xchacha20poly1305_push(
            self._state, message, ad or None, _TAG_FINAL if final else _TAG_MESSAGE
        )
        return sealed


class StreamOpener:
    """The pulling side of :class:`StreamSealer`."""

    def __init__(self, key: bytes, header: bytes) -> None:
        if len(key) != STREAM_KEY_BYTES or len(header) != STREAM_HEADER_BYTES:
            raise CryptoFailure("stream key or header has the wrong length")
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, header, key)

    def pull(self, sealed: bytes, ad: bytes = b"") -> tuple[bytes, bool]:
        """The next message and whether it is the final one.

        Raises:
            CryptoFailure: wrong key, or a message altered, reordered or replayed.
        """
        try:
            message, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                self._state, sealed, ad or None
            )
        except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, ValueError) as exc:
            raise CryptoFailure("stream message does not authenticate") from exc
        return bytes(message), tag == _TAG_FINAL

    def pull_tagged(self, sealed: bytes, ad: bytes = b"") -> tuple[bytes, int]:
        """The next message and its raw tag (compare with STREAM_TAG_MESSAGE / _FINAL).

        Raises:
            CryptoFailure: as :meth:`pull`.
        """
        try:
            message, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(
                self._state, sealed, ad or None
            )
        except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError, ValueError) as exc:
            raise CryptoFailure("stream message does not authenticate") from exc
        return bytes(message), int(tag)


def h64_hasher() -> hashlib.blake2b:
    """An incremental H64 (BLAKE2b-512), for streams too large to hold."""
    return hashlib.blake2b(digest_size=64)
