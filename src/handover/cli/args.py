"""What every `handover` command's arguments share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeAlias

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What `add_subparsers` returns: each module registers its commands on it."""


def node_dir(args: argparse.Namespace) -> Path:
    """The node directory a command was given (`--dir`), absolute."""
    return Path(args.dir).resolve()
