"""`handover webhooks add|list|remove`: webhook targets of a node, on its machine.

An admin configures them (whoever may run commands in the node directory).
The shared secret is read from a file (mode 0600 or stricter, never a flag, so
it is not in shell history or `ps`) and stored sealed with the node's storage
key; it is never printed again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from handover.cli.args import Commands, node_dir
from handover.cli.output import CliError, emit
from handover.node import keystore
from handover.node import webhooks as webhook_node
from handover.node.config import NodeConfig, load_config
from handover.protocol.timeutil import now_ms
from handover.store import events as event_store
from handover.store.auditlog import AuditWriter
from handover.store.db import Database

T = TypeVar("T")


def _with_db(directory: Path, work: Callable[[NodeConfig, AuditWriter], Awaitable[T]]) -> T:
    """Attach to the node's database (a running node's too) for one command; the
    audit writer runs each job alone under the audit lock."""

    async def session() -> T:
        config = load_config(directory)
        db = await Database.open(config.dsn, config.pgdata, min_size=1, max_size=2)
        try:
            return await work(config, AuditWriter(db, now_ms))
        finally:
            await db.close()

    return asyncio.run(session())


def read_secret(path: str) -> bytes:
    """The secret in `path` (one trailing newline dropped).

    Raises:
        CliError: the file is missing, readable by others, or the wrong length.
    """
    try:
        mode = os.stat(path).st_mode
        with open(path, "rb") as f:
            secret = f.read(webhook_node.MAX_SECRET + 2)
    except OSError as exc:
        raise CliError(f"cannot read --secret-file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CliError(f"--secret-file {path} is readable by others: chmod 600 it first")
    return secret.removesuffix(b"\n").removesuffix(b"\r")


def cmd_add(args: argparse.Namespace) -> int:
    secret = read_secret(args.secret_file)
    kinds = args.events.split(",")
    try:
        webhook_node.check_target(args.url, kinds, secret)
    except webhook_node.WebhookError as exc:
        raise CliError(f"{exc} (--url, --events, --secret-file)") from exc

    async def work(config: NodeConfig, writer: AuditWriter) -> int:
        key = keystore.storage_key(config.keys_dir)
        return await webhook_node.add(
            writer, key, args.url, kinds, secret, node=config.node, now=now_ms()
        )

    webhook_id = _with_db(node_dir(args), work)
    emit(
        {
            "id": webhook_id,
            "url": args.url,
            "events": webhook_node.check_target(args.url, kinds, secret),
        }
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    async def work(_config: NodeConfig, writer: AuditWriter) -> list[dict[str, Any]]:
        async with writer.db.connection() as conn:
            rows = await event_store.webhooks(conn)
        return [
            {
                "id": w.id,
                "url": w.url,
                "events": list(w.kinds),
                "created_at": w.created_at,
                "pending": w.pending,
                "failed": w.failed,
            }
            for w in rows
        ]

    emit(_with_db(node_dir(args), work))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    async def work(config: NodeConfig, writer: AuditWriter) -> bool:
        return await webhook_node.remove(writer, args.id, node=config.node)

    if not _with_db(node_dir(args), work):
        raise CliError(f"no webhook {args.id} (see handover webhooks list)")
    emit({"removed": args.id})
    return 0


def register(sub: Commands) -> None:
    hooks = sub.add_parser("webhooks", help="POST events to a URL, signed").add_subparsers(
        dest="webhooks_cmd", required=True
    )
    p = hooks.add_parser("add", help="add a webhook target")
    p.add_argument("--dir", required=True, help="node directory")
    p.add_argument("--url", required=True, help="http:// or https:// URL to POST events to")
    p.add_argument(
        "--events",
        required=True,
        help=f"comma-separated event types: {','.join(event_store.KINDS)}",
    )
    p.add_argument(
        "--secret-file", required=True, help="file (mode 0600) holding the signing secret"
    )
    p.set_defaults(func=cmd_add)
    p = hooks.add_parser("list", help="webhook targets with pending and failed counts")
    p.add_argument("--dir", required=True, help="node directory")
    p.set_defaults(func=cmd_list)
    p = hooks.add_parser("remove", help="remove a webhook target and its queue")
    p.add_argument("--dir", required=True, help="node directory")
    p.add_argument("id", type=int, help="the webhook's id (see webhooks list)")
    p.set_defaults(func=cmd_remove)
