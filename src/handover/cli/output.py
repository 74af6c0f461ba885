"""What commands print, and the exit codes.

On a terminal, answers are shown for people: tables, times as local ISO 8601
(`2026-12-04T22:15:03+01:00`), receipts summarised. When stdout is not a
terminal (a pipe, a file, a script) they are indented JSON with sorted keys,
as before. `--json` and `--human` on a command, or `HANDOVER_OUTPUT=json|human`,
choose either way. Warnings and errors are one line on stderr.

Exit codes (docs/operations.md, "Command line"):

    0  done
    1  an error, or something found wrong (a broken audit log, a refusal)
    2  the command line itself is wrong (argparse usage)
    3  `status --wait`: a delivery is still pending at the deadline
    4  `audit verify --peers`: a peer could not be reached (nothing found wrong)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PENDING = 3
EXIT_UNREACHABLE = 4
OUTPUT_ENV = "HANDOVER_OUTPUT"
MAX_CELL = 60

# Keys whose integer values are milliseconds since the epoch.
TIME_KEYS = frozenset(
    {"iat", "exp", "deadline", "at", "keyset_exp", "backup_at", "declared_at", "checked_at"}
)
_mode: str | None = None


class CliError(Exception):
    """A user-facing error: printed as one line, exit non-zero."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def set_mode(json_flag: bool = False, human_flag: bool = False) -> None:
    """Choose the output: the flags, else $HANDOVER_OUTPUT, else by whether
    stdout is a terminal."""
    global _mode
    if json_flag:
        _mode = "json"
    elif human_flag:
        _mode = "human"
    elif os.environ.get(OUTPUT_ENV) in ("json", "human"):
        _mode = os.environ[OUTPUT_ENV]
    else:
        _mode = "human" if sys.stdout.isatty() else "json"


# Commands whose output is data or a token, never laid out for people.
RAW_OUTPUT = frozenset(
    {
        "serve",
        "keys fingerprint",
        "packet seal",
        "packet open",
        "schemas example",
        "operators add",
        "operators token",
    }
)


def add_output_options(parser: argparse.ArgumentParser, path: str = "") -> None:
    """`--json` and `--human` on every command below `parser` (not RAW_OUTPUT)."""
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subcommands:
        for name, child in action.choices.items():
            add_output_options(child, f"{path} {name}".strip())
    if subcommands or not path or path in RAW_OUTPUT:
        return
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--json", action="store_true", help="JSON (the default when stdout is not a terminal)"
    )
    group.add_argument(
        "--human", action="store_true", help="output for people (the default on a terminal)"
    )


def human() -> bool:
    if _mode is None:
        set_mode()
    return _mode == "human"


def emit_json(obj: Any) -> None:
    """Print `obj` as indented JSON with sorted keys, whatever the mode (data
    meant for files: a schema example, an opened body)."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def emit(obj: Any, render: Callable[[Any], str] | None = None) -> None:
    """Print a command's answer: for people (`render`, or the generic layout)
    or as JSON."""
    if not human():
        emit_json(obj)
        return
    text = (render or render_any)(obj)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


# --- values -------------------------------------------------------------------------------


def is_time_key(key: str) -> bool:
    return key in TIME_KEYS or key.endswith("_at")


def local_time(ms: int) -> str:
    """Milliseconds since the epoch as local ISO 8601 time, to the second."""
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec="seconds")


def summarise_receipt(value: Any) -> str:
    """A receipt as one line: what the recipient said, when, and its id."""
    from handover.protocol.errors import HandoverError
    from handover.protocol.receipt import parse_receipt

    wire = json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else value
    if not isinstance(wire, str):
        return "signed receipt"
    try:
        receipt, _sig = parse_receipt(wire.encode("utf-8"))
    except HandoverError:
        return "signed receipt (unreadable)"
    when = local_time(receipt.iat)
    return f"{receipt.status} by {receipt.signer} at {when} (receipt {receipt.rid})"


def cell(key: str, value: Any, width: int | None = None) -> str:
    """One value for people: times local, receipts summarised, nothing empty;
    text cut to `width` characters (table cells), else whole."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and is_time_key(key) and value > 10**11:
        return local_time(value)
    if key == "receipt":
        return summarise_receipt(value)
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            return ", ".join(str(v) for v in value) or "-"
        return f"{len(value)} items"
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(k, v)}" for k, v in value.items()) or "-"
    text = str(value).replace("\n", " ")
    return text if width is None or len(text) <= width else text[: width - 3] + "..."


# --- layouts ------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Rows as a table with a header line; columns in first-seen order."""
    if not rows:
        return "(none)"
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    cells = [[cell(c, row.get(c), MAX_CELL) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.extend(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )
    return "\n".join(line.rstrip() for line in lines)


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def render_page(columns: list[str]) -> Callable[[Any], str]:
    """A page of `items` (with a `next_before` cursor) as a table of `columns`."""

    def render(page: Any) -> str:
        if not isinstance(page, dict) or not isinstance(page.get("items"), list):
            return render_any(page)
        text = table(page["items"], columns)
        if page.get("next_before") is not None:
            text += f"\n(more: next_before={page['next_before']})"
        return text

    return render


def render_any(obj: Any) -> str:
    """The generic layout: a list of objects as a table; an object as `key: value`
    lines, with its lists of objects as tables below."""
    if _is_rows(obj):
        return table(obj)
    if isinstance(obj, list):
        return "\n".join(cell("", v) for v in obj) or "(none)"
    if not isinstance(obj, dict):
        return cell("", obj)
    lines, tables = [], []
    for key, value in obj.items():
        if _is_rows(value):
            tables.append(f"\n{key}:\n" + _indent(table(value)))
        elif isinstance(value, dict) and any(isinstance(v, dict | list) for v in value.values()):
            tables.append(f"\n{key}:\n" + _indent(render_any(value)))
        elif isinstance(value, list) and not value and key in ("items", "peers"):
            tables.append(f"\n{key}: (none)")
        else:
            lines.append((key, cell(key, value)))
    width = max((len(k) for k, _ in lines), default=0)
    head = "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in lines)
    return (head + "".join(tables)).strip("\n")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
