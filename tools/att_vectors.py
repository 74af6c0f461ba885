"""Known-answer vectors for attachments (docs/protocol.md section 8), used by make_vectors.py.

One file, `packet-attachments.json`: three attachment streams (an empty file,
a short text, and a file of 65,543 bytes so the stream has two chunks), the
packet that carries their `att` items, an upload ticket per attachment, and a
stream with one altered chunk that must be refused. Every header, key and
aid comes from the vectors' deterministic rand stream; the large file's
plaintext is the first 65,543 bytes of the rand stream labelled
"attachment-plaintext", so the file records its hash, not its bytes.

secretstream's header is normally drawn by libsodium's `init_push`; here it is
given (see `crypto.StreamSealer`), which yields exactly the stream `init_push`
would have produced had it drawn that header.
"""

from __future__ import annotations

from typing import Any

from handover.protocol import crypto
from handover.protocol.attachments import encrypt_bytes, make_ticket
from handover.protocol.auditchain import LogPosition
from handover.protocol.canonical import b64u_encode
from handover.protocol.packet import Recipient, _seal_at

LARGE_SIZE = 65_543


def attachments_vector(
    sender: Any, recipient: Any, *, now: int, ttl_ms: int, schema_id: str, body: dict[str, Any],
    stream_cls: Any, replay_cls: Any,
) -> dict[str, Any]:  # fmt: skip
    """`sender` and `recipient` are make_vectors.NodeMaterial; the classes its Stream/Replay."""
    stream = stream_cls("packet-attachments")
    large = stream_cls("attachment-plaintext")(LARGE_SIZE)
    files = [
        ("empty.txt", "text/plain", b"", True),
        ("licence-conditions.txt", "text/plain", b"Licence conditions: report weekly.\n", True),
        ("risk-assessment.pdf", "application/pdf", large, False),
    ]  # fmt: skip
    items, cases = [], []
    for name, media_type, data, inline in files:
        aid_bytes, key, header = stream(16), stream(32), stream(24)
        aid = b64u_encode(aid_bytes)
        item, c = encrypt_bytes(aid, key, data, name, media_type, header=header)
        items.append(item)
        case: dict[str, Any] = {
            "aid_bytes_hex": aid_bytes.hex(),
            "key_hex": key.hex(),
            "header_hex": header.hex(),
            "ad_hex": crypto.pae("hp1/attachment/v1", aid).hex(),
            "item": item.to_json(),
        }
        if inline:
            case["plaintext_b64u"] = b64u_encode(data)
            case["stream_b64u"] = b64u_encode(c)
        else:
            case["plaintext"] = {"rand_label": "attachment-plaintext", "bytes": LARGE_SIZE}
            case["plaintext_h64_hex"] = crypto.h64(data).hex()
            case["stream_chunk_2_b64u"] = b64u_encode(c[24 + 65_553 :])
        case["upload_ticket"] = make_ticket(
            sender.node, sender.identity.kid, sender.sig,
            to=recipient.node, aid=aid, alen=item.alen, ah=item.ah,
            iat=now, exp=now + ttl_ms,
        )  # fmt: skip
        cases.append(case)
    # A tampered copy of the short stream: one bit of the first chunk's ciphertext flipped.
    name, media_type, data, _inline = files[1]
    header = bytes.fromhex(cases[1]["header_hex"])
    _item, short = encrypt_bytes(items[1].aid, items[1].key, data, name, media_type, header=header)
    short_c = bytearray(short)
    short_c[24 + 5] ^= 0x01
    content_key, e, n, pid_bytes = stream(32), stream(32), stream(24), stream(16)
    sealed = _seal_at(
        now,
        replay_cls([content_key, e, n, pid_bytes]),
        sender.identity,
        [Recipient(recipient.node, recipient.box_kid, recipient.box.public_key)],
        schema_id,
        body,
        LogPosition.genesis(),
        ttl_ms,
        attachments=items,
    )
    return {
        "description": (
            "Attachments (section 8): three secretstream streams with their att items, "
            "the packet carrying them to one recipient, a signed upload ticket per "
            "attachment, and a tampered stream that must be refused."
        ),
        "now": now,
        "rand": stream.describe(),
        "chunk_bytes": 65_536,
        "sealed_chunk_bytes": 65_553,
        "sender": sender.describe(),
        "recipient": recipient.describe(),
        "attachments": cases,
        "packet": {
            "draws_hex": {
                "K": content_key.hex(),
                "e": e.hex(),
                "n": n.hex(),
                "pid": pid_bytes.hex(),
            },
            "wire": sealed.wire.decode("ascii"),
            "pd_b64u": b64u_encode(sealed.pd),
        },
        "tampered_stream": {
            "attachment": 1,
            "flipped_byte": 29,
            "stream_b64u": b64u_encode(bytes(short_c)),
            "expect": "refused: the first chunk does not authenticate",
        },
    }
