"""The `handover` argument parser, and what every command's arguments share.

A packet id is 22 characters of base64url (16 random bytes), so one pid in 64
begins with `-`. Plain argparse takes such a token for an option it does not
know, and `handover status -Xq...` fails with "the following arguments are
required: pid". :class:`Parser` reads a token shaped like a pid as an argument
(a positional, or an option's value) unless it is one of the parser's own
option strings, so a pid works wherever it stands. `--` still ends the
options, as with any argparse command.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

from handover.protocol.errors import ConfigError

# What a packet id that begins with `-` looks like (protocol/packet.py `new_pid`).
DASH_PID = re.compile(r"-[A-Za-z0-9_-]{21}")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that takes a pid beginning with `-` for an argument.

    Subcommand parsers are of the same class (argparse's `add_subparsers`
    makes them with the class of their parent).
    """

    def _parse_optional(
        self, arg_string: str
    ) -> tuple[argparse.Action | None, str, str | None] | None:
        # Called by argparse for every token, to tell options from arguments;
        # None means "an argument". An option string that the pid is a prefix of
        # (an abbreviation) still wins: none of ours is that long.
        if DASH_PID.fullmatch(arg_string) and not any(
            option.startswith(arg_string) for option in self._option_string_actions
        ):
            return None
        return super()._parse_optional(arg_string)


def parse(parser: Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    """`parser.parse_args`, with an unknown option (a typo) shown with the usage of
    the subcommand it was given to (found by following the chosen subcommands)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        used: argparse.ArgumentParser = parser
        while True:
            action = next(
                (a for a in used._actions if isinstance(a, argparse._SubParsersAction)), None
            )
            chosen = None if action is None else getattr(args, action.dest, None)
            if action is None or chosen not in action.choices:
                break
            used = action.choices[chosen]
        used.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def subcommands(parser: argparse.ArgumentParser) -> Commands:
    """The subcommands of a command made with `add_subparsers` (to add more to it)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise LookupError(f"{parser.prog} has no subcommands")


Commands: TypeAlias = "argparse._SubParsersAction[Parser]"
"""What `Parser.add_subparsers` returns: each module registers its commands on it."""


def node_dir(args: argparse.Namespace) -> Path:
    """The node directory a command was given (`--dir`), absolute."""
    return Path(args.dir).resolve()


def api_node_dir(args: argparse.Namespace) -> Path:
    """The node directory of a command that talks to the local API: a missing
    `handover.toml` asks for `--dir` or `--api`, not for `handover init` (the
    person is usually a caseworker on another machine, not the operator)."""
    directory = node_dir(args)
    if not (directory / "handover.toml").is_file():
        raise ConfigError(
            f"no node settings (handover.toml) in {directory}: give --dir NODE_DIR"
            " (the node's directory) or --api URL (the node's local API)"
        )
    return directory
