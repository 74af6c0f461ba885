"""The `handover` command line: one parser for every command, and the exit codes.

Commands live by what they need: cli/offline.py (no node: `keys init`,
`packet seal|open|verify`, `schemas`), cli/admin.py (a node directory on this
machine: `init`, `serve`, `peers`, `keys rotate|fingerprint`, `audit verify`),
cli/operators.py (`operators`) and cli/api_commands.py (a running node's local API).
Output (cli/output.py) is for people on a terminal and JSON otherwise (`--json`,
`--human`); an error is one line on stderr and a non-zero exit (the codes are in
cli/output.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from handover import __version__
from handover.cli import (
    admin,
    api_commands,
    backup,
    integrator,
    legal,
    offline,
    operators,
    partners,
    storage,
    webhooks,
)
from handover.cli.args import Parser, parse
from handover.cli.output import EXIT_ERROR, CliError, add_output_options, set_mode
from handover.protocol.errors import HandoverError


def build_parser() -> Parser:
    parser = Parser(prog="handover", description="Signed, end-to-end encrypted handover packets.")
    parser.add_argument("--version", action="version", version=f"handover {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The order here is the order of `handover --help`.
    keys_sub = offline.register_keys(sub)
    admin.register_keys(keys_sub)
    storage.register(keys_sub)
    offline.register_packet(sub)
    admin.register_init(sub)
    offline.register_schemas(sub)
    admin.register_node(sub)
    operators.register(sub)
    partners.register_peers(sub)
    partners.register_profile(sub)
    backup.register(sub)
    webhooks.register(sub)
    api_commands.register_cases(sub)
    api_commands.register_lifecycle(sub)
    api_commands.register_packets(sub)
    integrator.register(sub)
    legal.register(sub)
    add_output_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    set_mode(getattr(args, "json", False), getattr(args, "human", False))
    try:
        code: int = args.func(args)
    except CliError as exc:
        sys.stderr.write(f"handover: {exc}\n")
        return exc.code
    except HandoverError as exc:
        sys.stderr.write(f"handover: {type(exc).__name__}: {exc}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
