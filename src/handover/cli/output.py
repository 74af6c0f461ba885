"""What commands print: JSON on stdout, warnings and errors as one line on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

EXIT_ERROR = 1


class CliError(Exception):
    """A user-facing error: printed as one line, exit non-zero."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def emit(obj: Any) -> None:
    """Print `obj` as indented JSON with sorted keys (the output of most commands)."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
