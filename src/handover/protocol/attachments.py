"""hp1 attachments (docs/protocol.md section 8): streams, descriptors, upload tickets.

A file is encrypted with secretstream (XChaCha20-Poly1305) in 64 KiB chunks
under its own key `AK`; the stream `C = H || c_1 || ... || c_m` is described
by an `att` item inside the packet's encrypted inner payload and uploaded to
each recipient beforehand under a signed upload ticket.

Everything here works on pieces, so no caller ever holds a whole file:
:class:`StreamEncryptor` and :class:`StreamDecryptor` take bytes as they come
and give back what can be given; the hash `ah = H64(C)` is computed on the way.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from typing import Any

from handover.protocol import crypto
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps, cj_loads
from handover.protocol.errors import EncodingError, HandoverError
from handover.protocol.keyset import Keyset, is_int, is_node_id
from handover.protocol.timeutil import SKEW_MS

ATTACHMENT_LABEL = "hp1/attachment/v1"
UPLOAD_LABEL = "hp1/upload/v1"
CHUNK_BYTES = 65_536
SEALED_CHUNK_BYTES = CHUNK_BYTES + crypto.STREAM_ABYTES  # 65,553
HEADER_BYTES = crypto.STREAM_HEADER_BYTES  # 24
MIN_STREAM_BYTES = HEADER_BYTES + crypto.STREAM_ABYTES  # 41: an empty file
MAX_ATTACHMENTS = 16
MAX_SIZE = 2**40
MAX_NAME_CHARS = 255
MAX_TYPE_CHARS = 127
MAX_TICKET_DAYS_MS = 30 * 24 * 60 * 60 * 1000
MAX_TICKET_HEADER_CHARS = 4096
DEFAULT_TYPE = "application/octet-stream"
ITEM_MEMBERS = frozenset({"aid", "name", "type", "size", "key", "alen", "ah"})
TICKET_MEMBERS = frozenset({"typ", "v", "from", "to", "aid", "alen", "ah", "iat", "exp"})

_TYPE_CHARS = r"[A-Za-z0-9!#$&^_.+-]+"
_TYPE_RE = re.compile(rf"{_TYPE_CHARS}/{_TYPE_CHARS}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class AttachmentError(HandoverError):
    """An attachment item, stream or ticket fails a rule of section 8.

    `reason` is a short fixed code for logs and metrics; messages name fields only.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def stream_length(size: int) -> int:
    """len(C) = 24 + size + 17 * m with m = max(1, ceil(size / 65536))."""
    chunks = max(1, -(-size // CHUNK_BYTES))
    return HEADER_BYTES + size + crypto.STREAM_ABYTES * chunks


def new_aid() -> str:
    return b64u_encode(crypto.random_bytes(16))


def associated_data(aid: str) -> bytes:
    return crypto.pae(ATTACHMENT_LABEL, aid)


def name_ok(name: object) -> bool:
    """1 to 255 characters, no `/`, `\\` or control characters."""
    return (
        isinstance(name, str)
        and 1 <= len(name) <= MAX_NAME_CHARS
        and "/" not in name
        and "\\" not in name
        and not _CONTROL_RE.search(name)
    )


def type_ok(media_type: object) -> bool:
    """1 to 127 characters of `[A-Za-z0-9!#$&^_.+-]` around one `/` (no parameters)."""
    return (
        isinstance(media_type, str)
        and len(media_type) <= MAX_TYPE_CHARS
        and bool(_TYPE_RE.fullmatch(media_type))
    )


def media_type_for(filename: str) -> str:
    """The media type from a file name, else application/octet-stream."""
    guessed, _encoding = mimetypes.guess_type(filename, strict=False)
    return guessed if guessed and type_ok(guessed) else DEFAULT_TYPE


def _b64_exact(value: object, length: int) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return b64u_decode(value, length)
    except EncodingError:
        return None


@dataclass(frozen=True)
class AttachmentItem:
    """One `att` item of an inner payload."""

    aid: str
    name: str
    type: str
    size: int
    key: bytes
    alen: int
    ah: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "aid": self.aid,
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "key": b64u_encode(self.key),
            "alen": self.alen,
            "ah": b64u_encode(self.ah),
        }

    @classmethod
    def from_json(cls, raw: object) -> AttachmentItem:
        """Strict: exactly the members, types, lengths and `alen` matching `size`.

        Raises:
            AttachmentError: "bad_item".
        """
        if not isinstance(raw, dict) or set(raw) != ITEM_MEMBERS:
            raise AttachmentError("bad_item", "members")
        if _b64_exact(raw["aid"], 16) is None:
            raise AttachmentError("bad_item", "aid")
        if not name_ok(raw["name"]):
            raise AttachmentError("bad_item", "name")
        if not type_ok(raw["type"]):
            raise AttachmentError("bad_item", "type")
        size = raw["size"]
        if not is_int(size) or not 0 <= size <= MAX_SIZE:
            raise AttachmentError("bad_item", "size")
        key = _b64_exact(raw["key"], crypto.STREAM_KEY_BYTES)
        ah = _b64_exact(raw["ah"], 64)
        if key is None or ah is None:
            raise AttachmentError("bad_item", "key/ah")
        if not is_int(raw["alen"]) or raw["alen"] != stream_length(size):
            raise AttachmentError("bad_item", "alen")
        return cls(raw["aid"], raw["name"], raw["type"], size, key, raw["alen"], ah)


def parse_att(raw: object) -> tuple[AttachmentItem, ...]:
    """The `att` member: 1 to 16 items with distinct aids.

    Raises:
        AttachmentError: "bad_item".
    """
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_ATTACHMENTS:
        raise AttachmentError("bad_item", "att count")
    items = tuple(AttachmentItem.from_json(item) for item in raw)
    if len({item.aid for item in items}) != len(items):
        raise AttachmentError("bad_item", "aids not distinct")
    return items


class StreamEncryptor:
    """Encrypt a file as it arrives: `update(data)` and `finish()` return stream bytes.

    The first bytes returned are the 24-byte header. A chunk is sealed once it
    is known not to be the last, so the last chunk (1 to 65,536 bytes, or the
    one empty chunk of an empty file) carries TAG_FINAL.
    """

    def __init__(self, aid: str, key: bytes, *, header: bytes | None = None) -> None:
        self.aid = aid
        self.key = key
        self._sealer = crypto.StreamSealer(key, header)
        self._ad = associated_data(aid)
        self._pending = bytearray()
        self._hash = crypto.h64_hasher()
        self._hash.update(self._sealer.header)
        self._started = False
        self._finished = False
        self.size = 0
        self.alen = HEADER_BYTES

    def _emit(self, sealed: bytes) -> bytes:
        self._hash.update(sealed)
        self.alen += len(sealed)
        return sealed

    def update(self, data: bytes) -> bytes:
        if self._finished:
            raise AttachmentError("finished", "stream already finished")
        out = bytearray()
        if not self._started:
            self._started = True
            out += self._sealer.header
        self.size += len(data)
        self._pending += data
        while len(self._pending) > CHUNK_BYTES:
            chunk = bytes(self._pending[:CHUNK_BYTES])
            del self._pending[:CHUNK_BYTES]
            out += self._emit(self._sealer.push(chunk, self._ad))
        return bytes(out)

    def finish(self) -> bytes:
        out = self.update(b"")
        self._finished = True
        last = self._emit(self._sealer.push(bytes(self._pending), self._ad, final=True))
        self._pending.clear()
        return out + last

    def item(self, name: str, media_type: str) -> AttachmentItem:
        """The `att` item, once finished."""
        if not self._finished:
            raise AttachmentError("unfinished", "stream not finished")
        if not name_ok(name) or not type_ok(media_type):
            raise AttachmentError("bad_item", "name/type")
        return AttachmentItem(
            self.aid, name, media_type, self.size, self.key, self.alen, self._hash.digest()
        )


class StreamDecryptor:
    """Check and decrypt a stream as it arrives (section 8, "Reading an attachment").

    Every chunk must authenticate with the aid's associated data; only the last
    may carry TAG_FINAL (the others TAG_MESSAGE), and nothing may follow it.
    `update` returns plaintext of chunks known not to be last; `finish` the
    rest. Callers that must give out nothing of a damaged stream write to a
    temporary place and keep it only when `finish` succeeds.

    Raises (from update / finish):
        AttachmentError: "stream_damaged".
    """

    def __init__(self, item: AttachmentItem) -> None:
        self.item = item
        self._ad = associated_data(item.aid)
        self._opener: crypto.StreamOpener | None = None
        self._buffer = bytearray()
        self._hash = crypto.h64_hasher()
        self._seen = 0
        self._plain = 0
        self._done = False

    def _damaged(self, detail: str) -> AttachmentError:
        self._done = True
        return AttachmentError("stream_damaged", detail)

    def _pull(self, sealed: bytes, last: bool) -> bytes:
        assert self._opener is not None
        try:
            message, tag = self._opener.pull_tagged(sealed, self._ad)
        except crypto.CryptoFailure as exc:
            raise self._damaged("a chunk does not authenticate") from exc
        expected = crypto.STREAM_TAG_FINAL if last else crypto.STREAM_TAG_MESSAGE
        if tag != expected:
            raise self._damaged("a chunk carries the wrong tag")
        self._plain += len(message)
        return message

    def update(self, data: bytes) -> bytes:
        if self._done:
            raise self._damaged("bytes after the end")
        self._seen += len(data)
        if self._seen > self.item.alen:
            raise self._damaged("longer than alen")
        self._hash.update(data)
        self._buffer += data
        out = bytearray()
        if self._opener is None:
            if len(self._buffer) < HEADER_BYTES:
                return b""
            header = bytes(self._buffer[:HEADER_BYTES])
            del self._buffer[:HEADER_BYTES]
            try:
                self._opener = crypto.StreamOpener(self.item.key, header)
            except crypto.CryptoFailure as exc:
                raise self._damaged("header") from exc
        while len(self._buffer) > SEALED_CHUNK_BYTES:
            chunk = bytes(self._buffer[:SEALED_CHUNK_BYTES])
            del self._buffer[:SEALED_CHUNK_BYTES]
            out += self._pull(chunk, last=False)
        return bytes(out)

    def finish(self) -> bytes:
        out = self.update(b"")
        self._done = True
        if self._opener is None or not len(self._buffer) >= crypto.STREAM_ABYTES:
            raise AttachmentError("stream_damaged", "truncated")
        last = self._pull(bytes(self._buffer), last=True)
        self._buffer.clear()
        if self._seen != self.item.alen:
            raise AttachmentError("stream_damaged", "length differs from alen")
        if not crypto.constant_time_equal(self._hash.digest(), self.item.ah):
            raise AttachmentError("stream_damaged", "hash differs from ah")
        if self._plain != self.item.size:
            raise AttachmentError("stream_damaged", "size differs")
        return out + last


def encrypt_bytes(
    aid: str, key: bytes, data: bytes, name: str, media_type: str, *, header: bytes | None = None
) -> tuple[AttachmentItem, bytes]:
    """A whole (small) file at once: for tests, vectors and offline tools."""
    enc = StreamEncryptor(aid, key, header=header)
    stream = enc.update(data) + enc.finish()
    return enc.item(name, media_type), stream


def decrypt_bytes(item: AttachmentItem, stream: bytes) -> bytes:
    """A whole (small) stream at once.

    Raises:
        AttachmentError: "stream_damaged".
    """
    dec = StreamDecryptor(item)
    return dec.update(stream) + dec.finish()


# --- upload tickets -------------------------------------------------------------


@dataclass(frozen=True)
class Ticket:
    """A verified (or, from :func:`parse_ticket`, merely well-formed) upload ticket."""

    sender: str
    kid: str
    to: str
    aid: str
    alen: int
    ah: bytes
    iat: int
    exp: int
    ut: bytes
    sig: bytes


def make_ticket(
    signer_node: str,
    signer_kid: str,
    key: crypto.SigningKey,
    *,
    to: str,
    aid: str,
    alen: int,
    ah: bytes,
    iat: int,
    exp: int,
) -> str:
    """The `Handover-Upload` header value: b64u(UT).b64u(sig)."""
    ut = cj_dumps(
        {
            "typ": "hp1.upload",
            "v": 1,
            "from": {"node": signer_node, "kid": signer_kid},
            "to": to,
            "aid": aid,
            "alen": alen,
            "ah": b64u_encode(ah),
            "iat": iat,
            "exp": exp,
        }
    )
    sig = key.sign(crypto.pae(UPLOAD_LABEL, ut))
    return f"{b64u_encode(ut)}.{b64u_encode(sig)}"


def parse_ticket(header: str | None) -> Ticket:
    """CJ, exactly the members, `typ`, `v`, types; the signature is NOT checked.

    Raises:
        AttachmentError: "bad_ticket".
    """
    if not header or len(header) > MAX_TICKET_HEADER_CHARS or header.count(".") != 1:
        raise AttachmentError("bad_ticket", "missing or malformed header")
    ut_text, sig_text = header.split(".")
    try:
        ut = b64u_decode(ut_text)
        sig = b64u_decode(sig_text, 64)
        raw = cj_loads(ut)
    except EncodingError as exc:
        raise AttachmentError("bad_ticket", "encoding") from exc
    if not isinstance(raw, dict) or set(raw) != TICKET_MEMBERS:
        raise AttachmentError("bad_ticket", "members")
    frm = raw["from"]
    if raw["typ"] != "hp1.upload" or not is_int(raw["v"]) or raw["v"] != 1:
        raise AttachmentError("bad_ticket", "typ/v")
    if not isinstance(frm, dict) or set(frm) != {"node", "kid"}:
        raise AttachmentError("bad_ticket", "from members")
    if not is_node_id(frm["node"]) or _b64_exact(frm["kid"], 16) is None:
        raise AttachmentError("bad_ticket", "from node/kid")
    if not is_node_id(raw["to"]) or _b64_exact(raw["aid"], 16) is None:
        raise AttachmentError("bad_ticket", "to/aid")
    ah = _b64_exact(raw["ah"], 64)
    if ah is None or not is_int(raw["alen"]) or not all(is_int(raw[k]) for k in ("iat", "exp")):
        raise AttachmentError("bad_ticket", "alen/ah/iat/exp")
    return Ticket(
        frm["node"], frm["kid"], raw["to"], raw["aid"], raw["alen"], ah,
        raw["iat"], raw["exp"], ut, sig,
    )  # fmt: skip


def verify_ticket(
    ticket: Ticket, *, keyset: Keyset | None, node: str, aid: str, now: int
) -> Ticket:
    """Every ticket rule of section 8 but the local limits (`alen` within this
    node's limit and the sender's quota, which the caller checks next).

    Raises:
        AttachmentError: "bad_ticket" (answer 401).
    """
    if keyset is None or keyset.node != ticket.sender:
        raise AttachmentError("bad_ticket", "sender is not a pinned peer")
    entry = keyset.key(ticket.kid)
    if entry is None or entry.type != "ed25519-sig" or not entry.verifies_at(ticket.iat):
        raise AttachmentError("bad_ticket", "from.kid is not a valid signing key")
    if not crypto.ed25519_verify(entry.public_key, crypto.pae(UPLOAD_LABEL, ticket.ut), ticket.sig):
        raise AttachmentError("bad_ticket", "signature does not verify")
    if ticket.iat > now + SKEW_MS or now > ticket.exp:
        raise AttachmentError("bad_ticket", "not valid now")
    if ticket.exp - ticket.iat > MAX_TICKET_DAYS_MS:
        raise AttachmentError("bad_ticket", "lifetime over 30 days")
    if ticket.to != node or ticket.aid != aid:
        raise AttachmentError("bad_ticket", "to/aid do not match")
    if ticket.alen < MIN_STREAM_BYTES:
        raise AttachmentError("bad_ticket", "alen below 41")
    return ticket
