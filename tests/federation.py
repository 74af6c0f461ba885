"""Real node processes for end-to-end tests: the harness of src/handover/cli/harness.py
(the one the demo and the benchmark use too), with a few test-only helpers.

`NodeProcess` wraps one `handover serve` subprocess with its own directory and
embedded PostgreSQL; `Federation` sets up several, pins them to each other and
creates operators. Everything talks real HTTP on 127.0.0.1.

    fed = Federation(tmp_path, [("prison.example", "prison"), ("probation.example", "probation")])
    fed.start()
    status, body = fed["prison.example"].api("POST", "/api/v1/packets", {...})
    fed.stop()
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg

from handover.cli import harness
from handover.cli.harness import cli_env, example, free_port, run_cli

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
RELEASE_NOTICE = "handover/release-notice/1"

__all__ = [
    "RELEASE_NOTICE",
    "ROOT",
    "SRC",
    "Federation",
    "NodeProcess",
    "cli_env",
    "example",
    "free_port",
    "run_cli",
]


class NodeProcess(harness.NodeProcess):
    """A harness node, plus submitting with checks and reading its database."""

    def send(
        self,
        to: list[str],
        schema: str = RELEASE_NOTICE,
        body: dict[str, Any] | None = None,
        justification: str = "release planning for the shared case",
    ) -> str:
        """Submit as the caseworker; returns the (first) pid."""
        status, answer = self.api(
            "POST",
            "/api/v1/packets",
            {
                "to": to,
                "schema": schema,
                "body": body if body is not None else example(schema),
                "justification": justification,
            },
        )
        assert status == 202, (status, answer)
        pid: str = answer["packets"][0]["pid"]
        return pid

    def packet(self, pid: str) -> dict[str, Any]:
        """A sent packet's status, as the caseworker sees it."""
        status, answer = self.api("GET", f"/api/v1/packets/{pid}")
        assert status == 200, (status, answer)
        result: dict[str, Any] = answer
        return result

    def sql(self, query: str, *args: Any) -> list[dict[str, Any]]:
        """Run `query` on the node's embedded PostgreSQL."""

        async def go() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.dsn())
            try:
                return [dict(r) for r in await conn.fetch(query, *args)]
            finally:
                await conn.close()

        return asyncio.run(go())


class Federation(harness.Federation):
    node_class = NodeProcess

    def __getitem__(self, name: str) -> NodeProcess:
        node = self.nodes[name]
        assert isinstance(node, NodeProcess)
        return node
