"""Web sign-in credentials on the command line: `operators add ... --password-stdin
[--totp]` and `operators passwd --dir DIR NAME --password-stdin [--totp|--no-totp]`.

The password is read from the first line of standard input (never from an
argument, which other users may see) and stored as an Argon2id hash. `--totp`
turns on the second factor and prints its `otpauth://` URI (before the bearer
token, which stays the last line of `operators add`).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from handover.cli.admin import with_node
from handover.cli.args import node_dir
from handover.cli.output import CliError
from handover.node import totp

if TYPE_CHECKING:
    from handover.node.runtime import Node

MIN_PASSWORD = 10
MAX_PASSWORD = 1024


def add_arguments(p: argparse.ArgumentParser, *, passwd: bool = False) -> None:
    p.add_argument(
        "--password-stdin",
        action="store_true",
        required=passwd,
        help="read a password for the web interface from the first line of standard input",
    )
    p.add_argument(
        "--totp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sign-in also asks for a one-time code; prints the otpauth:// URI to enrol",
    )


def read_password(args: argparse.Namespace) -> str | None:
    """The password given on standard input (None without --password-stdin).

    Raises:
        CliError: too short, too long, or --totp without a password.
    """
    if not args.password_stdin:
        if args.totp:
            raise CliError("--totp needs a password: add --password-stdin")
        return None
    password = sys.stdin.readline().rstrip("\r\n")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise CliError(
            f"the password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters (one line)"
        )
    return password


def apply(args: argparse.Namespace, password: str | None) -> None:
    """Store the password (ending the operator's web sessions) and the second-factor
    choice; prints the otpauth URI when --totp turned it on.

    Raises:
        CliError: no operator of that name.
    """
    if password is None:
        return

    async def work(node: Node) -> tuple[bool, str]:
        if not await node.web_sessions.set_password(args.name, password, by="cli"):
            return False, ""
        if args.totp is None:
            return True, ""
        secret = await node.web_sessions.set_totp(args.name, bool(args.totp))
        uri = "" if secret is None else totp.otpauth_uri(secret, args.name, node.config.node)
        return True, uri

    found, uri = with_node(node_dir(args), work)
    if not found:
        raise CliError(f"there is no operator named {args.name} (see `handover operators list`)")
    if uri:
        sys.stdout.write(f"second factor on; enrol this URI in an authenticator app:\n{uri}\n")


def cmd_operators_passwd(args: argparse.Namespace) -> int:
    apply(args, read_password(args))
    sys.stdout.write(f"password of operator {args.name} set; their web sessions ended\n")
    return 0
