"""`handover backup` and `handover restore` (node/backup.py, node/restore.py).

The passphrase is the first line of `--passphrase-file FILE`, or else of
standard input; it is never an argument (other users see those in `ps`).
"""

from __future__ import annotations

import argparse
import getpass
import stat
import sys
from pathlib import Path

from handover.cli.args import Commands, node_dir
from handover.cli.output import CliError, emit, warn
from handover.node.backup import BackupError, take_backup
from handover.node.restore import DEFAULT_REASON, restore


def read_passphrase(args: argparse.Namespace) -> bytes:
    """The first line of --passphrase-file, or of stdin (without its line end).

    Raises:
        CliError: no passphrase, or the file cannot be read.
    """
    if args.passphrase_file:
        path = Path(args.passphrase_file)
        try:
            if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                warn(f"{path} can be read by other users: make it mode 0600")
            raw = path.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read the passphrase file {path}: {exc.strerror}") from exc
    elif sys.stdin.isatty():
        raw = getpass.getpass("backup passphrase: ").encode("utf-8")  # not echoed
    else:
        raw = sys.stdin.buffer.readline()
    line = raw.split(b"\n", 1)[0].removesuffix(b"\r")
    if not line:
        raise CliError("no passphrase: give --passphrase-file FILE, or the passphrase on stdin")
    return line


def _failed(exc: OSError) -> CliError:
    return CliError(f"{exc.filename or 'a file'}: {exc.strerror or type(exc).__name__}")


def cmd_backup(args: argparse.Namespace) -> int:
    passphrase = read_passphrase(args)
    try:
        result = take_backup(node_dir(args), Path(args.out).resolve(), passphrase)
    except BackupError as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise _failed(exc) from exc
    for message in result.pop("warnings"):
        warn(message)
    emit(result)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    passphrase = read_passphrase(args)
    try:
        result = restore(
            Path(args.source).resolve(), node_dir(args), passphrase, reason=args.reason
        )
    except BackupError as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise _failed(exc) from exc
    emit(result)
    fork = result["fork"]
    sys.stderr.write(
        f"handover: {result['node']} restored; its audit log continues as a new chain after"
        f" seq {fork['previous']['seq']} of the backup (a declared fork: peers that witnessed"
        " later entries see it as such)\n"
    )
    return 0


def register(sub: Commands) -> None:
    """backup, restore."""
    p = sub.add_parser(
        "backup", help="write an encrypted backup of a node: database, settings, keys"
    )
    p.add_argument("--dir", required=True, help="node directory")
    p.add_argument("--out", required=True, help="the backup file to write (never overwritten)")
    p.add_argument(
        "--passphrase-file", help="read the passphrase from this file's first line (else stdin)"
    )
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="make a new node directory from a backup")
    p.add_argument("--from", dest="source", required=True, help="the backup file")
    p.add_argument("--dir", required=True, help="the node directory to make (new or empty)")
    p.add_argument(
        "--passphrase-file", help="read the passphrase from this file's first line (else stdin)"
    )
    p.add_argument(
        "--reason",
        default=DEFAULT_REASON,
        help="why the node is restored (recorded in the alteration entry that begins its new"
        " audit chain)",
    )
    p.set_defaults(func=cmd_restore)
