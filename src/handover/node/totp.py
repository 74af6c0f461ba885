"""Time-based one-time passwords (RFC 6238: HMAC-SHA-1, 30-second steps, 6 digits)
for the web interface's optional second factor."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import urllib.parse

STEP_S = 30
DIGITS = 6
SECRET_BYTES = 20


def code_at(secret: bytes, unix_s: int) -> str:
    """The code valid during the 30-second step holding `unix_s` (RFC 4226 truncation)."""
    mac = hmac.new(secret, struct.pack(">Q", unix_s // STEP_S), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**DIGITS).zfill(DIGITS)


def check(secret: bytes, code: str, unix_s: int) -> bool:
    """Whether `code` is valid now or one step either side (clock drift)."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return False
    return any(
        hmac.compare_digest(code_at(secret, unix_s + drift * STEP_S), code) for drift in (-1, 0, 1)
    )


def otpauth_uri(secret: bytes, operator: str, issuer: str) -> str:
    """The `otpauth://totp/...` URI an authenticator app reads (often as a QR code)."""
    label = urllib.parse.quote(f"{issuer}:{operator}")
    query = urllib.parse.urlencode(
        {
            "secret": base64.b32encode(secret).decode("ascii").rstrip("="),
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_S,
        }
    )
    return f"otpauth://totp/{label}?{query}"
