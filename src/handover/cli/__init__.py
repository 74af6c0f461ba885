"""The `handover` command (main.py: offline tools, node administration, the
local API commands over client.py), the node-process harness and the demo."""

from handover.cli.main import main

__all__ = ["main"]
