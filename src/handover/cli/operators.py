"""`handover operators`: the local API's users and their bearer tokens.

add (refuses an existing name), list, disable, enable, remove, token (a new
token; the old one ends at once). A token may expire (`--expires-days`). Each
change is an audit entry (`key`, action `operator_...`, names only) and a
NOTIFY, so every running process of the node forgets the tokens it cached.
Tokens are printed once, as the last line; only their hash is stored.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from handover.cli import operators_ui
from handover.cli.admin import with_node
from handover.cli.args import Commands, node_dir
from handover.cli.output import CliError, emit
from handover.protocol.canonical import b64u_encode
from handover.protocol.crypto import random_bytes
from handover.protocol.timeutil import now_ms
from handover.store.errors import Conflict

if TYPE_CHECKING:
    from handover.node.runtime import Node
    from handover.store.auditlog import Appender
    from handover.store.db import Connection

ROLES = ("admin", "caseworker", "auditor", "system")
DAY_MS = 86_400_000
MAX_EXPIRES_DAYS = 3650


def new_token() -> str:
    return "hov_" + b64u_encode(random_bytes(32))


def expires_at(days: float | None, now: int) -> int | None:
    """When a token given `--expires-days days` at `now` ends (None: never)."""
    if days is None:
        return None
    if not 0 < days <= MAX_EXPIRES_DAYS:
        raise CliError(f"--expires-days must be over 0 and at most {MAX_EXPIRES_DAYS}")
    return now + round(days * DAY_MS)


def _iso(ms: int | None) -> str:
    if ms is None:
        return "never"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _change(args: argparse.Namespace, action: str, change: Any, **fields: Any) -> bool:
    """Run `change(conn)` (a store call returning False when the operator does not
    exist) with its audit entry, in one transaction."""

    async def work(node: Node) -> bool:
        async def job(conn: Connection, appender: Appender) -> bool:
            done = bool(await change(conn))
            if done:
                appender.append(
                    "key", action=action, operator=args.name, org=node.config.node, **fields
                )
            return done

        return bool(await node.writer.run(job))

    return with_node(node_dir(args), work)


def _no_such(name: str) -> CliError:
    return CliError(f"there is no operator named {name} (see `handover operators list`)")


def cmd_operators_add(args: argparse.Namespace) -> int:
    from handover.node.auth import token_hash
    from handover.store import operators as operator_store

    token, now = new_token(), now_ms()
    until = expires_at(args.expires_days, now)
    password = operators_ui.read_password(args)

    async def add(conn: Connection) -> bool:
        await operator_store.add(conn, args.name, args.role, token_hash(token), now, until)
        return True

    try:
        _change(args, "operator_added", add, role=args.role, expires_at=until)
    except Conflict:
        raise CliError(
            f"an operator named {args.name} exists; its token is unchanged (a new token:"
            f" `handover operators token {args.name} --dir DIR`)"
        ) from None
    operators_ui.apply(args, password)
    sys.stdout.write(
        f"operator {args.name} ({args.role}) added, token expires: {_iso(until)};"
        " the bearer token below is shown only once:\n"
    )
    sys.stdout.write(token + "\n")
    return 0


def cmd_operators_token(args: argparse.Namespace) -> int:
    from handover.node.auth import token_hash
    from handover.store import operators as operator_store

    token = new_token()
    until = expires_at(args.expires_days, now_ms())

    async def replace(conn: Connection) -> bool:
        return await operator_store.replace_token(conn, args.name, token_hash(token), until)

    if not _change(args, "operator_token_issued", replace, expires_at=until):
        raise _no_such(args.name)
    sys.stdout.write(
        f"new token for operator {args.name}, expires: {_iso(until)}; the old token no longer"
        " works; the bearer token below is shown only once:\n"
    )
    sys.stdout.write(token + "\n")
    return 0


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    from handover.store import operators as operator_store

    async def change(conn: Connection) -> bool:
        return await operator_store.set_disabled(conn, args.name, disabled)

    action = "operator_disabled" if disabled else "operator_enabled"
    if not _change(args, action, change):
        raise _no_such(args.name)
    emit({"operator": args.name, "disabled": disabled})
    return 0


def cmd_operators_disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def cmd_operators_enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)


def cmd_operators_remove(args: argparse.Namespace) -> int:
    from handover.store import operators as operator_store

    async def change(conn: Connection) -> bool:
        return await operator_store.remove(conn, args.name)

    if not _change(args, "operator_removed", change):
        raise _no_such(args.name)
    emit({"operator": args.name, "removed": True})
    return 0


def cmd_operators_list(args: argparse.Namespace) -> int:
    from handover.store import operators as operator_store

    async def work(node: Node) -> list[dict[str, Any]]:
        async with node.db.connection() as conn:
            rows = await operator_store.all_operators(conn)
        now = node.clock()
        for row in rows:
            row["expired"] = row["expires_at"] is not None and row["expires_at"] <= now
        return rows

    emit(with_node(node_dir(args), work))
    return 0


def register(sub: Commands) -> None:
    ops = sub.add_parser("operators", help="local API users").add_subparsers(
        dest="operators_cmd", required=True
    )

    def command(name: str, help_text: str, func: Any, *, named: bool = True) -> Any:
        p = ops.add_parser(name, help=help_text)
        p.add_argument("--dir", required=True, help="node directory")
        if named:
            p.add_argument("name", help="the operator's name")
        p.set_defaults(func=func)
        return p

    expiry = "the token ends after N days (fractions allowed; default: it does not expire)"
    p = command("add", "add an operator; prints its bearer token once, last", cmd_operators_add)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--expires-days", type=float, metavar="N", help=expiry)
    operators_ui.add_arguments(p)
    p = command(
        "passwd", "set the web sign-in password (and --totp)", operators_ui.cmd_operators_passwd
    )
    operators_ui.add_arguments(p, passwd=True)
    command("list", "operators, roles, disabled, token expiry", cmd_operators_list, named=False)
    command("disable", "refuse the operator's token until enabled", cmd_operators_disable)
    command("enable", "accept the operator's token again", cmd_operators_enable)
    command("remove", "delete the operator (audit entries keep the name)", cmd_operators_remove)
    p = command(
        "token",
        "issue a new bearer token (printed once, last); the old one ends",
        cmd_operators_token,
    )
    p.add_argument("--expires-days", type=float, metavar="N", help=expiry)
