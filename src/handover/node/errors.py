"""Errors of the node runtime."""

from __future__ import annotations

from handover.protocol.errors import HandoverError


class TransportError(HandoverError):
    """A peer could not be reached or answered outside the protocol."""


class PairingRefused(HandoverError):
    """The inviting node answered a pairing message with an error (its code and message)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
