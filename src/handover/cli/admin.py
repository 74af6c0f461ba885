"""`handover` commands that set up, run and administer a node, on its machine.

init, serve, keys rotate|fingerprint,
audit verify. Apart from init, serve and keys fingerprint, each opens the
node from its directory (attaching to the running node's database) for the
length of the command.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from handover.cli.args import Commands, node_dir
from handover.cli.output import EXIT_ERROR, EXIT_UNREACHABLE, emit
from handover.node import keystore
from handover.node.config import (
    AGENCY_KINDS,
    is_loopback,
    load_config,
    split_address,
    write_config,
)
from handover.protocol.errors import ConfigError
from handover.protocol.timeutil import now_ms
from handover.store import peers as peer_store

if TYPE_CHECKING:
    from handover.node.runtime import Node
    from handover.store.auditlog import Appender
    from handover.store.db import Connection

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def with_node(directory: Path, work: Callable[[Node], Awaitable[T]]) -> T:
    """Open the node in `directory` (attaching to a running embedded server), run
    `work` on it and close it again."""
    from handover.node import logging as hlog
    from handover.node.runtime import Node
    from handover.web.transport import HttpTransport

    async def session() -> T:
        config = load_config(directory)
        # stdout is the command's JSON: the node's own warnings go to stderr.
        hlog.configure(config.log_format, "warning")
        node = await Node.open(directory, transport=HttpTransport.for_config(config))
        try:
            return await work(node)
        finally:
            await node.close()

    return _run(session())


# --- init / serve ------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    directory = node_dir(args)
    directory.mkdir(parents=True, exist_ok=True)
    keys_dir = directory / "keys"
    if (directory / "handover.toml").exists() or (keys_dir / keystore.ROOT_FILE).exists():
        raise ConfigError(f"{directory} already holds a node; refusing to overwrite it")
    local_listen = args.local_listen or ""
    if not local_listen and not is_loopback(args.listen):
        # The local API must not face partner networks: it gets a loopback port.
        port = split_address(args.listen)[1]
        local_listen = f"127.0.0.1:{port + 1 if 0 < port < 65535 else 8481}"
        sys.stderr.write(
            f"handover: listen {args.listen} is not a loopback address, so the local API,"
            f" metrics and web interface listen on {local_listen} (local_listen in"
            " handover.toml)\n"
        )
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    settings: dict[str, object] = {
        "node": args.node,
        "kind": args.kind,
        "listen": args.listen,
        "local_listen": local_listen,
        "public_url": args.public_url or "",
        "dsn": args.dsn or "",
        "tls_cert": _absolute(args.tls_cert),
        "tls_key": _absolute(args.tls_key),
        "tls_client_ca": _absolute(args.tls_client_ca),
        "case_assignment": args.case_assignment,
    }
    keys = keystore.init_keys(keys_dir, args.node, now_ms())
    keystore.storage_key(keys_dir)
    write_config(directory, settings)
    config = load_config(directory)
    emit(
        {
            "node": keys.node,
            "kind": config.kind,
            "fingerprint": keys.fingerprint,
            "keyset_url": config.url + "/.well-known/handover/keyset",
            "local_url": config.local_url,
            "config": str(directory / "handover.toml"),
        }
    )
    return 0


def _absolute(path: str | None) -> str:
    """A file given on the command line, as an absolute path for the settings."""
    if not path:
        return ""
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise ConfigError(f"{path} is not a file")
    return str(resolved)


def cmd_serve(args: argparse.Namespace) -> int:
    from handover.cli.heap import bound_native_heap
    from handover.node import logging as hlog
    from handover.web.server import serve

    config = load_config(node_dir(args))
    hlog.configure(config.log_format, config.log_level)
    bound_native_heap()
    try:
        import uvloop
    except ImportError:  # the standard loop works too, only slower
        _run(serve(node_dir(args), args.listen))
    else:
        uvloop.run(serve(node_dir(args), args.listen))
    return 0


# --- keys ------------------------------------------------------------------------------


def _record_key_change(directory: Path, **entry: Any) -> None:
    """A `key` audit entry for a change made to the key files, and a NOTIFY so
    every running process of the node reloads its keys."""

    async def work(node: Node) -> None:
        async def job(conn: Connection, appender: Appender) -> None:
            appender.append("key", **entry)
            await peer_store.notify_keys(conn)

        await node.writer.run(job)

    with_node(directory, work)


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    directory = node_dir(args)
    config = load_config(directory)
    old = keystore.load_keys(config.keys_dir)
    new = keystore.rotate(old, now_ms())

    _record_key_change(
        directory,
        action="rotated",
        serial=new.keyset.serial,
        retired=[k.kid for k in old.keyset.keys if k.status == "active"],
        active=[k.kid for k in new.keyset.keys if k.status == "active"],
        org=config.node,
    )
    emit(
        {
            "node": new.node,
            "serial": new.keyset.serial,
            "active": [k.kid for k in new.keyset.keys if k.status == "active"],
            "retired": [k.kid for k in new.keyset.keys if k.status == "retired"],
        }
    )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    directory = node_dir(args)
    config = load_config(directory)
    reason = args.reason.strip()
    if not reason:
        raise ConfigError("--reason is required: say why the key is revoked")
    old = keystore.load_keys(config.keys_dir)
    new = keystore.revoke(old, args.kid, now_ms())

    _record_key_change(
        directory,
        action="revoked",
        kid=args.kid,
        serial=new.keyset.serial,
        active=[k.kid for k in new.keyset.keys if k.status == "active"],
        justification=reason,
        org=config.node,
    )
    emit(
        {
            "node": new.node,
            "serial": new.keyset.serial,
            "revoked": [k.kid for k in new.keyset.keys if k.status == "revoked"],
            "active": [k.kid for k in new.keyset.keys if k.status == "active"],
        }
    )
    return 0


def cmd_keys_protect_root(args: argparse.Namespace) -> int:
    from handover.cli.backup import read_passphrase

    config = load_config(node_dir(args))
    keystore.protect_root(config.keys_dir, read_passphrase(args))
    emit(
        {
            "root_key": str(config.keys_dir / keystore.ROOT_FILE),
            "encrypted": True,
            "passphrase_from": f"{keystore.ROOT_PASSPHRASE_ENV} or the systemd credential"
            f" {keystore.ROOT_CREDENTIAL}",
        }
    )
    return 0


def cmd_keys_fingerprint(args: argparse.Namespace) -> int:
    directory = node_dir(args)
    keys_dir = directory / "keys" if (directory / "keys").is_dir() else directory
    sys.stdout.write(keystore.load_keys(keys_dir).fingerprint + "\n")
    return 0


# --- audit verify ------------------------------------------------------------------------


def cmd_audit_verify(args: argparse.Namespace) -> int:
    async def work(node: Node) -> dict[str, Any]:
        return await node.audit.verify(peers=args.peers)

    report = with_node(node_dir(args), work)
    emit(report)
    if report["ok"]:
        return 0
    chain = report["chain"]
    if not chain["ok"]:
        sys.stderr.write(
            f"handover: audit chain broken at entry {chain['bad_seq']}: {chain['problem']}\n"
        )
    broken = not chain["ok"] or not all(f["ok"] for f in report.get("forks", []))
    for peer in report.get("peers", []):
        if peer["ok"]:
            continue
        if peer.get("unreachable"):
            sys.stderr.write(
                f"handover: peer {peer['node']} could not be reached, its log was not"
                f" checked: {peer['problem']}\n"
            )
            continue
        broken = True
        sys.stderr.write(f"handover: peer {peer['node']}: {peer['problem']}\n")
        for statement in peer.get("conflict", []):
            sys.stderr.write(
                f"  signed {statement['kind']} seq={statement['seq']}"
                f" head={statement['head']}: {statement['signed']}\n"
            )
    # A broken log (ours or a peer's) outranks a peer that could not be reached.
    return EXIT_ERROR if broken else EXIT_UNREACHABLE


# --- parser ------------------------------------------------------------------------------


def register_init(sub: Commands) -> None:
    p = sub.add_parser("init", help="set up a node directory: settings and keys")
    p.add_argument("--node", required=True, help="node id, e.g. prison.example")
    p.add_argument("--dir", required=True, help="node directory to create")
    p.add_argument("--kind", required=True, choices=AGENCY_KINDS, help="this agency's kind")
    p.add_argument("--listen", default="127.0.0.1:8480", help="HOST:PORT (default 127.0.0.1:8480)")
    p.add_argument("--public-url", help="URL peers use to reach this node")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: embedded PostgreSQL under DIR)")
    p.add_argument(
        "--local-listen",
        help="HOST:PORT of the local API, metrics and web interface (default: on --listen"
        " when it is a loopback address, else a loopback port)",
    )
    p.add_argument("--tls-cert", help="PEM certificate (chain) for the federation listener")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument(
        "--tls-client-ca", help="require client certificates from this CA to post packets"
    )
    p.add_argument(
        "--case-assignment",
        choices=("required", "off"),
        default="off",
        help="required: caseworkers see only cases assigned to them or their team"
        " (LED Art 20, 29; default off)",
    )
    p.set_defaults(func=cmd_init)


def register_node(sub: Commands) -> None:
    """serve, audit verify (peers: cli/partners.py; operators: cli/operators.py)."""
    p = sub.add_parser("serve", help="run the node")
    p.add_argument("--dir", required=True)
    p.add_argument(
        "--listen", help="HOST:PORT overriding the federation address (a second replica)"
    )
    p.set_defaults(func=cmd_serve)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit_cmd", required=True
    )
    p = audit.add_parser("verify", help="recompute the hash chain; --peers checks peers' logs")
    p.add_argument("--dir", required=True)
    p.add_argument(
        "--peers",
        action="store_true",
        help="also witness every peer's log (exit 1: a log is broken; exit 4: a peer could"
        " not be reached)",
    )
    p.set_defaults(func=cmd_audit_verify)


def register_keys(keys_sub: Commands) -> None:
    """keys rotate|fingerprint (`keys init`, offline, is in cli/offline.py)."""
    p = keys_sub.add_parser("rotate", help="new signing and encryption keys; old ones retired")
    p.add_argument("--dir", required=True, help="node directory")
    p.set_defaults(func=cmd_keys_rotate)
    p = keys_sub.add_parser("revoke", help="revoke a key: peers accept nothing new signed by it")
    p.add_argument("--dir", required=True, help="node directory")
    p.add_argument("kid", help="the key id (see keys/keyset.json)")
    p.add_argument("--reason", required=True, help="why (recorded in the audit log)")
    p.set_defaults(func=cmd_keys_revoke)
    p = keys_sub.add_parser(
        "protect-root", help="encrypt keys/root.key with a passphrase (Argon2id + secretbox)"
    )
    p.add_argument("--dir", required=True, help="node directory")
    p.add_argument("--passphrase-file", help="file whose first line is the passphrase")
    p.set_defaults(func=cmd_keys_protect_root)
    p = keys_sub.add_parser("fingerprint", help="print this node's root fingerprint")
    p.add_argument("--dir", required=True, help="node directory or key directory")
    p.set_defaults(func=cmd_keys_fingerprint)
