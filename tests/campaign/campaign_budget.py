"""How much the campaign runs: modest under `make test`, large under `make soak`.

Environment (each optional; `CAMPAIGN_SOAK=1` switches every default to soak size):

    CAMPAIGN_SOAK=1              soak sizes below
    CAMPAIGN_FUZZ_EXAMPLES=N     inputs per fuzz target (hypothesis max_examples)
                                 default 150, soak 100,000
    CAMPAIGN_ATHERIS_RUNS=N      libFuzzer runs per atheris target; default 2,000, soak 100,000
    CAMPAIGN_API_EXAMPLES=N      schemathesis examples per API operation; default 12, soak 300
    CAMPAIGN_FLOOD_SECONDS=S     length of the abuse flood; default 10, soak 60
    CAMPAIGN_SEED=N              a fixed hypothesis seed instead of derandomized runs
    CAMPAIGN_REPORT=PATH         also append every printed figure to PATH

Every run is reproducible: hypothesis runs derandomized (or with CAMPAIGN_SEED),
libFuzzer with a fixed -seed, and the flood's junk comes from a seeded generator.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import seed as hypothesis_seed

SOAK = os.environ.get("CAMPAIGN_SOAK", "") not in ("", "0")


def _int(name: str, default: int, soak: int) -> int:
    return int(os.environ.get(name, str(soak if SOAK else default)))


FUZZ_EXAMPLES = _int("CAMPAIGN_FUZZ_EXAMPLES", 150, 100_000)
ATHERIS_RUNS = _int("CAMPAIGN_ATHERIS_RUNS", 2_000, 100_000)
API_EXAMPLES = _int("CAMPAIGN_API_EXAMPLES", 12, 300)
FLOOD_SECONDS = _int("CAMPAIGN_FLOOD_SECONDS", 10, 60)
SEED = os.environ.get("CAMPAIGN_SEED")

F = TypeVar("F", bound=Callable[..., Any])


def fuzz_settings(max_examples: int = FUZZ_EXAMPLES) -> Callable[[F], F]:
    """Hypothesis settings for one fuzz target: bounded, reproducible, no database."""
    chosen = settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=SEED is None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )

    def apply(test: F) -> F:
        test = chosen(test)
        if SEED is not None:
            test = hypothesis_seed(int(SEED))(test)
        return test

    return apply


def report(line: str) -> None:
    """Print one figure of the campaign (shown with `pytest -s`, as `make soak` runs it)."""
    text = f"campaign: {line}"
    print(text, flush=True)
    path = os.environ.get("CAMPAIGN_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")
