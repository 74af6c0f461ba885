"""`handover` commands for knowing a partner: `peers add|list|invite|accept|verify`
and `profile set|show` (docs/protocol.md section 9, docs/operations.md).

Each opens the node from its directory for the length of the command, as the
other administration commands do (cli/admin.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handover.cli.admin import with_node
from handover.cli.args import Commands, node_dir
from handover.cli.output import cell, emit, warn
from handover.node.config import AGENCY_KINDS
from handover.node.errors import PairingRefused, TransportError
from handover.protocol.errors import ConfigError, InvalidKeyset
from handover.protocol.pairing import PairingError, safety_number
from handover.protocol.profile import TEXT_FIELDS
from handover.store import peers as peer_store

if TYPE_CHECKING:
    from handover.node.runtime import Node
    from handover.store.auditlog import Appender
    from handover.store.db import Connection

RECENT_CHANGE_MS = 7 * 24 * 60 * 60 * 1000  # `peers list` warns of changes this recent
PROFILE_FLAGS = {name: name.replace("_", "-") for name in TEXT_FIELDS if name != "kind"}


# --- peers add / list ----------------------------------------------------------------


def cmd_peers_add(args: argparse.Namespace) -> int:
    if args.ca:
        from handover.web.transport import peer_ca_path

        ca = Path(args.ca)
        if not ca.is_file():
            raise ConfigError(f"--ca {args.ca} is not a file")
        target = peer_ca_path(node_dir(args), args.url)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(ca.read_bytes())

    async def work(node: Node) -> dict[str, Any]:
        try:
            keyset, old_kind = await node.directory.pin_checked(
                args.url, args.fingerprint, args.kind, change_kind=args.change_kind
            )
        except TransportError as exc:
            raise ConfigError(f"cannot fetch the keyset from {args.url}: {exc}") from exc
        except InvalidKeyset as exc:
            raise ConfigError(f"the keyset at {args.url} was refused: {exc}") from exc

        async def log_pin(conn: Connection, appender: Appender) -> None:
            appender.append(
                "key",
                action="peer_pinned",
                counterpart=keyset.node,
                fingerprint=keyset.fingerprint,
                serial=keyset.serial,
                kind=node.directory.kind(keyset.node),
                org=node.config.node,
            )
            if old_kind is not None:
                appender.append(
                    "key",
                    action="peer_kind_changed",
                    counterpart=keyset.node,
                    old_kind=old_kind,
                    new_kind=args.kind,
                    org=node.config.node,
                )

        await node.writer.run(log_pin)
        profile = await node.profiles.refresh(keyset.node)
        return {
            "node": keyset.node,
            "url": args.url.rstrip("/"),
            "fingerprint": keyset.fingerprint,
            "kind": node.directory.kind(keyset.node),
            "serial": keyset.serial,
            **profile.to_json(),
        }

    emit(with_node(node_dir(args), work))
    return 0


def cmd_peers_list(args: argparse.Namespace) -> int:
    """Pinned peers, their keysets and profiles, and when this node last reached
    each one (`last_success_at`) and last failed to (`last_failure`, plain words)."""

    async def work(node: Node) -> list[dict[str, Any]]:
        async with node.db.connection() as conn:
            contacts = {c.node: c for c in await peer_store.contacts(conn)}
        pinned = list(node.directory.peers.values())
        # Each profile is fetched again (at most 10 s each, all at once).
        profiles = await asyncio.gather(*(node.profiles.refresh(p.node) for p in pinned))
        out = []
        recent = node.clock() - RECENT_CHANGE_MS
        for p, profile in zip(pinned, profiles, strict=True):
            contact = contacts.get(p.node)
            if profile.changed_since(recent) and profile.profile is not None:
                warn(
                    f"the profile of {p.node} changed (serial {profile.previous_serial} ->"
                    f" {profile.profile.serial}): check the change with the partner agency"
                )
            out.append(
                {
                    "node": p.node,
                    "url": p.url,
                    "fingerprint": p.fingerprint,
                    "kind": p.kind,
                    "serial": None if p.keyset is None else p.keyset.serial,
                    "keyset_exp": None if p.keyset is None else p.keyset.exp,
                    "last_error": p.last_error,
                    "last_success_at": contact and contact.last_success_at,
                    "last_failure": contact and contact.last_failure,
                    "last_failure_at": contact and contact.last_failure_at,
                    **profile.to_json(),
                }
            )
        return out

    emit(with_node(node_dir(args), work), render_peers)
    return 0


def render_peers(peers: list[dict[str, Any]]) -> str:
    """`peers list` for people: one block per peer, times local."""
    if not peers:
        return "no pinned peers"
    blocks = []
    for p in peers:
        success = cell("at", p["last_success_at"]) if p["last_success_at"] else "never"
        failure = "none"
        if p["last_failure"]:
            failure = f"{cell('at', p['last_failure_at'])}: {p['last_failure']}"
        keyset = "none accepted"
        if p["serial"] is not None:
            keyset = f"serial {p['serial']}, valid until {cell('at', p['keyset_exp'])}"
        profile = p.get("profile")
        blocks.append(
            f"{p['node']} ({p['kind'] or 'kind not set'}) {p['url']}\n"
            f"  fingerprint   {p['fingerprint']}\n"
            f"  keyset        {keyset}\n"
            + (f"  profile       {cell('profile', profile)}\n" if profile else "")
            + f"  last success  {success}\n"
            f"  last failure  {failure}"
        )
    return "\n\n".join(blocks)


# --- pairing ---------------------------------------------------------------------------


def cmd_peers_invite(args: argparse.Namespace) -> int:
    async def work(node: Node) -> dict[str, Any]:
        return await node.pairing.invite(args.kind)

    invitation = with_node(node_dir(args), work)
    sys.stdout.write(
        f"pairing code for a {invitation['kind']} agency, valid for one hour, for one use:\n"
        f"  {invitation['code']}\n"
        "Read it to the partner's administrator by telephone; they run\n"
        f"  handover peers accept --dir DIR --url {invitation['url']} --code CODE\n"
    )
    return 0


def cmd_peers_accept(args: argparse.Namespace) -> int:
    async def work(node: Node) -> dict[str, Any]:
        try:
            return await node.pairing.accept(args.url, args.code)
        except PairingError as exc:
            raise ConfigError(str(exc)) from exc
        except PairingRefused as exc:
            raise ConfigError(
                f"pairing refused by {args.url} ({exc.code}): {exc.message}; nothing was pinned"
            ) from exc
        except TransportError as exc:
            raise ConfigError(f"cannot reach {args.url}: {exc}") from exc

    emit(with_node(node_dir(args), work))
    return 0


def cmd_peers_verify(args: argparse.Namespace) -> int:
    async def work(node: Node) -> dict[str, Any]:
        peer = node.directory.peers.get(args.node)
        if peer is None:
            raise ConfigError(f"{args.node} is not pinned")
        own = node.directory.keys.fingerprint
        return {
            "node": peer.node,
            "safety_number": safety_number(own, peer.fingerprint),
            "hint": "read it to the partner agency by telephone: theirs must be the same",
        }

    emit(with_node(node_dir(args), work))
    return 0


# --- profile -----------------------------------------------------------------------------


def cmd_profile_set(args: argparse.Namespace) -> int:
    fields: dict[str, str] = {}
    if args.file:
        try:
            loaded = json.loads(Path(args.file).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--file {args.file}: not a readable JSON object") from exc
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise ConfigError(f"--file {args.file}: a JSON object of strings")
        fields.update(loaded)
    for name in PROFILE_FLAGS:
        value = getattr(args, name)
        if value is not None:
            fields[name] = value

    async def work(node: Node) -> dict[str, Any]:
        profile = await node.profiles.set_own(fields)
        return profile.to_json()

    emit(with_node(node_dir(args), work))
    return 0


def cmd_profile_show(args: argparse.Namespace) -> int:
    async def work(node: Node) -> dict[str, Any] | None:
        from handover.protocol.profile import verify_profile

        wire = await node.profiles.own_wire()
        if wire is None:
            return None
        keys = node.directory.keys
        return verify_profile(wire, node=keys.node, fingerprint=keys.fingerprint).to_json()

    emit(with_node(node_dir(args), work))
    return 0


# --- parser ------------------------------------------------------------------------------


def register_peers(sub: Commands) -> None:
    peers = sub.add_parser("peers", help="pinned peers, pairing and safety numbers").add_subparsers(
        dest="peers_cmd", required=True
    )
    p = peers.add_parser("add", help="fetch a peer's keyset, check its fingerprint, pin it")
    p.add_argument("--dir", required=True)
    p.add_argument("--url", required=True, help="the peer's base URL")
    p.add_argument("--fingerprint", required=True, help="root fingerprint, compared out of band")
    p.add_argument("--kind", choices=AGENCY_KINDS, help="the peer agency's kind")
    p.add_argument(
        "--change-kind",
        action="store_true",
        help="allow changing the kind of a pinned peer (audited; refused while packets wait)",
    )
    p.add_argument("--ca", help="CA bundle that signs the peer's TLS certificate")
    p.set_defaults(func=cmd_peers_add)
    p = peers.add_parser("list", help="pinned peers, their keysets and profiles")
    p.add_argument("--dir", required=True)
    p.set_defaults(func=cmd_peers_list)
    p = peers.add_parser("invite", help="a one-time pairing code for a partner (one hour)")
    p.add_argument("--dir", required=True)
    p.add_argument("--kind", required=True, choices=AGENCY_KINDS, help="the partner's kind")
    p.set_defaults(func=cmd_peers_invite)
    p = peers.add_parser("accept", help="pair with the node that made a code; both pin")
    p.add_argument("--dir", required=True)
    p.add_argument("--url", required=True, help="the inviting node's base URL")
    p.add_argument("--code", required=True, help="the code, e.g. 7-guitar-revenge")
    p.set_defaults(func=cmd_peers_accept)
    p = peers.add_parser("verify", help="the safety number to compare with a partner by phone")
    p.add_argument("--dir", required=True)
    p.add_argument("node", help="the pinned peer's node id")
    p.set_defaults(func=cmd_peers_verify)


def register_profile(sub: Commands) -> None:
    profile = sub.add_parser("profile", help="this agency's signed profile").add_subparsers(
        dest="profile_cmd", required=True
    )
    p = profile.add_parser("set", help="sign and publish a new profile (next serial)")
    p.add_argument("--dir", required=True)
    p.add_argument("--file", help="JSON object with the fields below (flags override it)")
    for name, flag in PROFILE_FLAGS.items():
        p.add_argument(f"--{flag}", dest=name, help=f"{name} (at most {TEXT_FIELDS[name]})")
    p.set_defaults(func=cmd_profile_set)
    p = profile.add_parser("show", help="this node's current profile")
    p.add_argument("--dir", required=True)
    p.set_defaults(func=cmd_profile_show)
