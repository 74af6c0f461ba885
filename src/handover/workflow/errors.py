"""The API error codes and the exceptions the node raises for a refused request.

Code below `web/` raises :class:`RequestRefused` with an :class:`ErrorCode`
and a message for the person; it never chooses an HTTP status. The one place
that maps codes to statuses is `handover.web.errors`; `schemas/openapi.yaml`
documents the same codes (a test holds the two together).
"""

from __future__ import annotations

from enum import StrEnum

from handover.protocol.errors import HandoverError


class ErrorCode(StrEnum):
    """Stable error codes of the local and federation APIs (the `error` field)."""

    BAD_REQUEST = "bad_request"
    """The request is malformed: a missing or wrongly typed parameter or field."""
    JUSTIFICATION_REQUIRED = "justification_required"
    """Reading or changing personal data needs a justification."""
    JUSTIFICATION_TOO_LONG = "justification_too_long"
    """A justification is over 1,000 characters."""
    JUSTIFICATION_TOO_WEAK = "justification_too_weak"
    """A justification under 10 characters or 2 words (Art 25: it must say why)."""
    UNKNOWN_PURPOSE = "unknown_purpose"
    """A justification begins with a purpose code that is not in the policy's list."""
    REASON_REQUIRED = "reason_required"
    """This review outcome needs a reason."""
    UNAUTHORIZED = "unauthorized"
    """No bearer token, or not a valid one."""
    FORBIDDEN = "forbidden"
    """The operator's role may not do this."""
    CLIENT_CERTIFICATE_REQUIRED = "client_certificate_required"
    """Federation: this node takes packets only over mutual TLS with a client certificate."""
    RESTRICTED = "restricted"
    """The item is restricted (Art 16(3)): only an admin may lift it."""
    NOT_FOUND = "not_found"
    """No such packet, case, review or route."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    """The route exists but not with this HTTP method."""
    CONFLICT = "conflict"
    """The request conflicts with what is stored (for example a taken local id)."""
    NOT_RESTRICTED = "not_restricted"
    """Lifting a restriction of an item that is not restricted."""
    RESTRICTED_BY_ORIGINATOR = "restricted_by_originator"
    """The originator restricted this copy by its notice: only its notice lifts it."""
    SECOND_ADMIN_REQUIRED = "second_admin_required"
    """A proposal must be approved by an admin other than the one who made it."""
    EXTENSION_TOO_LONG = "extension_too_long"
    """EXTEND would move the review beyond the policy's retention period."""
    DELIVERY_PENDING = "delivery_pending"
    """A delivery of the packet is still pending; wait for it to finish."""
    ATTACHMENT_INCOMPLETE = "attachment_incomplete"
    """Federation: an attachment of the packet has no complete upload here yet (the
    answer names its `aid`); upload it and post the packet again."""
    ATTACHMENT_HASH = "attachment_hash"
    """Federation: a completed upload does not match the ticket's hash; it was discarded."""
    SCAN_PENDING = "scan_pending"
    """A received attachment waits for the node's scan before it may be read."""
    QUARANTINED = "quarantined"
    """The node's scan found a received attachment unsafe; it is not given out."""
    OFFSET_MISMATCH = "offset_mismatch"
    """Federation: an upload's `Upload-Offset` is not the stored offset (given in the answer)."""
    AMBIGUOUS = "ambiguous"
    """The pid names more than one held packet: say which direction and sender."""
    ERASED = "erased"
    """The content was erased; only its metadata is held."""
    TOO_LARGE = "too_large"
    """The request body is over the limit."""
    REQUEST_TIMEOUT = "request_timeout"
    """The request body arrived too slowly; the connection is closed."""
    TOO_MANY_REQUESTS = "too_many_requests"
    """Too many requests from one address or sender at once or in a short time."""
    BUSY = "busy"
    """The node is working at its memory limit; try again shortly."""
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    """The request's content type is not one this route takes."""
    UNKNOWN_SCHEMA = "unknown_schema"
    """The packet schema is not one this node knows."""
    SCHEMA_INVALID = "schema_invalid"
    """The body does not validate against its schema (paths name where)."""
    NOT_PERMITTED = "not_permitted"
    """The sharing policy does not allow this (names the field or recipient)."""
    CONSENT_REQUIRED = "consent_required"
    """The sharing policy allows this only with a consent that is not in force."""
    UNKNOWN_RECIPIENT = "unknown_recipient"
    """A recipient that is not a pinned peer with a valid keyset."""
    RECIPIENT_IS_SELF = "recipient_is_self"
    """A recipient is this node itself: packets go to other agencies' nodes."""
    INVALID_PACKET = "invalid_packet"
    """Federation: the packet failed a receive check (the reason stays local)."""
    INVALID_BATCH = "invalid_batch"
    """Federation: not `{"packets": [...]}` with 1 to 256 objects."""
    PAIRING_FAILED = "pairing_failed"
    """Federation, pairing: the key confirmation or an offer did not check out
    (a wrong code, a relay, or a partner of another kind); nothing was pinned."""
    INVITATION_ENDED = "invitation_ended"
    """Federation, pairing: no open invitation has that number (never made,
    expired after its hour, used once, or ended after three failed attempts)."""
    BODY_UNAVAILABLE = "body_unavailable"
    """A stored body could not be decrypted (storage key missing or wrong)."""
    ON_BEHALF_OF_REQUIRED = "on_behalf_of_required"
    """A `system` operator reads bodies and sends only for a named member of staff:
    add the header `Handover-On-Behalf-Of: STAFF-ID`."""
    ON_BEHALF_OF_INVALID = "on_behalf_of_invalid"
    """`Handover-On-Behalf-Of` is not a staff id (1 to 64 of `A-Z a-z 0-9 . _ -`,
    starting with a letter or digit)."""
    CURSOR_EXPIRED = "cursor_expired"
    """Events after this cursor were deleted by retention: read the current state,
    then follow the feed again without a cursor."""
    UNAVAILABLE = "unavailable"
    """The database is unavailable; try again later."""
    INTERNAL_ERROR = "internal_error"
    """An unexpected failure; the traceback is in the node's log, never in the answer."""


class RequestRefused(HandoverError):
    """The node refuses a request: a stable code plus a message for the person.

    The message names identifiers and field names, never personal data values.
    `paths` optionally lists JSON Pointers of offending body fields.
    """

    def __init__(self, code: ErrorCode, message: str, paths: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.paths = paths or []


class BodyUnavailable(RequestRefused):
    """A stored body (or wire) could not be decrypted with the storage key.

    Always names the packet; never answered with an empty body instead.
    """

    def __init__(self, pid: str) -> None:
        super().__init__(
            ErrorCode.BODY_UNAVAILABLE,
            f"the stored content of packet {pid} cannot be decrypted with this node's storage"
            " key (keys/storage.key missing or replaced?)",
        )
        self.pid = pid
