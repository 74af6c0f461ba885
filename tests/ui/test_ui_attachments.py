"""Attachments in the web interface: after reading a packet with a justification, a
caseworker downloads its attachment (recorded as a consultation of that attachment),
in a real browser against two real node processes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from browser import ARGS, PASSWORD, check_page, chromium_path, sign_in
from playwright.sync_api import Browser, sync_playwright

from federation import RELEASE_NOTICE, Federation, example
from handover.cli.harness_stream import upload_random

PRISON, PROBATION = "prison.example", "probation.example"
WHY = "release planning for the shared case"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(
        tmp_path_factory.mktemp("ui-att"), [(PRISON, "prison"), (PROBATION, "probation")]
    )
    try:
        federation.start(roles=())
        federation[PRISON].add_operator("pat", "caseworker", password=PASSWORD)
        federation[PROBATION].add_operator("sam", "caseworker", password=PASSWORD)
        yield federation
    finally:
        federation.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=ARGS)
        yield b
        b.close()


def test_download_an_attachment_after_reading_the_packet(
    fed: Federation, browser: Browser, tmp_path: Path
) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    status, answer, sha = upload_random(
        prison.url, prison.tokens["caseworker"], 300_000, "risk assessment.pdf"
    )
    assert status == 201, answer
    status, sent = prison.api(
        "POST",
        "/api/v1/packets",
        {
            "to": [PROBATION],
            "schema": RELEASE_NOTICE,
            "body": example(RELEASE_NOTICE),
            "justification": WHY,
            "attachments": [answer["aid"]],
        },
    )
    assert status == 202, sent
    pid = sent["packets"][0]["pid"]
    prison.wait_delivered(pid, timeout=60)

    ctx, page = sign_in(browser, probation.url, "sam", accept_downloads=True)
    page.goto(f"/ui/inbox/{pid}")
    page.get_by_label("Why do you need to read this packet?").fill("supervision plan")
    page.get_by_role("button", name="Read the packet").click()
    download_button = page.get_by_role("button", name="Download risk assessment.pdf")
    download_button.wait_for()
    check_page(page, "read-with-attachment")
    with page.expect_download() as info:
        download_button.click()
    download = info.value
    assert download.suggested_filename == "risk assessment.pdf"
    saved = tmp_path / "got.pdf"
    download.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == sha
    ctx.close()
    # Both readings are in the audit log with the reason given: the body, then the file.
    query = "SELECT entry FROM audit_log WHERE pid = $1 AND op = 'consultation' ORDER BY seq"
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        rows = pool.submit(probation.sql, query, pid).result()
    texts = [bytes(r["entry"]).decode() for r in rows]
    assert len(texts) == 2 and answer["aid"] in texts[1] and "supervision plan" in texts[1]
