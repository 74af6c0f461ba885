"""Commands for integrators and operators: `cases new-ref` (offline), `cases owed`,
`packets list` and `audit list` (through the local API, paged with the same
filters as `GET /api/v1/packets`, `/api/v1/owed` and `/api/v1/audit`)."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlencode

from handover.cli.api_commands import _answer, _api_options, _client
from handover.cli.args import Commands, subcommands
from handover.workflow.case_refs import new_case_ref


def cmd_new_ref(args: argparse.Namespace) -> int:
    for _ in range(args.count):
        sys.stdout.write(new_case_ref() + "\n")
    return 0


def cmd_owed(args: argparse.Namespace) -> int:
    return _answer(*_client(args).get(f"/api/v1/owed?{urlencode({'limit': args.limit})}"))


def _query(args: argparse.Namespace, names: dict[str, str]) -> str:
    chosen = {param: getattr(args, attr) for param, attr in names.items()}
    return urlencode({k: v for k, v in chosen.items() if v is not None})


def cmd_packets_list(args: argparse.Namespace) -> int:
    query = _query(args, {"status": "status", "case": "case", "after": "after", "limit": "limit"})
    return _answer(*_client(args).get(f"/api/v1/packets?{query}"))


def cmd_audit_list(args: argparse.Namespace) -> int:
    names = {n: n for n in ("operator", "op", "since", "until", "case", "pid", "after", "limit")}
    return _answer(*_client(args).get(f"/api/v1/audit?{_query(args, names)}"))


def register(sub: Commands) -> None:
    """Adds to `cases` and `audit` (registered before), and registers `packets`."""
    cases = subcommands(sub.choices["cases"])
    p = cases.add_parser(
        "new-ref",
        help="mint a new shared case reference (the agency opening the handover, before"
        " its first packet)",
    )
    p.add_argument("--count", type=int, default=1, choices=range(1, 101), metavar="N")
    p.set_defaults(func=cmd_new_ref)
    p = cases.add_parser("owed", help="answers this node owes other agencies, and by when")
    _api_options(p)
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_owed)

    packets = sub.add_parser("packets", help="packets this node sent").add_subparsers(
        dest="packets_cmd", required=True
    )
    p = packets.add_parser("list", help="sent packets, newest first, with their deliveries")
    _api_options(p)
    p.add_argument("--status", choices=("pending", "delivered", "rejected", "expired"))
    p.add_argument("--case", help="shared case reference")
    p.add_argument("--after", help="the next_after of the previous page")
    p.add_argument("--limit", type=int)
    p.set_defaults(func=cmd_packets_list)

    audit = subcommands(sub.choices["audit"])
    p = audit.add_parser("list", help="audit entries with filters (role auditor or admin)")
    _api_options(p)
    p.add_argument("--operator", help="entries made by this operator")
    p.add_argument("--op", help="entry kind: disclosure, collection, consultation, ...")
    p.add_argument("--since", help="YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ (inclusive)")
    p.add_argument("--until", help="YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ (exclusive)")
    p.add_argument("--case", help="shared case reference")
    p.add_argument("--pid", help="packet id")
    p.add_argument("--after", type=int, help="the next_after of the previous page")
    p.add_argument("--limit", type=int)
    p.set_defaults(func=cmd_audit_list)
