"""Errors of the node runtime."""

from __future__ import annotations

from handover.protocol.errors import HandoverError


class TransportError(HandoverError):
    """A peer could not be reached or answered outside the protocol."""
