"""Prints the fault matrix's figures (one line per case) at the end of the session."""

from __future__ import annotations

import sys
from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    kit = sys.modules.get("faults.kit")
    if kit is not None and kit.REPORTS:
        terminalreporter.section("fault matrix")
        for line in kit.REPORTS:
            terminalreporter.write_line(line)
