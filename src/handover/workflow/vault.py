"""The stored-body vault: the only code that encrypts or decrypts bodies at rest.

Bodies are kept as canonical JSON sealed with the node's storage key
(`keys/storage.key`, secretbox). One failure policy everywhere: a box that
does not open, or does not hold a JSON object, raises :class:`BodyUnavailable`
naming the packet; no caller ever goes on with an empty body.
"""

from __future__ import annotations

from typing import Any

from handover.protocol import crypto
from handover.protocol.canonical import cj_dumps, cj_loads
from handover.protocol.errors import EncodingError
from handover.workflow.errors import BodyUnavailable


class Vault:
    def __init__(self, storage_key: bytes) -> None:
        self._key = storage_key

    def seal(self, body_cj: bytes) -> bytes:
        """A box for a body already encoded as canonical JSON."""
        return crypto.seal_at_rest(self._key, body_cj)

    def seal_body(self, body: dict[str, Any]) -> bytes:
        return self.seal(cj_dumps(body))

    def open(self, pid: str, box: bytes | memoryview) -> dict[str, Any]:
        """The body in `box`, stored for packet `pid`.

        Raises:
            BodyUnavailable: the box does not open with this node's storage key,
                or does not hold a JSON object.
        """
        try:
            body = cj_loads(crypto.open_at_rest(self._key, bytes(box)))
        except (crypto.CryptoFailure, EncodingError) as exc:
            raise BodyUnavailable(pid) from exc
        if not isinstance(body, dict):
            raise BodyUnavailable(pid)
        return body
