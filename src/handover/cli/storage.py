"""`handover keys rotate-storage`: re-wrap every stored packet's data key under a
new storage key and destroy the old one (crypto-shredding, docs/operations.md)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from handover.cli.args import Commands, node_dir
from handover.cli.output import emit
from handover.node import logging as hlog
from handover.node.config import load_config
from handover.store.peers import notify_keys


def cmd_keys_rotate_storage(args: argparse.Namespace) -> int:
    from handover.node.runtime import Node
    from handover.node.shredding import rotate_storage
    from handover.web.transport import HttpTransport

    directory = node_dir(args)
    config = load_config(directory)
    hlog.configure(config.log_format, config.log_level)  # logs to stderr, the answer to stdout

    async def session() -> dict[str, Any]:
        node = await Node.open(directory, transport=HttpTransport.for_config(config))
        try:
            counts = await rotate_storage(
                db=node.db,
                writer=node.writer,
                vault=node.vault,
                keys_dir=config.keys_dir,
                org=config.node,
            )
            # Running processes of the node reload their keys, the storage key too.
            async with node.db.connection() as conn:
                await notify_keys(conn)
            return counts
        finally:
            await node.close()

    counts = asyncio.run(session())
    emit({"node": config.node, "rotated": "storage", **counts})
    return 0


def register(keys_sub: Commands) -> None:
    p = keys_sub.add_parser(
        "rotate-storage",
        help="re-wrap every stored packet's data key under a new storage key; the old"
        " key is destroyed (stop the node's serving processes first)",
    )
    p.add_argument("--dir", required=True, help="node directory")
    p.set_defaults(func=cmd_keys_rotate_storage)
