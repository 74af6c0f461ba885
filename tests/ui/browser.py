"""Helpers for the browser tests: Debian's Chromium through Playwright (nothing is
downloaded), signing in, axe-core checks and screenshots."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page

from federation import ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = ROOT / "build" / "ui-screenshots"
PASSWORD = "correct horse battery staple"
# axe-core findings per page (impact -> count), filled as the tests go.
AXE_FIGURES: dict[str, Counter[str]] = {}
_axe = Axe()


def chromium_path() -> str:
    """Debian's chromium, or a failure saying how to install it."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        raise AssertionError(
            "the browser tests need Debian's chromium: `sudo apt-get install chromium`"
            " (`make test` installs it when run as root)"
        )
    return found


def sign_in(
    browser: Browser, url: str, operator: str, password: str = PASSWORD, **options: Any
) -> tuple[BrowserContext, Page]:
    context = browser.new_context(base_url=url, bypass_csp=True, **options)
    page = context.new_page()
    page.goto("/ui/")
    assert page.url.endswith("/ui/login")
    page.get_by_label("Operator name").fill(operator)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    assert "/ui/login" not in page.url, page.content()
    return context, page


def check_page(page: Page, name: str) -> Counter[str]:
    """Run axe-core on the page: no serious or critical violation; record the counts
    by impact and save a screenshot."""
    results = _axe.run(page)
    violations = results.response["violations"]
    counts: Counter[str] = Counter(v["impact"] for v in violations)
    AXE_FIGURES[name] = counts
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"axe-core on {name}: {bad}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    return counts
