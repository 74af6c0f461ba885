"""`handover` commands that set up, run and operate a node.

init, serve, peers add|list, operators add|list, keys rotate,
audit verify, send, status, inbox, cases, export subject,
reviews list|decide, rectify, rectifications
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from handover.node import keystore
from handover.node.config import AGENCY_KINDS, load_config, write_config
from handover.node.errors import TransportError
from handover.protocol.canonical import b64u_encode, strict_json_loads
from handover.protocol.crypto import random_bytes
from handover.protocol.errors import ConfigError, HandoverError, InvalidKeyset
from handover.protocol.timeutil import now_ms
from handover.store import peers as peer_store

T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir).resolve()


async def _with_node_db(directory: Path, work: Callable[[Any], Awaitable[T]]) -> T:
    """Open the node's database (attaching to a running embedded server) for a CLI command."""
    from handover.node.runtime import Node
    from handover.web.transport import HttpTransport

    config = load_config(directory)
    node = await Node.open(directory, transport=HttpTransport(config.delivery_timeout_s))
    try:
        return await work(node)
    finally:
        await node.close()


# --- init / serve ------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    directory = _dir(args)
    directory.mkdir(parents=True, exist_ok=True)
    keys_dir = directory / "keys"
    if (directory / "handover.toml").exists() or (keys_dir / keystore.ROOT_FILE).exists():
        raise ConfigError(f"{directory} already holds a node; refusing to overwrite it")
    settings: dict[str, object] = {
        "node": args.node,
        "kind": args.kind,
        "listen": args.listen,
        "public_url": args.public_url or "",
        "dsn": args.dsn or "",
    }
    keys = keystore.init_keys(keys_dir, args.node, now_ms())
    keystore.storage_key(keys_dir)
    write_config(directory, settings)
    config = load_config(directory)
    _emit(
        {
            "node": keys.node,
            "kind": config.kind,
            "fingerprint": keys.fingerprint,
            "keyset_url": config.url + "/.well-known/handover/keyset",
            "config": str(directory / "handover.toml"),
        }
    )
    return 0


def bound_native_heap() -> None:
    """Keep large packet buffers out of the C heap (glibc only).

    glibc raises its mmap threshold each time a large block is freed, after
    which buffers of a few hundred KiB come from the heap and its memory is not
    given back: with large packets a node's RSS then keeps the high-water mark
    of every copy it ever held (measured in bench/: 650 MB against 393 MB). A
    fixed 128 KiB threshold keeps such buffers mapped and returned when freed.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD (also stops its adjustment)
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # another C library: leave its defaults
        return


def cmd_serve(args: argparse.Namespace) -> int:
    from handover.node import logging as hlog
    from handover.web.server import serve

    config = load_config(_dir(args))
    hlog.configure(config.log_format, config.log_level)
    bound_native_heap()
    try:
        import uvloop
    except ImportError:  # the standard loop works too, only slower
        _run(serve(_dir(args)))
    else:
        uvloop.run(serve(_dir(args)))
    return 0


# --- peers ---------------------------------------------------------------------------


def cmd_peers_add(args: argparse.Namespace) -> int:
    async def work(node: Any) -> dict[str, Any]:
        try:
            keyset = await node.directory.pin(args.url, args.fingerprint, args.kind)
        except TransportError as exc:
            raise ConfigError(f"cannot fetch the keyset from {args.url}: {exc}") from exc
        except InvalidKeyset as exc:
            raise ConfigError(f"the keyset at {args.url} was refused: {exc}") from exc

        async def log_pin(conn: Any, appender: Any) -> None:
            appender.append(
                "key",
                action="peer_pinned",
                counterpart=keyset.node,
                fingerprint=keyset.fingerprint,
                serial=keyset.serial,
                org=node.config.node,
            )

        await node.writer.run(log_pin)
        return {
            "node": keyset.node,
            "url": args.url.rstrip("/"),
            "fingerprint": keyset.fingerprint,
            "kind": args.kind,
            "serial": keyset.serial,
        }

    _emit(_run(_with_node_db(_dir(args), work)))
    return 0


def cmd_peers_list(args: argparse.Namespace) -> int:
    async def work(node: Any) -> list[dict[str, Any]]:
        return [
            {
                "node": p.node,
                "url": p.url,
                "fingerprint": p.fingerprint,
                "kind": p.kind,
                "serial": None if p.keyset is None else p.keyset.serial,
                "keyset_exp": None if p.keyset is None else p.keyset.exp,
                "last_error": p.last_error,
            }
            for p in node.directory.peers.values()
        ]

    _emit(_run(_with_node_db(_dir(args), work)))
    return 0


# --- operators -------------------------------------------------------------------------


def cmd_operators_add(args: argparse.Namespace) -> int:
    from handover.node.auth import token_hash
    from handover.store import operators as operator_store

    token = "hov_" + b64u_encode(random_bytes(32))

    async def work(node: Any) -> None:
        async def job(conn: Any, appender: Any) -> None:
            await operator_store.add(conn, args.name, args.role, token_hash(token), now_ms())
            appender.append(
                "key",
                action="operator_added",
                operator=args.name,
                role=args.role,
                org=node.config.node,
            )

        await node.writer.run(job)

    _run(_with_node_db(_dir(args), work))
    sys.stdout.write(
        f"operator {args.name} ({args.role}) added; the bearer token below is shown only once:\n"
    )
    sys.stdout.write(token + "\n")
    return 0


def cmd_operators_list(args: argparse.Namespace) -> int:
    from handover.store import operators as operator_store

    async def work(node: Any) -> list[dict[str, Any]]:
        async with node.db.connection() as conn:
            return await operator_store.all_operators(conn)

    _emit(_run(_with_node_db(_dir(args), work)))
    return 0


# --- keys rotate ------------------------------------------------------------------------


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    directory = _dir(args)
    config = load_config(directory)
    old = keystore.load_keys(config.keys_dir)
    new = keystore.rotate(old, now_ms())

    async def work(node: Any) -> None:
        async def job(conn: Any, appender: Any) -> None:
            appender.append(
                "key",
                action="rotated",
                serial=new.keyset.serial,
                retired=[k.kid for k in old.keyset.keys if k.status == "active"],
                active=[k.kid for k in new.keyset.keys if k.status == "active"],
                org=config.node,
            )
            await peer_store.notify_keys(conn)

        await node.writer.run(job)

    _run(_with_node_db(directory, work))
    _emit(
        {
            "node": new.node,
            "serial": new.keyset.serial,
            "active": [k.kid for k in new.keyset.keys if k.status == "active"],
            "retired": [k.kid for k in new.keyset.keys if k.status == "retired"],
        }
    )
    return 0


# --- audit verify ------------------------------------------------------------------------


def cmd_audit_verify(args: argparse.Namespace) -> int:
    async def work(node: Any) -> dict[str, Any]:
        report: dict[str, Any] = await node.audit.verify(peers=args.peers)
        return report

    report = _run(_with_node_db(_dir(args), work))
    _emit(report)
    if report["ok"]:
        return 0
    chain = report["chain"]
    if not chain["ok"]:
        sys.stderr.write(
            f"handover: audit chain broken at entry {chain['bad_seq']}: {chain['problem']}\n"
        )
    for peer in report.get("peers", []):
        if not peer["ok"]:
            sys.stderr.write(f"handover: peer {peer['node']}: {peer['problem']}\n")
            for statement in peer.get("conflict", []):
                sys.stderr.write(
                    f"  signed {statement['kind']} seq={statement['seq']}"
                    f" head={statement['head']}: {statement['signed']}\n"
                )
    return 1


# --- local API client commands --------------------------------------------------------------


def _api(args: argparse.Namespace) -> tuple[str, str]:
    token = args.token or os.environ.get("HANDOVER_TOKEN", "")
    if not token:
        raise ConfigError("give --token or set HANDOVER_TOKEN (from `handover operators add`)")
    base = args.api or load_config(_dir(args)).url
    return base.rstrip("/"), token


def _call(method: str, url: str, token: str, payload: object = None) -> tuple[int, Any]:
    import aiohttp

    async def go() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, url, json=payload, headers={"Authorization": f"Bearer {token}"}
            ) as resp,
        ):
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, {"error": text[:200]}

    try:
        return _run(go())
    except (aiohttp.ClientError, OSError) as exc:
        raise ConfigError(f"cannot reach the node's API at {url}: {exc}") from exc


def _answer(status: int, data: Any) -> int:
    _emit(data)
    if status >= 400:
        message = data.get("message", data.get("error")) if isinstance(data, dict) else data
        sys.stderr.write(f"handover: the node answered {status}: {message}\n")
        return 1
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    base, token = _api(args)
    try:
        body = strict_json_loads(Path(args.body).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {args.body}: {exc.strerror}") from exc
    except HandoverError as exc:
        raise ConfigError(f"{args.body} is not valid JSON: {exc}") from exc
    payload = {
        "to": args.to,
        "schema": args.schema,
        "body": body,
        "justification": args.justification,
    }
    status, answer = _call("POST", f"{base}/api/v1/packets", token, payload)
    if args.pid_only and status == 202:
        for packet in answer["packets"]:
            sys.stdout.write(packet["pid"] + "\n")
        return 0
    return _answer(status, answer)


def cmd_status(args: argparse.Namespace) -> int:
    import time

    base, token = _api(args)
    deadline = time.monotonic() + args.wait
    while True:
        status, answer = _call("GET", f"{base}/api/v1/packets/{args.pid}", token)
        pending = status == 200 and any(d["status"] == "pending" for d in answer["deliveries"])
        if not pending or time.monotonic() >= deadline:
            return _answer(status, answer)
        time.sleep(0.2)


def cmd_inbox(args: argparse.Namespace) -> int:
    base, token = _api(args)
    if args.pid is None:
        return _answer(*_call("GET", f"{base}/api/v1/inbox", token))
    from urllib.parse import quote

    url = f"{base}/api/v1/inbox/{args.pid}?justification={quote(args.justification or '')}"
    return _answer(*_call("GET", url, token))


def cmd_cases(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    base, token = _api(args)
    if args.cases_cmd == "list":
        return _answer(*_call("GET", f"{base}/api/v1/cases", token))
    if args.cases_cmd == "show":
        return _answer(*_call("GET", f"{base}/api/v1/cases/{quote(args.ref, safe='')}", token))
    if args.cases_cmd == "overdue":
        return _answer(*_call("GET", f"{base}/api/v1/overdue", token))
    url = f"{base}/api/v1/cases/{quote(args.ref, safe='')}/local-id"
    return _answer(*_call("PUT", url, token, {"local_id": args.local_id}))


def cmd_export_subject(args: argparse.Namespace) -> int:
    """Art 14 export through the local API: FILE_PREFIX.json and FILE_PREFIX.md."""
    import re
    from urllib.parse import quote, urlencode

    from handover.workflow.subject_report import render_markdown

    base, token = _api(args)
    query = urlencode({"justification": args.justification, "format": "json"})
    url = f"{base}/api/v1/cases/{quote(args.case, safe='')}/export?{query}"
    status, answer = _call("GET", url, token)
    if status != 200:
        return _answer(status, answer)
    safe_ref = re.sub(r"[^A-Za-z0-9._-]", "_", answer["case"]["case_ref"])
    prefix = args.out or f"subject-{safe_ref}"
    written = {}
    for suffix, text in (
        ("json", json.dumps(answer, indent=2, ensure_ascii=False, sort_keys=True) + "\n"),
        ("markdown", render_markdown(answer)),
    ):
        path = Path(f"{prefix}.{'md' if suffix == 'markdown' else suffix}").resolve()
        try:
            # Personal data: readable by the owner only, like the node's keys.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # also when the file was already there
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
        written[suffix] = str(path)
    _emit(written)
    return 0


def _api_options(p: Any) -> None:
    p.add_argument("--dir", default=".", help="node directory (for the API URL)")
    p.add_argument("--api", help="local API base URL (default: from the node's settings)")
    p.add_argument("--token", help="bearer token (default: $HANDOVER_TOKEN)")


# --- parser ------------------------------------------------------------------------------


def register(sub: Any) -> None:
    p = sub.add_parser("init", help="set up a node directory: settings and keys")
    p.add_argument("--node", required=True, help="node id, e.g. prison.example")
    p.add_argument("--dir", required=True, help="node directory to create")
    p.add_argument("--kind", required=True, choices=AGENCY_KINDS, help="this agency's kind")
    p.add_argument("--listen", default="127.0.0.1:8480", help="HOST:PORT (default 127.0.0.1:8480)")
    p.add_argument("--public-url", help="URL peers use to reach this node")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: embedded PostgreSQL under DIR)")
    p.set_defaults(func=cmd_init)

    register_schemas(sub)

    p = sub.add_parser("serve", help="run the node")
    p.add_argument("--dir", required=True)
    p.set_defaults(func=cmd_serve)

    peers = sub.add_parser("peers", help="pinned peers").add_subparsers(
        dest="peers_cmd", required=True
    )
    p = peers.add_parser("add", help="fetch a peer's keyset, check its fingerprint, pin it")
    p.add_argument("--dir", required=True)
    p.add_argument("--url", required=True, help="the peer's base URL")
    p.add_argument("--fingerprint", required=True, help="root fingerprint, compared out of band")
    p.add_argument("--kind", choices=AGENCY_KINDS, help="the peer agency's kind")
    p.set_defaults(func=cmd_peers_add)
    p = peers.add_parser("list", help="pinned peers and their keysets")
    p.add_argument("--dir", required=True)
    p.set_defaults(func=cmd_peers_list)

    ops = sub.add_parser("operators", help="local API users").add_subparsers(
        dest="operators_cmd", required=True
    )
    p = ops.add_parser("add", help="add an operator; prints its bearer token once, last")
    p.add_argument("--dir", required=True)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=("admin", "caseworker", "auditor"))
    p.set_defaults(func=cmd_operators_add)
    p = ops.add_parser("list", help="operators and roles")
    p.add_argument("--dir", required=True)
    p.set_defaults(func=cmd_operators_list)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit_cmd", required=True
    )
    p = audit.add_parser("verify", help="recompute the hash chain; --peers checks peers' logs")
    p.add_argument("--dir", required=True)
    p.add_argument("--peers", action="store_true", help="also witness every peer's log")
    p.set_defaults(func=cmd_audit_verify)

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

    register_lifecycle(sub)

    for name, func, helptext in (
        ("send", cmd_send, "submit a packet through the node's local API"),
        ("status", cmd_status, "delivery status of a sent packet"),
        ("inbox", cmd_inbox, "list received packets, or read one (needs --justification)"),
    ):
        p = sub.add_parser(name, help=helptext)
        _api_options(p)
        if name == "send":
            p.add_argument("--to", required=True, action="append", help="recipient node id")
            p.add_argument("--schema", required=True)
            p.add_argument("--body", required=True, help="BODY.json")
            p.add_argument("--justification", required=True, help="purpose and case reference")
            p.add_argument("--pid-only", action="store_true", help="print only the packet id(s)")
        elif name == "status":
            p.add_argument("pid")
            p.add_argument(
                "--wait",
                type=float,
                default=0.0,
                metavar="SECONDS",
                help="wait up to SECONDS until no delivery is pending",
            )
        else:
            p.add_argument("pid", nargs="?")
            p.add_argument("--justification")
        p.set_defaults(func=func)


def register_keys_rotate(keys_sub: Any) -> None:
    p = keys_sub.add_parser("rotate", help="new signing and encryption keys; old ones retired")
    p.add_argument("--dir", required=True, help="node directory")
    p.set_defaults(func=cmd_keys_rotate)
    p = keys_sub.add_parser("fingerprint", help="print this node's root fingerprint")
    p.add_argument("--dir", required=True, help="node directory or key directory")
    p.set_defaults(func=cmd_keys_fingerprint)


def cmd_keys_fingerprint(args: argparse.Namespace) -> int:
    directory = _dir(args)
    keys_dir = directory / "keys" if (directory / "keys").is_dir() else directory
    sys.stdout.write(keystore.load_keys(keys_dir).fingerprint + "\n")
    return 0


def cmd_schemas_list(args: argparse.Namespace) -> int:
    from handover.workflow.schemas import default_registry

    _emit(default_registry().ids())
    return 0


def cmd_schemas_example(args: argparse.Namespace) -> int:
    from handover.protocol.errors import UnknownSchema
    from handover.workflow.schemas import default_registry

    try:
        examples = default_registry().examples(args.schema)
    except UnknownSchema as exc:
        raise ConfigError(str(exc)) from exc
    if not 0 <= args.index < len(examples):
        raise ConfigError(f"{args.schema} has {len(examples)} examples (index 0..)")
    _emit(examples[args.index])
    return 0


def register_schemas(sub: Any) -> None:
    schemas = sub.add_parser("schemas", help="the packet schemas").add_subparsers(
        dest="schemas_cmd", required=True
    )
    p = schemas.add_parser("list", help="known schema ids")
    p.set_defaults(func=cmd_schemas_list)
    p = schemas.add_parser("example", help="print an example body of a schema")
    p.add_argument("schema", help="schema id, e.g. handover/release-notice/1")
    p.add_argument("--index", type=int, default=0)
    p.set_defaults(func=cmd_schemas_example)


# --- retention reviews and rectification (through the local API) ---------------------------


def cmd_reviews(args: argparse.Namespace) -> int:
    base, token = _api(args)
    if args.reviews_cmd == "list":
        return _answer(*_call("GET", f"{base}/api/v1/reviews", token))
    selector = {
        key: value
        for key, value in (("direction", args.direction), ("sender", args.sender))
        if value is not None
    }
    if args.outcome == "LIFT":
        url = f"{base}/api/v1/packets/{args.pid}/restriction/lift"
        return _answer(
            *_call("POST", url, token, {"justification": args.justification, **selector})
        )
    payload: dict[str, Any] = {"outcome": args.outcome, "justification": args.justification}
    if args.review_at is not None:
        payload["review_at"] = args.review_at
    if args.reason is not None:
        payload["reason"] = args.reason
    return _answer(*_call("POST", f"{base}/api/v1/reviews/{args.pid}", token, payload | selector))


def cmd_rectify(args: argparse.Namespace) -> int:
    base, token = _api(args)
    payload: dict[str, Any] = {
        "action": args.action,
        "reason": args.reason,
        "justification": args.justification,
    }
    if args.explanation is not None:
        payload["explanation"] = args.explanation
    if args.corrected_body is not None:
        try:
            payload["corrected_body"] = strict_json_loads(Path(args.corrected_body).read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read {args.corrected_body}: {exc.strerror}") from exc
        except HandoverError as exc:
            raise ConfigError(f"{args.corrected_body} is not valid JSON: {exc}") from exc
    return _answer(*_call("POST", f"{base}/api/v1/packets/{args.pid}/rectify", token, payload))


def cmd_rectifications(args: argparse.Namespace) -> int:
    base, token = _api(args)
    return _answer(*_call("GET", f"{base}/api/v1/packets/{args.pid}/rectifications", token))


def register_lifecycle(sub: Any) -> None:
    reviews = sub.add_parser("reviews", help="retention reviews that are due (LED Art 5)")
    reviews_sub = reviews.add_subparsers(dest="reviews_cmd", required=True)
    p = reviews_sub.add_parser("list", help="held packets whose review is due")
    _api_options(p)
    p = reviews_sub.add_parser("decide", help="EXTEND, RESTRICT or ERASE a packet; LIFT (admin)")
    _api_options(p)
    p.add_argument("pid", help="packet id (last, after `--`, if it starts with -)")
    p.add_argument("--outcome", required=True, choices=("EXTEND", "RESTRICT", "ERASE", "LIFT"))
    p.add_argument("--justification", required=True, help="why (logged in the audit entry)")
    p.add_argument("--review-at", metavar="YYYY-MM-DD", help="next review (EXTEND; RESTRICT)")
    p.add_argument("--reason", help="why the packet is restricted (RESTRICT)")
    p.add_argument("--direction", choices=("sent", "received"), help="if the pid is ambiguous")
    p.add_argument("--sender", help="the sender, if several sent a packet with this pid")
    reviews.set_defaults(func=cmd_reviews)

    p = sub.add_parser(
        "rectify", help="rectify, erase or restrict a sent packet and notify its recipients"
    )
    _api_options(p)
    p.add_argument("pid", help="packet id (last, after `--`, if it starts with -)")
    p.add_argument("--action", required=True, choices=("RECTIFY", "ERASE", "RESTRICT"))
    p.add_argument("--reason", required=True, help="e.g. INACCURATE, UNLAWFULLY_PROCESSED")
    p.add_argument("--justification", required=True, help="why (logged in the audit entries)")
    p.add_argument("--explanation", help="free text sent with the notice")
    p.add_argument("--corrected-body", metavar="FILE", help="the corrected body (RECTIFY)")
    p.set_defaults(func=cmd_rectify)

    p = sub.add_parser(
        "rectifications", help="a sent packet's rectifications and each recipient's acknowledgement"
    )
    _api_options(p)
    p.add_argument("pid", help="packet id (last, after `--`, if it starts with -)")
    p.set_defaults(func=cmd_rectifications)
