"""`handover serve`: the node, its HTTP listener, and a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import structlog
from aiohttp import web

from handover.node.config import load_config
from handover.node.runtime import Node
from handover.protocol.errors import ConfigError
from handover.web.app import create_app
from handover.web.transport import HttpTransport

log = structlog.get_logger(__name__)


async def serve(directory: Path) -> None:
    """Run a node until SIGINT/SIGTERM: HTTP server, delivery worker, maintenance."""
    config = load_config(directory)
    node = await Node.open(directory, transport=HttpTransport(config.delivery_timeout_s))
    await node.start()
    app = create_app(node)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, node.config.host, node.config.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await node.close()
        raise ConfigError(f"cannot listen on {node.config.listen}: {exc.strerror}") from exc
    log.info(
        "node_started",
        node=node.config.node,
        kind=node.config.kind,
        listen=node.config.listen,
        url=node.config.url,
        fingerprint=node.directory.keys.fingerprint,
        embedded_db=node.db.embedded is not None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("node_stopping", node=node.config.node)
    await runner.cleanup()
    await node.close()
