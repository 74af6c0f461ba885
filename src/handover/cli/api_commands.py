"""`handover` commands that work through a running node's local API.

send, status, inbox, cases list|show|overdue|local-id, export subject,
reviews list|decide, rectify, rectifications. Each prints the node's JSON
answer; an answer of 400 or above also goes to stderr as one line, exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from handover.cli.args import Commands, Parser, api_node_dir
from handover.cli.output import EXIT_PENDING, emit, render_page
from handover.client import Client, is_pending, segment
from handover.node.config import load_config
from handover.protocol.attachments import media_type_for
from handover.protocol.canonical import strict_json_loads
from handover.protocol.errors import ConfigError, HandoverError

PID_HELP = "packet id (last, after `--`, if it starts with -)"
INBOX_COLUMNS = render_page(
    ["pid", "sender", "schema", "case_ref", "received_at", "erased", "restricted"]
)
CASE_COLUMNS = render_page(
    ["case_ref", "local_id", "updated_at", "release_date", "sent", "received", "overdue"]
)


def _client(args: argparse.Namespace) -> Client:
    token = args.token or os.environ.get("HANDOVER_TOKEN", "")
    if not token:
        raise ConfigError("give --token or set HANDOVER_TOKEN (from `handover operators add`)")
    return Client(args.api or load_config(api_node_dir(args)).local_url, token)


# Refusals whose node message names HTTP parameters: said in the CLI's own flags.
CLI_WORDS = {
    "justification_required": "this needs --justification TEXT (why; recorded in the audit log)",
    "justification_too_long": "--justification is at most 1000 characters",
    "reason_required": "this outcome needs --reason TEXT",
    "unauthorized": "the token was refused: give --token TOKEN or set HANDOVER_TOKEN",
}


def _answer(status: int, data: Any, render: Callable[[Any], str] | None = None) -> int:
    emit(data, render if status < 400 else None)
    if status >= 400:
        message = data.get("message", data.get("error")) if isinstance(data, dict) else data
        code = data.get("error") if isinstance(data, dict) else None
        if isinstance(code, str) and code in CLI_WORDS:
            message = f"{CLI_WORDS[code]} ({code})"
        sys.stderr.write(f"handover: the node answered {status}: {message}\n")
        return 1
    return 0


def _read_json(path: str) -> Any:
    try:
        return strict_json_loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except HandoverError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc


# --- packets -----------------------------------------------------------------------------


def cmd_send(args: argparse.Namespace) -> int:
    api = _client(args)
    payload = {
        "to": args.to,
        "schema": args.schema,
        "body": _read_json(args.body),
        "justification": args.justification,
    }
    if args.attach:
        aids = []
        for name in args.attach:
            path = Path(name)
            status, answer = api.upload_file(path, media_type_for(path.name))
            if status != 201:
                return _answer(status, answer)
            aids.append(answer["aid"])
        payload["attachments"] = aids
    status, answer = api.post("/api/v1/packets", payload)
    if args.pid_only and status == 202:
        for packet in answer["packets"]:
            sys.stdout.write(packet["pid"] + "\n")
        return 0
    return _answer(status, answer)


def cmd_status(args: argparse.Namespace) -> int:
    """A sent packet's deliveries; with --wait, exit EXIT_PENDING when one is still
    pending at the deadline."""
    api = _client(args)
    deadline = time.monotonic() + args.wait
    while True:
        status, answer = api.get(f"/api/v1/packets/{segment(args.pid)}")
        pending = status == 200 and is_pending(answer)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    code = _answer(status, answer)
    if pending and args.wait > 0:
        waiting = [d for d in answer["deliveries"] if d["status"] == "pending"]
        for delivery in waiting:
            error = delivery.get("last_error")
            sys.stderr.write(
                f"handover: delivery to {delivery['node']} still pending after {args.wait:g} s"
                f" ({delivery['attempts']} attempts"
                + (f"; last error: {error})\n" if error else ")\n")
            )
        return EXIT_PENDING
    return code


def cmd_inbox(args: argparse.Namespace) -> int:
    api = _client(args)
    if args.pid is None:
        page = api.get("/api/v1/inbox")
        return _answer(page.status, page.data, INBOX_COLUMNS)
    if not args.justification:
        raise ConfigError("reading a body needs --justification TEXT (recorded in the audit log)")
    justification = quote(args.justification or "")
    status, answer = api.get(f"/api/v1/inbox/{args.pid}?justification={justification}")
    if status == 200 and args.save and answer.get("attachments"):
        save = Path(args.save)
        save.mkdir(parents=True, exist_ok=True)
        for item in answer["attachments"]:
            if item["name"] in (".", "..") or (save / item["name"]).exists():
                raise ConfigError(f"{save / item['name']} exists or is not a file name")
            path = f"/api/v1/inbox/{args.pid}/attachments/{item['aid']}"
            got, error = api.download_file(
                f"{path}?justification={justification}", save / item["name"]
            )
            if got != 200:
                return _answer(got, error)
            item["saved"] = str(save / item["name"])
    return _answer(status, answer)


# --- cases and subject access ----------------------------------------------------------------


def cmd_cases(args: argparse.Namespace) -> int:
    api = _client(args)
    if args.cases_cmd == "list":
        page = api.get("/api/v1/cases")
        return _answer(page.status, page.data, CASE_COLUMNS)
    if args.cases_cmd == "show":
        return _answer(*api.get(f"/api/v1/cases/{quote(args.ref, safe='')}"))
    if args.cases_cmd == "overdue":
        return _answer(*api.get("/api/v1/overdue"))
    if args.cases_cmd == "assign":
        payload = {
            "operators": args.operator,
            "teams": args.team,
            "justification": args.justification,
        }
        return _answer(*api.put(f"/api/v1/cases/{quote(args.ref, safe='')}/assignment", payload))
    path = f"/api/v1/cases/{quote(args.ref, safe='')}/local-id"
    return _answer(*api.put(path, {"local_id": args.local_id}))


def cmd_export_subject(args: argparse.Namespace) -> int:
    """Art 14 export through the local API: FILE_PREFIX.json and FILE_PREFIX.md."""
    from handover.workflow.subject_report import render_markdown

    api = _client(args)
    query = urlencode({"justification": args.justification, "format": "json"})
    status, answer = api.get(f"/api/v1/cases/{quote(args.case, safe='')}/export?{query}")
    if status != 200:
        return _answer(status, answer)
    safe_ref = re.sub(r"[^A-Za-z0-9._-]", "_", answer["case"]["case_ref"])
    prefix = args.out or f"subject-{safe_ref}"
    written = {}
    for suffix, text in (
        ("json", json.dumps(answer, indent=2, ensure_ascii=False, sort_keys=True) + "\n"),
        ("markdown", render_markdown(answer)),
    ):
        path = Path(f"{prefix}.{'md' if suffix == 'markdown' else suffix}").absolute()
        try:
            # Personal data: readable by the owner only, like the node's keys; never
            # written through a symbolic link (it could point anywhere).
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            fd = os.open(path, flags, 0o600)
            os.fchmod(fd, 0o600)  # also when the file was already there
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            if path.is_symlink():
                raise ConfigError(
                    f"{path} is a symbolic link: the export is not written through links"
                ) from exc
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
        written[suffix] = str(path)
    emit(written)
    return 0


# --- retention reviews and rectification -----------------------------------------------------


def cmd_reviews(args: argparse.Namespace) -> int:
    api = _client(args)
    if args.reviews_cmd == "list":
        return _answer(*api.get("/api/v1/reviews"))
    if args.reviews_cmd == "proposals":
        return _answer(*api.get("/api/v1/reviews/proposals"))
    selector = {
        key: value
        for key, value in (("direction", args.direction), ("sender", args.sender))
        if value is not None
    }
    if args.reviews_cmd == "approve":
        path = f"/api/v1/reviews/{args.pid}/approve"
        return _answer(*api.post(path, {"justification": args.justification, **selector}))
    if args.outcome == "LIFT":
        path = f"/api/v1/packets/{args.pid}/restriction/lift"
        return _answer(*api.post(path, {"justification": args.justification, **selector}))
    payload: dict[str, Any] = {"outcome": args.outcome, "justification": args.justification}
    if args.review_at is not None:
        payload["review_at"] = args.review_at
    if args.reason is not None:
        payload["reason"] = args.reason
    if args.reason_code is not None:
        payload["reason_code"] = args.reason_code
    return _answer(*api.post(f"/api/v1/reviews/{args.pid}", payload | selector))


def cmd_rectify(args: argparse.Namespace) -> int:
    api = _client(args)
    payload: dict[str, Any] = {
        "action": args.action,
        "reason": args.reason,
        "justification": args.justification,
    }
    if args.explanation is not None:
        payload["explanation"] = args.explanation
    if args.corrected_body is not None:
        payload["corrected_body"] = _read_json(args.corrected_body)
    if args.answers is not None:
        payload["answers"] = args.answers
    if args.attach:
        aids = []
        for name in args.attach:
            path = Path(name)
            status, answer = api.upload_file(path, media_type_for(path.name))
            if status != 201:
                return _answer(status, answer)
            aids.append(answer["aid"])
        payload["attachments"] = aids
    return _answer(*api.post(f"/api/v1/packets/{args.pid}/rectify", payload))


def cmd_rectifications(args: argparse.Namespace) -> int:
    api = _client(args)
    return _answer(*api.get(f"/api/v1/packets/{args.pid}/rectifications"))


# --- parser ----------------------------------------------------------------------------------


def _api_options(p: Parser) -> None:
    p.add_argument("--dir", default=".", help="node directory (for the API URL)")
    p.add_argument("--api", help="local API base URL (default: from the node's settings)")
    p.add_argument("--token", help="bearer token (default: $HANDOVER_TOKEN)")


def register_cases(sub: Commands) -> None:
    """cases list|show|overdue|local-id|assign, export subject."""
    cases = sub.add_parser("cases", help="cases: timelines, overdue items, local ids")
    cases_sub = cases.add_subparsers(dest="cases_cmd", required=True)
    p = cases_sub.add_parser("list", help="cases this node holds")
    _api_options(p)
    p = cases_sub.add_parser("show", help="a case's timeline, consent, expectations, agreement")
    _api_options(p)
    p.add_argument("ref", help="shared case reference or local id")
    p = cases_sub.add_parser("overdue", help="continuity-of-care answers past their deadline")
    _api_options(p)
    p = cases_sub.add_parser("local-id", help="map a shared case reference to a local id")
    _api_options(p)
    p.add_argument("ref")
    p.add_argument("local_id")
    p = cases_sub.add_parser(
        "assign", help="assign a case to operators and teams (admin; least privilege)"
    )
    _api_options(p)
    p.add_argument("ref")
    p.add_argument("--operator", action="append", default=[], help="an operator (repeatable)")
    p.add_argument("--team", action="append", default=[], help="a team (repeatable)")
    p.add_argument("--justification", required=True, help="why (logged in the audit entry)")
    cases.set_defaults(func=cmd_cases)

    export = sub.add_parser("export", help="exports for data subjects")
    export_sub = export.add_subparsers(dest="export_cmd", required=True)
    p = export_sub.add_parser(
        "subject", help="what this node holds for a case (LED Art 14), as JSON and Markdown"
    )
    _api_options(p)
    p.add_argument("--case", required=True, help="shared case reference or local id")
    p.add_argument(
        "--justification", required=True, help="why the export is made (logged as a consultation)"
    )
    p.add_argument(
        "--out",
        metavar="FILE_PREFIX",
        help="write FILE_PREFIX.json and FILE_PREFIX.md"
        " (default: subject-<case_ref> in the current directory)",
    )
    p.set_defaults(func=cmd_export_subject)


def register_lifecycle(sub: Commands) -> None:
    """reviews list|decide|approve, rectify, rectifications."""
    reviews = sub.add_parser("reviews", help="retention reviews that are due (LED Art 5)")
    reviews_sub = reviews.add_subparsers(dest="reviews_cmd", required=True)
    p = reviews_sub.add_parser("list", help="held packets whose review is due")
    _api_options(p)
    p = reviews_sub.add_parser("proposals", help="early ERASE / EXTEND awaiting a second admin")
    _api_options(p)
    p = reviews_sub.add_parser("decide", help="EXTEND, RESTRICT or ERASE a packet; LIFT (admin)")
    _api_options(p)
    p.add_argument("pid", help=PID_HELP)
    p.add_argument("--outcome", required=True, choices=("EXTEND", "RESTRICT", "ERASE", "LIFT"))
    p.add_argument("--justification", required=True, help="why (logged in the audit entry)")
    p.add_argument("--review-at", metavar="YYYY-MM-DD", help="next review (EXTEND; RESTRICT)")
    p.add_argument("--reason", help="why the packet is restricted (RESTRICT)")
    p.add_argument(
        "--reason-code",
        help="ERASE or EXTEND before the review is due (an admin's proposal): why",
    )
    p.add_argument("--direction", choices=("sent", "received"), help="if the pid is ambiguous")
    p.add_argument("--sender", help="the sender, if several sent a packet with this pid")
    p = reviews_sub.add_parser(
        "approve", help="approve another admin's proposal to ERASE or EXTEND early (admin)"
    )
    _api_options(p)
    p.add_argument("pid", help=PID_HELP)
    p.add_argument("--justification", required=True, help="why (logged in the audit entry)")
    p.add_argument("--direction", choices=("sent", "received"), help="if the pid is ambiguous")
    p.add_argument("--sender", help="the sender, if several sent a packet with this pid")
    reviews.set_defaults(func=cmd_reviews)

    p = sub.add_parser(
        "rectify", help="rectify, erase or restrict a sent packet and notify its recipients"
    )
    _api_options(p)
    p.add_argument("pid", help=PID_HELP)
    p.add_argument("--action", required=True, choices=("RECTIFY", "ERASE", "RESTRICT", "LIFT"))
    p.add_argument("--reason", required=True, help="e.g. INACCURATE, UNLAWFULLY_PROCESSED")
    p.add_argument("--justification", required=True, help="why (logged in the audit entries)")
    p.add_argument("--explanation", help="free text sent with the notice")
    p.add_argument("--corrected-body", metavar="FILE", help="the corrected body (RECTIFY)")
    p.add_argument(
        "--answers", metavar="REQUEST_PID", help="the recipient's rectification request it answers"
    )
    p.add_argument(
        "--attach",
        action="append",
        metavar="FILE",
        help="RECTIFY: a file that replaces the packet's attachments (repeatable)",
    )
    p.set_defaults(func=cmd_rectify)

    p = sub.add_parser(
        "rectifications", help="a sent packet's rectifications and each recipient's acknowledgement"
    )
    _api_options(p)
    p.add_argument("pid", help=PID_HELP)
    p.set_defaults(func=cmd_rectifications)


def register_packets(sub: Commands) -> None:
    """send, status, inbox."""
    p = sub.add_parser("send", help="submit a packet through the node's local API")
    _api_options(p)
    p.add_argument("--to", required=True, action="append", help="recipient node id")
    p.add_argument("--schema", required=True)
    p.add_argument("--body", required=True, help="BODY.json")
    p.add_argument("--justification", required=True, help="purpose and case reference")
    p.add_argument("--pid-only", action="store_true", help="print only the packet id(s)")
    p.add_argument("--attach", action="append", metavar="FILE", help="attach a file (repeatable)")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("status", help="delivery status of a sent packet")
    _api_options(p)
    p.add_argument("pid")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS until no delivery is pending; exit 3 if one still is",
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("inbox", help="list received packets, or read one (needs --justification)")
    _api_options(p)
    p.add_argument("pid", nargs="?")
    p.add_argument("--justification")
    p.add_argument("--save", metavar="DIR", help="write the packet's attachments into DIR")
    p.set_defaults(func=cmd_inbox)
