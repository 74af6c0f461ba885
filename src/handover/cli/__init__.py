"""The `handover` command: offline hp1 tools, node administration, the API
client, and the demo federation."""

from handover.cli.main import main

__all__ = ["main"]
