"""The stored-body vault: the only code that encrypts or decrypts bodies at rest.

Crypto-shredding (LED Art 16, 29): each stored packet's content (its body as
canonical JSON and, for a received packet, its wire) is sealed (secretbox)
with its own random data key; the data key is stored next to it wrapped by
the node's storage key (`keys/storage.key`). Erasure destroys the wrapped key
in the same transaction that clears the content, so copies of the ciphertext
left in table files, the WAL or a backup cannot be opened once the storage
key that wrapped the destroyed key is itself rotated away
(`handover keys rotate-storage`).

A box without a data key (`key` None) was sealed with the storage key itself,
before migration 014; it still opens, and the node re-seals such rows under
data keys at startup (`Erasure.wrap_legacy`).

One failure policy everywhere: a box that does not open, or does not hold a
JSON object, raises :class:`BodyUnavailable` naming the packet; no caller ever
goes on with an empty body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handover.protocol import crypto
from handover.protocol.canonical import cj_dumps, cj_loads
from handover.protocol.errors import EncodingError
from handover.workflow.errors import BodyUnavailable

DATA_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Sealed:
    """Content sealed with a data key, and that key wrapped by the storage key."""

    box: bytes
    key: bytes


class Vault:
    def __init__(self, storage_key: bytes) -> None:
        self._key = storage_key

    def rekey(self, storage_key: bytes) -> None:
        """Use a new storage key (after `handover keys rotate-storage`)."""
        self._key = storage_key

    def same_key(self, storage_key: bytes) -> bool:
        return crypto.constant_time_equal(self._key, storage_key)

    # --- data keys --------------------------------------------------------------------

    def new_key(self) -> bytes:
        """A fresh data key, wrapped by the storage key."""
        return crypto.seal_at_rest(self._key, crypto.random_bytes(DATA_KEY_BYTES))

    def _unwrap(self, pid: str, key: bytes | memoryview) -> bytes:
        try:
            return crypto.open_at_rest(self._key, bytes(key))
        except crypto.CryptoFailure as exc:
            raise BodyUnavailable(pid) from exc

    def rewrap(self, pid: str, key: bytes | memoryview, into: Vault) -> bytes:
        """A data key wrapped by this vault's storage key, wrapped by `into`'s instead."""
        return crypto.seal_at_rest(into._key, self._unwrap(pid, key))

    # --- sealing and opening ------------------------------------------------------------

    def seal(self, data: bytes, key: bytes | memoryview | None = None) -> Sealed:
        """`data` sealed with the data key `key` (wrapped), or with a new one."""
        wrapped = self.new_key() if key is None else bytes(key)
        return Sealed(crypto.seal_at_rest(self._unwrap("", wrapped), data), wrapped)

    def seal_with_storage_key(self, data: bytes) -> bytes:
        """`data` sealed with the storage key itself (attachment items: their rows
        are deleted on erasure; `handover keys rotate-storage` re-seals them)."""
        return crypto.seal_at_rest(self._key, data)

    def reseal(self, pid: str, box: bytes | memoryview, into: Vault) -> bytes:
        """A box sealed with this vault's storage key, sealed with `into`'s instead."""
        return into.seal_with_storage_key(self.open_bytes(pid, box, None))

    def seal_body(self, body: dict[str, Any], key: bytes | memoryview | None = None) -> Sealed:
        return self.seal(cj_dumps(body), key)

    def open_bytes(
        self, pid: str, box: bytes | memoryview, key: bytes | memoryview | None
    ) -> bytes:
        """The content of `box` (sealed with the wrapped data key `key`, or with the
        storage key itself when `key` is None).

        Raises:
            BodyUnavailable: the key or the box does not open.
        """
        secret = self._key if key is None else self._unwrap(pid, key)
        try:
            return crypto.open_at_rest(secret, bytes(box))
        except crypto.CryptoFailure as exc:
            raise BodyUnavailable(pid) from exc

    def open(
        self, pid: str, box: bytes | memoryview, key: bytes | memoryview | None
    ) -> dict[str, Any]:
        """The body in `box`, stored for packet `pid` with its wrapped data key.

        Raises:
            BodyUnavailable: the box does not open with this node's keys, or does
                not hold a JSON object.
        """
        try:
            body = cj_loads(self.open_bytes(pid, box, key))
        except EncodingError as exc:
            raise BodyUnavailable(pid) from exc
        if not isinstance(body, dict):
            raise BodyUnavailable(pid)
        return body
