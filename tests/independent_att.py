"""Attachments (docs/protocol.md section 8), implemented a second time, independently.

Imports nothing from `handover`. secretstream (XChaCha20-Poly1305, libsodium's
construction) is written out here in pure Python from ChaCha20, HChaCha20 and
Poly1305 as RFC 8439 and the XChaCha draft define them, so it checks the
package's use of libsodium rather than calling the same function twice. Only
small streams (the known-answer vectors) go through it; it is slow.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Iterator
from typing import Any

import independent_hp1 as ind

CHUNK = 65_536
SEALED = CHUNK + 17
TAG_MESSAGE = 0
TAG_FINAL = 3
MASK32 = 0xFFFFFFFF
TYPE_RE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# --- ChaCha20, HChaCha20, Poly1305 ------------------------------------------------------


def _rotl(v: int, c: int) -> int:
    return ((v << c) & MASK32) | (v >> (32 - c))


def _quarter(s: list[int], a: int, b: int, c: int, d: int) -> None:
    s[a] = (s[a] + s[b]) & MASK32
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & MASK32
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & MASK32
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & MASK32
    s[b] = _rotl(s[b] ^ s[c], 7)


def _rounds(state: list[int]) -> list[int]:
    s = list(state)
    for _ in range(10):
        _quarter(s, 0, 4, 8, 12)
        _quarter(s, 1, 5, 9, 13)
        _quarter(s, 2, 6, 10, 14)
        _quarter(s, 3, 7, 11, 15)
        _quarter(s, 0, 5, 10, 15)
        _quarter(s, 1, 6, 11, 12)
        _quarter(s, 2, 7, 8, 13)
        _quarter(s, 3, 4, 9, 14)
    return s


_SIGMA = list(struct.unpack("<4I", b"expand 32-byte k"))


def hchacha20(key: bytes, inp: bytes) -> bytes:
    s = _rounds(_SIGMA + list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", inp)))
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def chacha20_keystream(key: bytes, nonce12: bytes, counter: int, n: int) -> bytes:
    out = bytearray()
    k = list(struct.unpack("<8I", key))
    nn = list(struct.unpack("<3I", nonce12))
    while len(out) < n:
        state = _SIGMA + k + [counter & MASK32] + nn
        mixed = _rounds(state)
        out += struct.pack("<16I", *((x + y) & MASK32 for x, y in zip(mixed, state, strict=True)))
        counter += 1
    return bytes(out[:n])


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def poly1305(key: bytes, msg: bytes) -> bytes:
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key[16:], "little")
    p = (1 << 130) - 5
    acc = 0
    for i in range(0, len(msg), 16):
        acc = (acc + int.from_bytes(msg[i : i + 16] + b"\x01", "little")) * r % p
    return ((acc + s) % (1 << 128)).to_bytes(16, "little")


def _pad16(n: int) -> bytes:
    return bytes((16 - n % 16) % 16)


# --- secretstream_xchacha20poly1305 ---------------------------------------------------


class SecretStream:
    """One direction of libsodium's crypto_secretstream_xchacha20poly1305."""

    def __init__(self, key: bytes, header: bytes) -> None:
        assert len(key) == 32 and len(header) == 24
        self.k = hchacha20(key, header[:16])
        self.counter = 1
        self.inonce = header[16:24]

    def _nonce(self) -> bytes:
        return struct.pack("<I", self.counter) + self.inonce

    def _mac(self, ad: bytes, block: bytes, c: bytes) -> bytes:
        # libsodium pads the ciphertext with `(0x10 - sizeof block + mlen) & 0xf` zero
        # bytes, i.e. mlen % 16 (not the 16-byte alignment RFC 8439 uses); the stream
        # format is defined by that code, so an implementation must do the same.
        poly_key = chacha20_keystream(self.k, self._nonce(), 0, 32)
        data = (
            ad + _pad16(len(ad)) + block + c + bytes(len(c) % 16)
            + struct.pack("<Q", len(ad)) + struct.pack("<Q", 64 + len(c))
        )  # fmt: skip
        return poly1305(poly_key, data)

    def _advance(self, mac: bytes, tag: int) -> None:
        self.inonce = _xor(self.inonce, mac[:8])
        self.counter = (self.counter + 1) & MASK32
        if tag & 2 or self.counter == 0:
            raise NotImplementedError("rekeying is not needed for the vectors")

    def push(self, m: bytes, ad: bytes, tag: int) -> bytes:
        block = _xor(bytes([tag]) + bytes(63), chacha20_keystream(self.k, self._nonce(), 1, 64))
        c = _xor(m, chacha20_keystream(self.k, self._nonce(), 2, len(m)))
        mac = self._mac(ad, block, c)
        if not tag & 2:
            self._advance(mac, tag)
        return block[:1] + c + mac

    def pull(self, sealed: bytes, ad: bytes) -> tuple[bytes, int]:
        if len(sealed) < 17:
            raise ind.Refused("stream_damaged", "short chunk")
        ks = chacha20_keystream(self.k, self._nonce(), 1, 64)
        tag = sealed[0] ^ ks[0]
        block = sealed[:1] + ks[1:]
        c, mac = sealed[1:-16], sealed[-16:]
        if not hmac.compare_digest(self._mac(ad, block, c), mac):
            raise ind.Refused("stream_damaged", "chunk does not authenticate")
        m = _xor(c, chacha20_keystream(self.k, self._nonce(), 2, len(c)))
        if not tag & 2:
            self._advance(mac, tag)
        return m, tag


# --- section 8 -------------------------------------------------------------------------


def ad_for(aid: str) -> bytes:
    return ind.pae("hp1/attachment/v1", aid)


def stream_length(size: int) -> int:
    return 24 + size + 17 * max(1, -(-size // CHUNK))


def encrypt(aid: str, key: bytes, header: bytes, data: bytes) -> bytes:
    st = SecretStream(key, header)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
    out = [header]
    for j, chunk in enumerate(chunks):
        out.append(st.push(chunk, ad_for(aid), TAG_FINAL if j == len(chunks) - 1 else TAG_MESSAGE))
    return b"".join(out)


def _sealed_chunks(c: bytes) -> Iterator[bytes]:
    for i in range(24, len(c), SEALED):
        yield c[i : i + SEALED]


def check_item(raw: Any) -> dict[str, Any]:
    """An `att` item by the rules of section 8 step 3."""
    if type(raw) is not dict or set(raw) != {"aid", "name", "type", "size", "key", "alen", "ah"}:
        raise ind.Refused("bad_item", "members")
    ind.unb64u(raw["aid"], 16)
    ind.unb64u(raw["key"], 32)
    ind.unb64u(raw["ah"], 64)
    name = raw["name"]
    if type(name) is not str or not 1 <= len(name) <= 255 or re.search(r"[/\\]", name):
        raise ind.Refused("bad_item", "name")
    if CONTROL_RE.search(name):
        raise ind.Refused("bad_item", "name")
    if type(raw["type"]) is not str or len(raw["type"]) > 127 or not TYPE_RE.fullmatch(raw["type"]):
        raise ind.Refused("bad_item", "type")
    if not ind.is_int(raw["size"]) or not 0 <= raw["size"] <= 2**40:
        raise ind.Refused("bad_item", "size")
    if not ind.is_int(raw["alen"]) or raw["alen"] != stream_length(raw["size"]):
        raise ind.Refused("bad_item", "alen")
    return raw


def decrypt(item: dict[str, Any], c: bytes) -> bytes:
    """Check length and hash, then every chunk; only the last is TAG_FINAL."""
    if len(c) != item["alen"] or not hmac.compare_digest(
        hashlib.blake2b(c, digest_size=64).digest(), ind.unb64u(item["ah"], 64)
    ):
        raise ind.Refused("stream_damaged", "alen or ah")
    st = SecretStream(ind.unb64u(item["key"], 32), c[:24])
    chunks = list(_sealed_chunks(c))
    out = []
    for j, sealed in enumerate(chunks):
        m, tag = st.pull(sealed, ad_for(item["aid"]))
        if tag != (TAG_FINAL if j == len(chunks) - 1 else TAG_MESSAGE):
            raise ind.Refused("stream_damaged", "tag")
        out.append(m)
    data = b"".join(out)
    if len(data) != item["size"]:
        raise ind.Refused("stream_damaged", "size")
    return data


def verify_ticket(
    header: str, *, sender_keyset: Any, me: str, aid: str, now: int
) -> dict[str, Any]:
    """An upload ticket by the rules of section 8 (local limits aside)."""
    ut_text, sig_text = header.split(".")
    ut = ind.unb64u(ut_text)
    sig = ind.unb64u(sig_text, 64)
    t = ind.cj_parse(ut)
    members = {"typ", "v", "from", "to", "aid", "alen", "ah", "iat", "exp"}
    if type(t) is not dict or set(t) != members or t["typ"] != "hp1.upload" or t["v"] != 1:
        raise ind.Refused("bad_ticket", "members")
    if set(t["from"]) != {"node", "kid"} or t["from"]["node"] != sender_keyset.node:
        raise ind.Refused("bad_ticket", "from")
    key = sender_keyset.keys.get(t["from"]["kid"])
    if key is None or key.type != "ed25519-sig" or not key.verifies_at(t["iat"]):
        raise ind.Refused("bad_ticket", "kid")
    if not ind.verify(key.pk, ind.pae("hp1/upload/v1", ut), sig):
        raise ind.Refused("bad_ticket", "signature")
    if t["iat"] > now + ind.SKEW or now > t["exp"] or t["exp"] - t["iat"] > ind.MAX_TTL:
        raise ind.Refused("bad_ticket", "times")
    if t["to"] != me or t["aid"] != aid or t["alen"] < 41:
        raise ind.Refused("bad_ticket", "to/aid/alen")
    return t
