"""Knowing your partner, end to end: two `handover serve` processes (embedded
PostgreSQL, real HTTP) paired with a short code through the real CLI, a relay
in between that substitutes its own keys, wrong codes, profiles and their
changes, safety numbers, the `peers add` mismatch message and the kind guard.

An expired invitation needs the clock moved: tests/node/test_pairing_inproc.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from federation import RELEASE_NOTICE, NodeProcess, example, free_port, run_cli
from handover.protocol import crypto
from handover.protocol import pairing as proto
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps, cj_loads

INVITER, PARTNER = "inviter.example", "partner.example"
CODE_RE = re.compile(r"^\s+(\d+-[a-z]+-[a-z]+)$", re.M)
PROFILE = {
    "organisation": "Partner probation service",
    "country": "NL",
    "jurisdiction": "Arrondissement Amsterdam",
    "dp-contact": "privacy desk, +31 20 000 0000",
    "contact": "duty officer, +31 20 000 0001",
    "responsibilities": "Supervision after release; receives release notices.",
}


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeProcess]]:
    base = tmp_path_factory.mktemp("pairing")
    started = {INVITER: NodeProcess(base, INVITER, "prison")}
    started[PARTNER] = NodeProcess(base, PARTNER, "probation")
    try:
        for node in started.values():
            node.start()
        set_profile(started[INVITER], organisation="Inviting prison")
        set_profile(started[PARTNER])
        yield started
    finally:
        for node in started.values():
            node.stop()


def set_profile(node: NodeProcess, **changes: str) -> dict[str, Any]:
    fields = {**PROFILE, **changes}
    flags = [f"--{name}={value}" for name, value in fields.items()]
    out = run_cli("profile", "set", "--dir", str(node.dir), *flags)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def invite(node: NodeProcess, kind: str) -> str:
    out = run_cli("peers", "invite", "--dir", str(node.dir), "--kind", kind)
    match = CODE_RE.search(out.stdout)
    assert match is not None, out.stdout
    return match.group(1)


def accept(node: NodeProcess, url: str, code: str) -> tuple[int, str, str]:
    out = run_cli(
        "peers", "accept", "--dir", str(node.dir), "--url", url, "--code", code, check=False
    )
    return out.returncode, out.stdout, out.stderr


def peers(node: NodeProcess) -> tuple[list[dict[str, Any]], str]:
    out = run_cli("peers", "list", "--dir", str(node.dir))
    listed: list[dict[str, Any]] = json.loads(out.stdout)
    return listed, out.stderr


def key_entries(node: NodeProcess, action: str) -> list[dict[str, Any]]:
    rows = node.sql("SELECT entry FROM audit_log WHERE op = 'key' ORDER BY seq")
    entries = [json.loads(bytes(r["entry"])) for r in rows]
    return [e for e in entries if e.get("action") == action]


# --- the relay ---------------------------------------------------------------------------


class Relay:
    """A man in the middle on the accepting node's path to the inviting node: it
    forwards pairing messages and puts its own root key and URL into every offer
    (`offer`), or its own SPAKE2 messages, made with a guessed code (`spake`)."""

    def __init__(self, target: str, mode: str = "offer") -> None:
        self.target = target
        self.mode = mode
        guess = "1-acid-acid"
        self.spakes = {"A": proto.Spake("inviter", guess), "B": proto.Spake("accepter", guess)}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = crypto.SigningKey.generate()
        self.substituted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def _swap(self, raw: bytes) -> bytes:
        message = cj_loads(raw)
        if self.mode == "spake" and "spake" in message:
            side = "B" if "invitation" in message else "A"  # a request, or the answer
            message["spake"] = b64u_encode(self.spakes[side].message)
            self.substituted += 1
        if self.mode == "offer" and "offer" in message:
            offer = cj_loads(b64u_decode(message["offer"]))
            offer["root"] = b64u_encode(self.root.public_key)
            offer["url"] = self.url
            offer["profile"] = ""
            message["offer"] = b64u_encode(cj_dumps(offer))
            self.substituted += 1
        return cj_dumps(message)

    async def _handle(self, request: web.Request) -> web.Response:
        body = self._swap(await request.read())
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.target + request.path, data=body, headers={"Content-Type": "application/json"}
            ) as resp,
        ):
            answer = await resp.read()
            if resp.status == 200:
                answer = self._swap(answer)
            return web.Response(body=answer, status=resp.status, content_type="application/json")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/federation/v1/pairing", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> Relay:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# --- tests (in order: nothing is pinned until the pairing test) ---------------------------


@pytest.mark.parametrize("mode", ["offer", "spake"])
def test_a_relay_that_substitutes_its_keys_is_detected_and_pins_nothing(
    nodes: dict[str, NodeProcess], mode: str
) -> None:
    inviter, partner = nodes[INVITER], nodes[PARTNER]
    code = invite(inviter, "probation")
    with Relay(inviter.url, mode) as relay:
        status, _out, err = accept(partner, relay.url, code)
    # offer: the partner's offer (the inviter answered no offer of its own);
    # spake: both SPAKE2 messages of `start`.
    assert relay.substituted == {"offer": 1, "spake": 2}[mode]
    assert status != 0 and "pairing_failed" in err and "nothing was pinned" in err
    assert peers(inviter)[0] == [] and peers(partner)[0] == []
    failed = key_entries(inviter, "pairing_failed")
    assert failed[-1]["problem"] == "key_confirmation" and failed[-1]["ended"] is False
    on_partner = key_entries(partner, "pairing_failed")[-1]
    assert (on_partner["role"], on_partner["problem"]) == ("accepter", "refused:pairing_failed")


def test_a_wrong_code_three_times_pins_nothing_and_ends_the_invitation(
    nodes: dict[str, NodeProcess],
) -> None:
    inviter, partner = nodes[INVITER], nodes[PARTNER]
    code = invite(inviter, "probation")
    number, first, second = code.split("-")
    wrong = [w for w in proto.wordlist() if w not in (first, second)][:3]
    for attempt, word in enumerate(wrong, 1):
        status, _out, err = accept(partner, inviter.url, f"{number}-{first}-{word}")
        assert status != 0 and "pairing_failed" in err, err
        assert key_entries(inviter, "pairing_failed")[-1]["attempt"] == attempt
    assert key_entries(inviter, "pairing_failed")[-1]["ended"] is True
    status, _out, err = accept(partner, inviter.url, code)
    assert status != 0 and "invitation_ended" in err, err
    assert peers(inviter)[0] == [] and peers(partner)[0] == []
    assert code not in inviter.log() and code not in partner.log()


def test_two_nodes_paired_with_a_code_pin_each_other_and_show_profiles(
    nodes: dict[str, NodeProcess],
) -> None:
    inviter, partner = nodes[INVITER], nodes[PARTNER]
    code = invite(inviter, "probation")
    status, out, err = accept(partner, inviter.url, code)
    assert status == 0, err
    paired = json.loads(out)
    assert paired["node"] == INVITER and paired["fingerprint"] == inviter.fingerprint

    (seen_by_inviter,), _ = peers(inviter)
    assert seen_by_inviter["node"] == PARTNER and seen_by_inviter["kind"] == "probation"
    assert seen_by_inviter["fingerprint"] == partner.fingerprint
    assert seen_by_inviter["profile"]["organisation"] == PROFILE["organisation"]
    assert seen_by_inviter["profile"]["dp_contact"] == PROFILE["dp-contact"]
    (seen_by_partner,), _ = peers(partner)
    assert seen_by_partner["node"] == INVITER and seen_by_partner["kind"] == "prison"
    assert seen_by_partner["fingerprint"] == inviter.fingerprint
    assert seen_by_partner["profile"]["organisation"] == "Inviting prison"

    numbers = [
        json.loads(run_cli("peers", "verify", "--dir", str(a.dir), b.node).stdout)
        for a, b in ((inviter, partner), (partner, inviter))
    ]
    assert numbers[0]["safety_number"] == numbers[1]["safety_number"] == paired["safety_number"]
    assert re.fullmatch(r"(\d{5} ){11}\d{5}", numbers[0]["safety_number"])
    assert key_entries(inviter, "peer_pinned")[-1]["via"] == "pairing"

    # The pins work: a release notice goes from the prison to probation.
    inviter.add_operator("casey", "caseworker")
    status, answer = inviter.api(
        "POST",
        "/api/v1/packets",
        {
            "to": [PARTNER],
            "schema": RELEASE_NOTICE,
            "body": example(RELEASE_NOTICE),
            "justification": "release planning for the shared case",
        },
    )
    assert status == 202, answer
    delivered = inviter.wait_delivered(answer["packets"][0]["pid"])
    assert delivered["deliveries"][0]["status"] == "delivered"


def test_a_changed_partner_profile_is_noticed_shown_and_audited(
    nodes: dict[str, NodeProcess],
) -> None:
    inviter, partner = nodes[INVITER], nodes[PARTNER]
    set_profile(partner, contact="new duty officer, +31 20 000 0002")
    (seen,), warnings = peers(inviter)
    assert seen["profile"]["contact"] == "new duty officer, +31 20 000 0002"
    assert seen["profile"]["serial"] == 2 and seen["profile_previous_serial"] == 1
    assert f"the profile of {PARTNER} changed" in warnings
    changed = key_entries(inviter, "peer_profile_changed")[-1]
    assert changed["counterpart"] == PARTNER and changed["fields"] == ["contact"]
    assert (changed["old_serial"], changed["new_serial"]) == (1, 2)


def test_peers_add_with_a_wrong_fingerprint_says_to_call_and_does_not_print_it(
    nodes: dict[str, NodeProcess],
) -> None:
    inviter, partner = nodes[INVITER], nodes[PARTNER]
    wrong = inviter.fingerprint  # someone else's fingerprint
    out = run_cli(
        "peers", "add", "--dir", str(inviter.dir), "--url", partner.url,
        f"--fingerprint={wrong}", "--kind", "probation", check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "call the partner agency" in out.stderr and "compare" in out.stderr
    assert partner.fingerprint not in out.stderr + out.stdout


def test_changing_a_partners_kind_needs_change_kind_and_is_audited(
    nodes: dict[str, NodeProcess],
) -> None:
    inviter, partner = nodes[INVITER], nodes[PARTNER]
    args = ["peers", "add", "--dir", str(inviter.dir), "--url", partner.url]
    args += [f"--fingerprint={partner.fingerprint}", "--kind", "exit"]
    refused = run_cli(*args, check=False)
    assert refused.returncode != 0 and "--change-kind" in refused.stderr
    assert peers(inviter)[0][0]["kind"] == "probation"
    changed = json.loads(run_cli(*args, "--change-kind").stdout)
    assert changed["kind"] == "exit"
    entry = key_entries(inviter, "peer_kind_changed")[-1]
    assert (entry["old_kind"], entry["new_kind"]) == ("probation", "exit")
    assert entry["counterpart"] == PARTNER


def test_the_pairing_endpoint_bounds_what_a_request_may_cost(
    nodes: dict[str, NodeProcess],
) -> None:
    """Size, media type and per-address allowances (last: it uses them up)."""
    inviter = nodes[INVITER]
    path, json_type = "/federation/v1/pairing", {"Content-Type": "application/json"}
    status, raw = inviter.request("POST", path, b"{" + b" " * (17 * 1024) + b"}", json_type)
    assert (status, json.loads(raw)["error"]) == (413, "too_large")
    status, raw = inviter.request("POST", path, b"{}", {"Content-Type": "text/plain"})
    assert (status, json.loads(raw)["error"]) == (415, "unsupported_media_type")
    start = proto.message("start", invitation=999, spake=bytes(33))
    answers = [inviter.request("POST", path, start, json_type) for _ in range(36)]
    codes = [json.loads(raw)["error"] for _status, raw in answers]
    assert codes[0] == "invitation_ended" and answers[0][0] == 410
    assert codes[-1] == "too_many_requests" and answers[-1][0] == 429
    assert code_count(codes, "invitation_ended") <= 30
    profiles = [inviter.request("GET", "/.well-known/handover/profile")[0] for _ in range(64)]
    assert profiles[0] == 200 and profiles[-1] == 429


def code_count(codes: list[str], code: str) -> int:
    return sum(1 for c in codes if c == code)
