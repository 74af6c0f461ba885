"""`handover serve`: the node, its listeners, and a clean stop on SIGINT/SIGTERM.

The federation listener (`listen`, HTTPS when TLS is set) serves only what
partner nodes use and health; the local listener (`local_listen`) serves the
local API, metrics and the web interface. One listener serves both only when
`listen` is a loopback address.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from pathlib import Path

import structlog
from aiohttp import web

from handover.node.config import NodeConfig, is_loopback, load_config, split_address
from handover.node.runtime import Node
from handover.protocol.errors import ConfigError
from handover.web.app import Surface, create_app
from handover.web.tls import server_context
from handover.web.transport import HttpTransport

log = structlog.get_logger(__name__)


def listeners(config: NodeConfig, listen: str | None = None) -> list[tuple[Surface, str]]:
    """(surface, address) for each listener this node opens.

    Raises:
        ConfigError: the local API would face partner networks.
    """
    federation = listen or config.listen
    if config.local_listen:
        return [("federation", federation), ("local", config.local_listen)]
    if not is_loopback(federation):
        raise ConfigError(
            f"listen {federation} is not a loopback address, so the local API would face"
            ' partner networks: set local_listen = "127.0.0.1:PORT" in handover.toml'
        )
    return [("both", federation)]


async def serve(directory: Path, listen: str | None = None) -> None:
    """Run a node until SIGINT/SIGTERM: listeners, delivery worker, maintenance.

    `listen` overrides the federation address (a second replica on one host).
    """
    config = load_config(directory)
    plan = listeners(config, listen)
    tls = server_context(config)
    node = await Node.open(directory, transport=HttpTransport.for_config(config))
    await node.start()
    runners: list[web.AppRunner] = []
    try:
        for surface, address in plan:
            runner = web.AppRunner(create_app(node, surface), access_log=None, handle_signals=False)
            await runner.setup()
            runners.append(runner)
            host, port = split_address(address)
            site = web.TCPSite(runner, host, port, ssl_context=tls if surface != "local" else None)
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(f"cannot listen on {address}: {exc.strerror}") from exc
    except BaseException:
        for runner in runners:
            await runner.cleanup()
        await node.close()
        raise
    log.info(
        "node_started",
        node=node.config.node,
        kind=node.config.kind,
        listen=plan[0][1],
        local_listen=config.local_listen or None,
        url=node.config.url,
        local_url=node.config.local_url,
        tls=config.tls,
        fingerprint=node.directory.keys.fingerprint,
        embedded_db=node.db.embedded is not None,
    )
    # What start-up built (schemas, validators, templates, modules) lives as long
    # as the process: move it out of the collector's view, so a full collection
    # scans only what requests allocate (a 40 ms pause otherwise, under load).
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("node_stopping", node=node.config.node)
    for runner in runners:
        await runner.cleanup()
    await node.close()
