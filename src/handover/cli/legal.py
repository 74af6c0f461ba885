"""`handover` commands of the legal duties (issue 16) that work on a node
directory: team membership for case assignment (LED Art 20, 29), and the
audit entry of an offline `packet open --dir` (Art 25)."""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path
from typing import TYPE_CHECKING

from handover.cli.admin import with_node
from handover.cli.args import Commands, node_dir
from handover.cli.output import emit
from handover.store.auditlog import Appender
from handover.store.db import Connection

if TYPE_CHECKING:
    from handover.node.runtime import Node


def record_offline_open(
    directory: Path,
    *,
    pid: str,
    sender: str,
    schema: str,
    fields: list[str],
    justification: str,
) -> None:
    """A `consultation` entry in the node's log for a packet opened offline."""

    async def work(node: Node) -> None:
        async def job(conn: Connection, appender: Appender) -> None:
            appender.append(
                "consultation",
                pid=pid,
                shown="packet_open_offline",
                schema=schema,
                counterpart=sender,
                fields=fields,
                operator=f"local:{getpass.getuser()}",
                org=node.config.node,
                justification=justification,
            )

        await node.writer.run(job)

    with_node(directory, work)


def cmd_teams_set(args: argparse.Namespace) -> int:
    async def work(node: Node) -> None:
        await node.assignments.set_teams(args.name, args.team)

    with_node(node_dir(args), work)
    emit({"operator": args.name, "teams": sorted(set(args.team))})
    return 0


def register(sub: Commands) -> None:
    """teams set."""
    teams = sub.add_parser("teams", help="operators' teams (case assignment)").add_subparsers(
        dest="teams_cmd", required=True
    )
    p = teams.add_parser("set", help="the teams an operator belongs to (replaces them)")
    p.add_argument("--dir", required=True)
    p.add_argument("name", help="the operator")
    p.add_argument("team", nargs="*", help="team names (none: no team)")
    p.set_defaults(func=cmd_teams_set)
