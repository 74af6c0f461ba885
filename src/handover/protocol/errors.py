"""Errors raised by handover: the root of the tree and the protocol's own.

One root, a small tree; each layer adds its errors in its own ``errors``
module, so the protocol imports nothing above it::

    HandoverError                      (here: handover.protocol.errors)
    ├── InvalidPacket          receive path, steps 1-8: opaque to the peer, `.reason` local
    ├── InvalidReceipt         a receipt that fails verification on the sender
    ├── InvalidKeyset          a peer keyset that fails an acceptance rule of section 2
    ├── InvalidCheckpoint      a checkpoint that fails verification
    ├── EncodingError          CJ / b64u / wire-object parse failure (outside the receive path)
    ├── SchemaError            body validation (the BodyValidator contract)
    │   ├── UnknownSchema
    │   └── SchemaInvalid
    ├── Rejected               receive path, step 9: a signed `rejected` receipt is due
    ├── SealError              the sender cannot seal (no usable key, bad recipients, ...)
    ├── ConfigError            bad or missing configuration / key files
    ├── StoreError             handover.store.errors: database failures, translated there
    │   └── Conflict           a row that must be unique already exists
    ├── TransportError         handover.node.errors: a peer could not be reached
    └── RequestRefused         handover.workflow.errors: a request the node refuses,
        │                      with an ErrorCode that web/errors.py maps to HTTP
        └── BodyUnavailable    a stored body that cannot be decrypted (names the pid)

Messages name identifiers and field names, never personal data values.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Precise local reasons for an invalid packet (never sent to the peer)."""

    TOO_LARGE = "too_large"
    MALFORMED_WIRE = "malformed_wire"
    BAD_ENCODING = "bad_encoding"
    BAD_HEADER = "bad_header"
    REPLAY_CONFLICT = "replay_conflict"
    UNKNOWN_SENDER = "unknown_sender"
    UNKNOWN_SIGNING_KEY = "unknown_signing_key"
    KEY_NOT_VALID = "key_not_valid"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    BAD_LIFETIME = "bad_lifetime"
    NOT_A_RECIPIENT = "not_a_recipient"
    UNKNOWN_RECIPIENT_KEY = "unknown_recipient_key"
    CIPHERTEXT_MISMATCH = "ciphertext_mismatch"
    UNWRAP_FAILED = "unwrap_failed"
    KEY_COMMITMENT_MISMATCH = "key_commitment_mismatch"
    DECRYPT_FAILED = "decrypt_failed"
    BAD_PADDING = "bad_padding"
    BAD_PAYLOAD = "bad_payload"


class RejectCode(StrEnum):
    """Reason codes of a signed `rejected` receipt (docs/protocol.md section 4)."""

    UNKNOWN_SCHEMA = "unknown_schema"
    SCHEMA_INVALID = "schema_invalid"
    NOT_PERMITTED = "not_permitted"
    CONSENT_REQUIRED = "consent_required"


class HandoverError(Exception):
    """Root of every error handover raises on purpose."""


class InvalidPacket(HandoverError):
    """A packet failed a receive check of steps 1-8.

    `str()` is always the opaque wire code; `reason` and `detail` are for the
    local audit log and metrics only.
    """

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__("invalid_packet")
        self.reason = reason
        self.detail = detail

    def __repr__(self) -> str:
        return f"InvalidPacket({self.reason.value!r}, {self.detail!r})"


class InvalidReceipt(HandoverError):
    """A receipt failed verification (signature, signer, pid/pd, encoding)."""


class InvalidKeyset(HandoverError):
    """A keyset failed an acceptance rule of docs/protocol.md section 2."""


class InvalidCheckpoint(HandoverError):
    """A log checkpoint failed verification."""


class EncodingError(HandoverError):
    """Input is not canonical JSON / strict b64u / a strict wire object."""


class SchemaError(HandoverError):
    """A body does not fit a known schema."""


class UnknownSchema(SchemaError):
    """The schema id is not one this node knows."""


class SchemaInvalid(SchemaError):
    """The body does not validate; `paths` names the offending locations (no values)."""

    def __init__(self, message: str, paths: list[str] | None = None) -> None:
        super().__init__(message)
        self.paths = paths or []


class Rejected(HandoverError):
    """Step 9 failed: the receiver answers with a signed `rejected` receipt."""

    def __init__(self, code: RejectCode, detail: str = "") -> None:
        super().__init__(code.value)
        self.code = code
        self.detail = detail


class SealError(HandoverError):
    """The sender cannot seal this packet."""


class ConfigError(HandoverError):
    """Configuration or key material is missing or wrong."""
