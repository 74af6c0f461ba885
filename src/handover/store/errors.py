"""Errors of the store: asyncpg's exceptions never leave `handover.store`."""

from __future__ import annotations

from handover.protocol.errors import HandoverError


class StoreError(HandoverError):
    """A database operation failed (translated from asyncpg at the store boundary)."""


class Conflict(StoreError):
    """A row that must be unique already exists (a unique constraint held)."""


class InvalidValue(StoreError):
    """PostgreSQL cannot store a value it was given (a NUL character in text, a
    number out of range): the caller's input is wrong, the database is fine."""
