"""The web interface in a real Chromium against three real node processes (issue 11).

The walk: the prison composes a release-notice to probation and the exit
organisation, previews the minimised views and sends; probation signs in, reads
it with a justification and answers with a condition-update; the exit
organisation reads it and acknowledges (care-acknowledgement); the auditors
find the consultations in /ui/audit; an administrator disables an operator,
whose session stops working at once. Plus CSRF refusal, session expiry, role
refusals, failed sign-ins limited, and compose with an array field without
JavaScript. Every page is checked with axe-core (no serious or critical
violation) and screenshotted to build/ui-screenshots/.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from browser import ARGS, AXE_FIGURES, PASSWORD, SHOTS, check_page, chromium_path, sign_in
from playwright.sync_api import Browser, Page, expect, sync_playwright

from federation import Federation, NodeProcess, example, run_cli
from handover.node import totp

PRISON, PROBATION, EXIT = "prison.example", "probation.example", "exit.example"
RELEASE = "handover/release-notice/1"
CONDITIONS = "handover/condition-update/1"
AGREEMENT = "handover/responsibility-agreement/1"
CASE_REF = "HC-01JC3862PZ6820J8YY0J464BBG"
PRISON_NUMBER = "A4821DZ"  # an identifier the exit organisation never receives
OPERATORS = {
    PRISON: [("pat", "caseworker"), ("ada", "admin")],
    PROBATION: [("sam", "caseworker"), ("aud", "auditor")],
    EXIT: [("eve", "caseworker"), ("aud", "auditor")],
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(
        tmp_path_factory.mktemp("ui"),
        [(PRISON, "prison"), (PROBATION, "probation"), (EXIT, "exit")],
    )
    try:
        federation.start(roles=())
        for node, operators in OPERATORS.items():
            for name, role in operators:
                federation[node].add_operator(name, role, password=PASSWORD)
        yield federation
    finally:
        federation.stop()
        if AXE_FIGURES:
            print("\naxe-core violations per page (impact: count):")
            for page_name, counts in AXE_FIGURES.items():
                shown = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
                print(f"  {page_name}: {shown}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=ARGS)
        yield b
        b.close()


def sql(node: NodeProcess, query: str) -> list[dict[str, Any]]:
    """`node.sql` on a thread of its own (Playwright's sync API holds this thread's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(node.sql, query).result()


def sessions(node: NodeProcess, operator: str) -> int:
    rows = sql(node, f"SELECT count(*) AS n FROM ui_sessions WHERE operator = '{operator}'")
    return int(rows[0]["n"])


def url(fed: Federation, node: str) -> str:
    return fed[node].url


def wait_text(page: Page, text: str, timeout: float = 30) -> None:
    """Reload until `text` is on the page (delivery happens in the background)."""
    deadline = time.monotonic() + timeout
    while text not in page.content():
        assert time.monotonic() < deadline, f"{text!r} not shown on {page.url}"
        time.sleep(0.3)
        page.reload()


def test_the_walk(fed: Federation, browser: Browser) -> None:
    release_date = (dt.date.today() + dt.timedelta(days=60)).isoformat()

    # --- the prison composes, previews and sends ---------------------------------------
    ctx, page = sign_in(browser, url(fed, PRISON), "pat")
    check_page(page, "inbox-empty")
    page.goto("/ui/compose")
    check_page(page, "compose-choose")
    page.get_by_role("link", name="Release notice").click()
    assert page.url.endswith(f"/ui/compose?schema={RELEASE}"), page.url
    check_page(page, "compose")
    page.get_by_label(f"{PROBATION} (probation)").check()
    page.get_by_label(f"{EXIT} (exit)").check()
    page.locator('[name="/case_ref"]').fill(CASE_REF)
    page.locator('[name="/quality/as_of"]').fill("2025-03-10")
    page.locator('[name="/quality/source_system"]').fill("NOMIS")
    page.locator('[name="/quality/basis"]').select_option("FACT")
    page.locator('[name="/phase"]').select_option("PLANNED")
    page.locator('[name="/prison_id"]').fill("NFI")
    page.locator('[name="/expected_release_date"]').fill(release_date)
    page.locator('[name="/identifiers/prison_number"]').fill(PRISON_NUMBER)
    # A wrong date first: the error sits next to its field and says what is expected.
    page.locator('[name="/quality/as_of"]').fill("10/03/2025")
    page.get_by_label("Justification").fill("release planning for the shared case")
    page.get_by_role("button", name="Preview", exact=True).click()
    error = page.locator("#f-quality-as-of-error")
    expect(error).to_contain_text("YYYY-MM-DD")
    check_page(page, "compose-errors")
    page.locator('[name="/quality/as_of"]').fill("2025-03-10")
    page.get_by_role("button", name="Preview", exact=True).click()
    expect(page.get_by_role("heading", name="Preview: Release notice")).to_be_visible()
    exit_view = page.locator("section.view", has=page.get_by_role("heading", name=EXIT))
    probation_view = page.locator("section.view", has=page.get_by_role("heading", name=PROBATION))
    expect(exit_view.locator(".withheld")).to_contain_text("Identifiers")
    assert PRISON_NUMBER not in exit_view.inner_text()
    assert PRISON_NUMBER in probation_view.inner_text()
    check_page(page, "preview")
    page.get_by_role("button", name="Send").click()
    assert re.search(r"/ui/packets/[A-Za-z0-9_-]{22}", page.url), page.url
    wait_text(page, "(receipt ")
    check_page(page, "packet")

    # --- probation reads it with a justification and answers ---------------------------
    pctx, ppage = sign_in(browser, url(fed, PROBATION), "sam")
    wait_text(ppage, RELEASE)
    expect(ppage.locator("tbody tr").first).to_contain_text("answer due")
    expect(ppage.locator("tbody tr").first).to_contain_text("not read")
    check_page(ppage, "inbox")
    ppage.get_by_role("link", name=RELEASE).first.click()
    assert PRISON_NUMBER not in ppage.content()
    check_page(ppage, "read-justify")
    ppage.get_by_label("Why do you need to read this packet?").fill("licence conditions prep")
    ppage.get_by_role("button", name="Read the packet").click()
    expect(ppage.get_by_role("row", name=re.compile("Prison number"))).to_contain_text(
        PRISON_NUMBER
    )
    assert "justification" not in ppage.url
    check_page(ppage, "read-body")
    ppage.get_by_role("link", name=f"Answer with {CONDITIONS}").click()
    expect(ppage.locator('[name="/case_ref"]')).to_have_value(CASE_REF)
    ppage.get_by_label(f"{PRISON} (prison)").check()
    ppage.locator('[name="/quality/as_of"]').fill("2025-03-12")
    ppage.locator('[name="/quality/source_system"]').fill("nDelius")
    ppage.locator('[name="/quality/basis"]').select_option("FACT")
    ppage.locator('[name="/licence_kind"]').select_option("CRD")
    ppage.locator('[name="/licence_status"]').select_option("APPROVED")
    ppage.locator('[name="/start_date"]').fill(release_date)
    ppage.locator('[name="/conditions/0/kind"]').select_option("STANDARD")
    ppage.locator('[name="/conditions/0/code"]').fill("STD_1")
    ppage.locator('[name="/conditions/0/category"]').fill("Residence")
    ppage.locator('[name="/conditions/0/text"]').fill("Reside at the approved address.")
    ppage.locator('[name="/conditions/0/exit_related"]').select_option("false")
    ppage.get_by_label("Justification").fill("licence conditions for the case")
    ppage.get_by_role("button", name="Preview", exact=True).click()
    ppage.get_by_role("button", name="Send").click()
    wait_text(ppage, "(receipt ")

    # --- the exit organisation reads it and acknowledges -------------------------------
    ectx, epage = sign_in(browser, url(fed, EXIT), "eve")
    wait_text(epage, RELEASE)
    epage.get_by_role("link", name=RELEASE).first.click()
    epage.get_by_label("Why do you need to read this packet?").fill("plan support on release")
    epage.get_by_role("button", name="Read the packet").click()
    assert PRISON_NUMBER not in epage.content()
    epage.get_by_role("link", name="Answer with handover/care-acknowledgement/1").click()
    expect(epage.locator('[name="/in_reply_to"]')).not_to_have_value("")
    epage.get_by_label(f"{PRISON} (prison)").check()
    epage.locator('[name="/quality/as_of"]').fill("2025-03-13")
    epage.locator('[name="/quality/source_system"]').fill("casebook")
    epage.locator('[name="/quality/basis"]').select_option("FACT")
    epage.locator('[name="/decision"]').select_option("WAITLISTED")
    epage.get_by_label("Justification").fill("continuity of care")
    epage.get_by_role("button", name="Preview", exact=True).click()
    epage.get_by_role("button", name="Send").click()
    wait_text(epage, "(receipt ")

    # Probation proposes a responsibility agreement (through the API); the exit
    # organisation acknowledges it on its case page.
    body = example(AGREEMENT)
    for party, node in zip(body["parties"], (PRISON, PROBATION, EXIT), strict=True):
        party["node"] = node
    body.update(case_ref=CASE_REF, valid_from=dt.date.today().isoformat())
    status, answer = fed[PROBATION].api(
        "POST",
        "/api/v1/packets",
        {
            "to": [PRISON, EXIT],
            "schema": AGREEMENT,
            "body": body,
            "justification": "agreeing roles for the case",
        },
    )
    assert status == 202, answer
    epage.goto(f"/ui/cases/{CASE_REF}")
    wait_text(epage, "Acknowledge the agreement")
    epage.get_by_label("Justification for acknowledging").fill("we take on the exit work")
    epage.get_by_role("button", name="Acknowledge the agreement").click()
    expect(epage.get_by_role("status")).to_contain_text("agreement acknowledged")
    check_page(epage, "case-agreement")

    # The prison's case page shows the expectations answered; a local id is kept.
    page.goto(f"/ui/cases/{CASE_REF}")
    wait_text(page, "acknowledged")
    page.get_by_label("Local id").fill("PR-2025-0042")
    page.get_by_role("button", name="Save the local id").click()
    expect(page.get_by_role("status")).to_contain_text("local id saved")
    expect(page.locator("dl.meta").first).to_contain_text("PR-2025-0042")
    # The subject access export downloads as JSON (a justification first).
    page.get_by_label("Justification for the export").fill("subject access request SAR-17")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the export").click()
    exported = json.loads(Path(download.value.path()).read_text("utf-8"))
    assert exported["case"]["case_ref"] == CASE_REF
    assert download.value.suggested_filename == f"subject-access-{CASE_REF}.json"
    check_page(page, "case")
    page.goto("/ui/overdue")
    check_page(page, "overdue")
    page.goto("/ui/cases")
    expect(page.get_by_role("link", name=CASE_REF)).to_be_visible()
    check_page(page, "cases")

    # --- auditors find the consultations with their justifications -------------------
    for node, reader, why in (
        (PROBATION, "sam", "licence conditions prep"),
        (EXIT, "eve", "plan support on release"),
    ):
        actx, apage = sign_in(browser, url(fed, node), "aud")
        apage.goto("/ui/audit?op=consultation")
        row = apage.get_by_role("row", name=re.compile(why))
        expect(row).to_contain_text(reader)
        expect(row).to_contain_text(CASE_REF)
        if node == PROBATION:
            check_page(apage, "audit")
            apage.get_by_role("button", name="Verify the log and the peers' logs").click()
            expect(apage.get_by_role("heading", name="Verification: all good")).to_be_visible()
            # An auditor may not read bodies nor send.
            assert apage.goto("/ui/inbox").status == 403
            assert apage.goto(f"/ui/compose?schema={RELEASE}").status == 403
        actx.close()

    # --- an administrator disables the prison caseworker ------------------------------
    dctx, dpage = sign_in(browser, url(fed, PRISON), "ada")
    dpage.goto("/ui/admin/peers")
    expect(dpage.get_by_role("row", name=re.compile(PROBATION))).to_contain_text("valid")
    check_page(dpage, "admin-peers")
    dpage.goto("/ui/admin/operators")
    check_page(dpage, "admin-operators")
    # Add an operator (its API token shown once), change its role, reset its password.
    dpage.get_by_label("Name", exact=True).fill("kim")
    dpage.get_by_label("Password", exact=True).fill(PASSWORD)
    dpage.get_by_role("button", name="Add the operator").click()
    expect(dpage.locator("code.token")).to_contain_text("hov_")
    kim = dpage.get_by_role("row", name=re.compile("^kim"))
    kim.get_by_label("Role of kim").select_option("auditor")
    kim.get_by_role("button", name="Change role of kim").click()
    expect(dpage.get_by_role("status")).to_contain_text("kim: role set")
    expect(
        dpage.get_by_role("row", name=re.compile("^kim")).get_by_label("Role of kim")
    ).to_have_value("auditor")
    dpage.get_by_label("New password for kim").fill("a brand new password")
    dpage.get_by_role("button", name="Reset password of kim").click()
    expect(dpage.get_by_role("status")).to_contain_text("kim: password set")
    kctx, kpage = sign_in(browser, url(fed, PRISON), "kim", password="a brand new password")
    assert kpage.url.endswith("/ui/audit")  # an auditor's start page
    kctx.close()
    dpage.get_by_role("button", name="Disable pat").click()
    expect(dpage.get_by_role("status")).to_contain_text("pat: disabled")
    page.goto("/ui/inbox")
    assert page.url.endswith("/ui/login"), "a disabled operator's session goes on"
    for c in (ctx, pctx, ectx, dctx):
        c.close()


def test_refusals(fed: Federation, browser: Browser) -> None:
    base = url(fed, PROBATION)
    ctx, page = sign_in(browser, base, "sam")
    # Headers of every page.
    response = page.goto("/ui/inbox")
    assert response is not None
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"
    cookie = next(c for c in ctx.cookies() if c["name"] == "handover_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # A caseworker gets 403 on the auditors' and administrators' pages.
    for path in ("/ui/audit", "/ui/admin/operators", "/ui/admin/peers"):
        assert page.goto(path).status == 403, path
    check_page(page, "forbidden")
    # A POST without the session's csrf_token changes nothing.
    before = sql(fed[PROBATION], "SELECT count(*) AS n FROM outbox")[0]["n"]
    answer = ctx.request.post(
        base + "/ui/compose",
        form={"schema": CONDITIONS, "_action": "send", "to": PRISON, "csrf_token": "forged"},
    )
    assert answer.status == 403
    # A form over 1 MiB is refused before it is read.
    huge = ctx.request.post(
        base + "/ui/compose",
        data=b"a=" + b"x" * (1024 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status == 413
    # The sign-in form too (double submit: a cookie and the form's csrf_token).
    forged = ctx.request.post(base + "/ui/login", form={"operator": "sam", "password": PASSWORD})
    assert forged.status == 403
    assert sql(fed[PROBATION], "SELECT count(*) AS n FROM outbox")[0]["n"] == before
    # Sign-out ends the session server-side.
    before_out = sessions(fed[PROBATION], "sam")
    page.goto("/ui/inbox")
    page.get_by_role("button", name="Sign out").click()
    assert page.url.endswith("/ui/login")
    assert sessions(fed[PROBATION], "sam") == before_out - 1
    check_page(page, "login")
    ctx.close()


def test_session_expires_after_30_idle_minutes(fed: Federation, browser: Browser) -> None:
    ctx, page = sign_in(browser, url(fed, EXIT), "eve")
    sql(
        fed[EXIT],
        "UPDATE ui_sessions SET last_seen = last_seen - 31 * 60 * 1000 WHERE operator = 'eve'",
    )
    page.goto("/ui/inbox")
    assert page.url.endswith("/ui/login")
    ctx.close()


def test_failed_sign_ins_are_limited_and_do_not_say_why(fed: Federation, browser: Browser) -> None:
    ctx = browser.new_context(base_url=url(fed, EXIT))
    page = ctx.new_page()
    messages = set()
    for attempt in range(6):
        page.goto("/ui/login")
        page.get_by_label("Operator name").fill("aud" if attempt % 2 else "nobody")
        page.get_by_label("Password").fill("wrong password!")
        page.get_by_role("button", name="Sign in").click()
        messages.add(page.locator("#login-error").inner_text())
    assert "Too many failed attempts: wait a few minutes before trying again." in messages
    assert "Sign-in failed: the operator name, password or code is not right." in messages
    # The right password is refused too while the address is limited.
    page.get_by_label("Operator name").fill("aud")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/ui/login")
    ctx.close()


def test_compose_an_array_field_without_javascript(fed: Federation, browser: Browser) -> None:
    ctx, page = sign_in(browser, url(fed, PROBATION), "sam", java_script_enabled=False)
    page.goto(f"/ui/compose?schema={CONDITIONS}")
    page.locator('[name="/conditions/0/code"]').fill("STD_1")
    page.get_by_role("button", name="Add another: Conditions").click()
    expect(page.locator('[name="/conditions/1/code"]')).to_have_value("")
    expect(page.locator('[name="/conditions/0/code"]')).to_have_value("STD_1")
    page.locator('[name="/conditions/1/code"]').fill("ADD_7")
    page.get_by_role("button", name="Remove Conditions, item 1").click()
    expect(page.locator('[name="/conditions/0/code"]')).to_have_value("ADD_7")
    expect(page.locator('[name="/conditions/1/code"]')).to_have_count(0)
    page.get_by_role("button", name="Preview", exact=True).click()
    # Errors name the fields and what they expect; nothing was sent.
    expect(page.get_by_role("alert")).to_contain_text("Licence kind")
    expect(page.get_by_role("alert")).to_contain_text("one of: CRD")
    # (axe-core needs script: the same page with script is checked in the walk.)
    page.screenshot(path=str(SHOTS / "compose-nojs.png"), full_page=True)
    ctx.close()


def test_second_factor_and_password_change_from_the_cli(fed: Federation, browser: Browser) -> None:
    node = fed[PRISON]  # not the exit organisation's node: its address is limited by now
    out = run_cli(
        "operators", "add", "--dir", str(node.dir), "tia", "--role", "caseworker",
        "--password-stdin", "--totp", stdin=PASSWORD + "\n",
    ).stdout.splitlines()  # fmt: skip
    assert out[-1].startswith("hov_")  # the API token stays the last line
    uri = next(line for line in out if line.startswith("otpauth://totp/"))
    secret_b32 = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["secret"][0]
    secret = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    ctx = browser.new_context(base_url=node.url)
    page = ctx.new_page()
    page.goto("/ui/login")
    page.get_by_label("Operator name").fill("tia")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/ui/login")  # the code is missing
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Code from your authenticator app").fill(
        totp.code_at(secret, int(time.time()))
    )
    page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/ui/inbox")
    # A new password (from standard input) ends the operator's sessions.
    run_cli(
        "operators", "passwd", "--dir", str(node.dir), "tia", "--password-stdin",
        stdin="another long password\n",
    )  # fmt: skip
    page.goto("/ui/inbox")
    assert page.url.endswith("/ui/login")
    ctx.close()


def test_an_overdue_answer_comes_first_in_the_inbox(fed: Federation, browser: Browser) -> None:
    past = (dt.date.today() - dt.timedelta(days=10)).isoformat()
    body = example(RELEASE)
    body.update(
        case_ref="HC-01JC3862PZ6820J8YY0J464BBH",
        expected_release_date=past,
        confirmed_release_date=past,
    )
    status, answer = fed[PRISON].api(
        "POST",
        "/api/v1/packets",
        {"to": [PROBATION], "schema": RELEASE, "body": body, "justification": "late notice"},
        role="admin",
    )
    assert status == 202, answer
    ctx, page = sign_in(browser, url(fed, PROBATION), "sam")
    wait_text(page, "HC-01JC3862PZ6820J8YY0J464BBH")
    check_page(page, "inbox-overdue")
    first = page.locator("tbody tr").first
    expect(first).to_contain_text("HC-01JC3862PZ6820J8YY0J464BBH")
    expect(first).to_contain_text("answer overdue")
    page.goto("/ui/overdue")
    expect(
        page.get_by_role("row", name=re.compile("HC-01JC3862PZ6820J8YY0J464BBH"))
    ).to_contain_text("(overdue)")
    ctx.close()


def test_signing_in_and_reading_with_the_keyboard_alone(fed: Federation, browser: Browser) -> None:
    ctx = browser.new_context(base_url=url(fed, PROBATION))
    page = ctx.new_page()
    page.goto("/ui/login")

    def tab_to(element_id: str) -> None:
        for _ in range(30):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == element_id:
                return
        raise AssertionError(f"Tab never reaches #{element_id}")

    tab_to("operator")
    page.keyboard.type("sam")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/inbox")
    page.locator("tbody a").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/inbox/*")
    tab_to("justification")
    page.keyboard.type("checking with the keyboard")
    page.keyboard.press("Tab")  # to the button
    page.keyboard.press("Enter")
    expect(page.get_by_role("table", name="Content of the packet")).to_be_visible()
    ctx.close()


def test_the_accessibility_check_catches_a_violation(browser: Browser) -> None:
    """The axe-core check itself: an image without a text alternative is critical."""
    page = browser.new_page()
    page.set_content('<html lang="en"><title>t</title><main><img src="x.png"></main></html>')
    with pytest.raises(AssertionError, match="image-alt"):
        check_page(page, "self-test")
    del AXE_FIGURES["self-test"]
    page.close()
