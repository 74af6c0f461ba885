"""`handover` tools that need no node: keys init, packet seal|open|verify, schemas.

For operators and auditors without a running node: hp1 packets sealed,
opened and checked from key directories and keyset files, and the packet
schemas with their examples.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from handover.cli import offline_attach
from handover.cli.args import Commands
from handover.cli.output import CliError, emit, emit_json, warn
from handover.node import keystore
from handover.protocol.canonical import b64u_decode, b64u_encode, strict_json_loads
from handover.protocol.errors import (
    ConfigError,
    HandoverError,
    InvalidKeyset,
    InvalidPacket,
    UnknownSchema,
)
from handover.protocol.keyset import Keyset, accept_keyset, parse_keyset
from handover.protocol.opening import (
    Opened,
    StoredReplay,
    check_times,
    open_packet,
    parse_packet,
    verify_signature,
)
from handover.protocol.packet import Recipient, seal
from handover.protocol.timeutil import DAY_MS, now_ms
from handover.workflow.access import require_justification
from handover.workflow.schemas import default_registry


def read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc


def load_peer_keyset(path: str, fingerprint: str | None, now: int) -> Keyset:
    """Accept a keyset file; without a fingerprint, trust its own root and say so."""
    wire = read_file(path)
    try:
        node = parse_keyset(wire).node
        keyset = accept_keyset(wire, node=node, fingerprint=fingerprint, now=now)
    except InvalidKeyset as exc:
        raise CliError(f"keyset {path} refused: {exc}") from exc
    if fingerprint is None:
        warn(
            f"no --fingerprint given: trusting the root key in {path} "
            f"(fingerprint {keyset.fingerprint}); compare it out of band"
        )
    return keyset


# --- keys --------------------------------------------------------------------


def cmd_keys_init(args: argparse.Namespace) -> int:
    keys = keystore.init_keys(Path(args.dir), args.node, now_ms())
    emit(
        {
            "node": keys.node,
            "fingerprint": keys.fingerprint,
            "keyset": str(keys.directory / keystore.KEYSET_FILE),
        }
    )
    return 0


# --- packet ------------------------------------------------------------------


def cmd_packet_seal(args: argparse.Namespace) -> int:
    now = now_ms()
    keys = keystore.load_keys(Path(args.keys))
    recipients = [Recipient.from_keyset(load_peer_keyset(p, None, now), now) for p in args.to]
    try:
        body = strict_json_loads(read_file(args.body))
    except HandoverError as exc:
        raise CliError(f"body {args.body} is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise CliError(f"body {args.body} must be a JSON object")
    if args.attach and not args.out:
        raise CliError("--attach needs --out DIR (the packet and its AID.att streams go there)")
    out = Path(args.out) if args.out else None
    items = offline_attach.encrypt_files(args.attach or [], out) if out is not None else []
    sealed = seal(
        keys.identity(),
        recipients,
        args.schema,
        body,
        ttl_ms=args.ttl_days * DAY_MS,
        now=now,
        validator=default_registry(),
        attachments=items,
    )
    if out is None:
        sys.stdout.buffer.write(sealed.wire + b"\n")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "packet.json").write_bytes(sealed.wire + b"\n")
    emit(
        {
            "pid": sealed.pid,
            "packet": str(out / "packet.json"),
            "attachments": offline_attach.describe(tuple(items)),
        }
    )
    return 0


class ReplayFile:
    """Offline replay state: (sender, pid) -> pd in DIR/replay.json, so a
    replayed pid with other content is refused by `packet open` too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[str, str] = {}
        if path.exists():
            self.seen = json.loads(path.read_text("utf-8"))

    @staticmethod
    def _key(sender: str, pid: str) -> str:
        return f"{sender} {pid}"

    def lookup(self, sender: str, pid: str) -> StoredReplay | None:
        pd = self.seen.get(self._key(sender, pid))
        return None if pd is None else StoredReplay(b64u_decode(pd), b"")

    def record(self, sender: str, pid: str, pd: bytes) -> None:
        self.seen[self._key(sender, pid)] = b64u_encode(pd)
        keystore.write_private(self.path, json.dumps(self.seen, sort_keys=True).encode())


def cmd_packet_open(args: argparse.Namespace) -> int:
    now = now_ms()
    if args.dir is not None and args.justification is None:
        raise CliError("with --dir, give --justification: the opening is logged (Art 25)")
    if args.dir is None and args.keys is None:
        raise CliError("give --keys (a key directory) or --dir (a node directory)")
    if args.justification is not None:
        require_justification(args.justification)
    keys = keystore.load_keys(Path(args.keys) if args.keys else Path(args.dir) / "keys")
    sender = load_peer_keyset(args.sender, args.fingerprint, now)
    replay = ReplayFile(keys.directory / "replay.json")
    wire = read_file(args.packet).rstrip(b"\r\n")
    try:
        result = open_packet(
            wire,
            receiver=keys.receiver_keys(),
            peer_keyset={sender.node: sender}.get,
            now=now,
            replay=replay.lookup,
            validator=default_registry(),
        )
        replayed = not isinstance(result, Opened)
        if replayed:
            # Identical replay (same HB and SIG): open again to print the same result (no
            # receipt offline). The ct may still differ, so this can fail like a first open.
            result = open_packet(
                wire,
                receiver=keys.receiver_keys(),
                peer_keyset={sender.node: sender}.get,
                now=now,
                validator=default_registry(),
            )
    except InvalidPacket as exc:
        raise CliError(f"invalid packet: {exc.reason.value} ({exc.detail})") from exc
    assert isinstance(result, Opened)
    if replayed:
        warn(f"packet {result.pid} from {result.sender} was opened before (identical replay)")
    else:
        replay.record(result.sender, result.pid, result.pd)
    if result.rejection is not None:
        raise CliError(
            f"packet rejected: {result.rejection.code.value} ({result.rejection.detail})"
        )
    if bool(args.attachments) != bool(args.save):
        raise CliError("--attachments DIR and --save OUTDIR go together")
    output: dict[str, Any] = {
        "schema": result.schema,
        "body": result.body,
        "log": result.log.to_json(),
    }
    if args.dir is not None:
        from handover.cli.legal import record_offline_open

        # The node's audit log gets a `consultation` entry before the body is shown.
        record_offline_open(
            Path(args.dir).resolve(),
            pid=result.pid,
            sender=result.sender,
            schema=result.schema,
            fields=sorted(result.body),
            justification=args.justification,
        )
    if result.attachments:
        output["attachments"] = (
            offline_attach.open_streams(result.attachments, Path(args.attachments), Path(args.save))
            if args.save
            else offline_attach.describe(result.attachments)
        )
    emit_json(output)
    return 0


def cmd_packet_verify(args: argparse.Namespace) -> int:
    now = now_ms()
    sender = load_peer_keyset(args.sender, args.fingerprint, now)
    wire = read_file(args.packet).rstrip(b"\r\n")
    try:
        packet = parse_packet(wire)
        verify_signature(packet, sender if packet.sender == sender.node else None)
    except InvalidPacket as exc:
        raise CliError(f"invalid packet: {exc.reason.value} ({exc.detail})") from exc
    header = dict(packet.unverified_header)
    try:
        check_times(header, now)
        header_state = "valid"
    except InvalidPacket as exc:
        header_state = exc.reason.value
    emit({"header": header, "signature": "valid", "time": header_state})
    return 0


# --- schemas -----------------------------------------------------------------


def cmd_schemas_list(args: argparse.Namespace) -> int:
    emit(default_registry().ids())
    return 0


def cmd_schemas_example(args: argparse.Namespace) -> int:
    try:
        examples = default_registry().examples(args.schema)
    except UnknownSchema as exc:
        raise ConfigError(str(exc)) from exc
    if not 0 <= args.index < len(examples):
        raise ConfigError(f"{args.schema} has {len(examples)} examples (index 0..)")
    emit_json(examples[args.index])
    return 0


# --- parser ------------------------------------------------------------------


def register_keys(sub: Commands) -> Commands:
    """keys init; returns the `keys` subcommands for admin.py's rotate and fingerprint."""
    keys = sub.add_parser("keys", help="key material").add_subparsers(
        dest="keys_cmd", required=True
    )
    p = keys.add_parser(
        "init", help="create a key directory with root, signing and encryption keys"
    )
    p.add_argument("--node", required=True, help="node id, e.g. prison.example")
    p.add_argument("--dir", required=True, help="directory to create")
    p.set_defaults(func=cmd_keys_init)
    return keys


def register_packet(sub: Commands) -> None:
    """packet seal|open|verify."""
    pkt = sub.add_parser("packet", help="offline packet tools").add_subparsers(
        dest="packet_cmd", required=True
    )
    p = pkt.add_parser("seal", help="seal a body to one or more recipient keysets")
    p.add_argument("--keys", required=True, help="the sender's key directory")
    p.add_argument("--to", required=True, action="append", help="recipient KEYSET.json")
    p.add_argument("--schema", required=True, help="schema id, e.g. handover/release-notice/1")
    p.add_argument("--body", required=True, help="BODY.json")
    p.add_argument("--ttl-days", type=int, default=14, help="packet lifetime (default 14, max 30)")
    p.add_argument(
        "--attach", action="append", metavar="FILE", help="attach a file (repeatable; needs --out)"
    )
    p.add_argument("--out", metavar="DIR", help="write DIR/packet.json and DIR/AID.att")
    p.set_defaults(func=cmd_packet_seal)

    p = pkt.add_parser("open", help="run every receiver check and print the payload")
    p.add_argument("--keys", help="the receiver's key directory (default: DIR/keys)")
    p.add_argument(
        "--dir", help="the receiver's node directory: the opening is logged in its audit log"
    )
    p.add_argument("--justification", help="why the packet is opened (needed with --dir)")
    p.add_argument("--sender", required=True, help="the sender's KEYSET.json")
    p.add_argument("--fingerprint", help="the sender's pinned root fingerprint")
    p.add_argument("packet", help="PACKET.json")
    p.add_argument("--attachments", metavar="DIR", help="where the AID.att streams are")
    p.add_argument("--save", metavar="OUTDIR", help="check, decrypt and write OUTDIR/NAME")
    p.set_defaults(func=cmd_packet_open)

    p = pkt.add_parser("verify", help="check signature and header only (no private key)")
    p.add_argument("--sender", required=True, help="the sender's KEYSET.json")
    p.add_argument("--fingerprint", help="the sender's pinned root fingerprint")
    p.add_argument("packet", help="PACKET.json")
    p.set_defaults(func=cmd_packet_verify)


def register_schemas(sub: Commands) -> None:
    """schemas list|example."""
    schemas = sub.add_parser("schemas", help="the packet schemas").add_subparsers(
        dest="schemas_cmd", required=True
    )
    p = schemas.add_parser("list", help="known schema ids")
    p.set_defaults(func=cmd_schemas_list)
    p = schemas.add_parser("example", help="print an example body of a schema")
    p.add_argument("schema", help="schema id, e.g. handover/release-notice/1")
    p.add_argument("--index", type=int, default=0)
    p.set_defaults(func=cmd_schemas_example)
