"""Pairing with a short code, partner profiles and the kind-change guard, with two
real nodes in one process (tests/inproc.py) on a MemoryTransport and a shared clock.

The same over real HTTP between node processes, with a relay in between, is
tests/e2e/test_pairing.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from handover.node.errors import PairingRefused
from handover.protocol import pairing as proto
from handover.protocol.errors import ConfigError
from handover.protocol.pairing import safety_number
from handover.store import outbox as outbox_store
from handover.workflow.errors import ErrorCode, RequestRefused
from inproc import (
    RELEASE_NOTICE,
    Cluster,
    SharedClock,
    audit_entries,
    new_case,
    release_notice,
    send,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
INVITER, PARTNER = "inviter.test", "partner.test"
PROFILE = {
    "organisation": "Partner probation service",
    "country": "NL",
    "jurisdiction": "Arrondissement Amsterdam",
    "dp_contact": "privacy desk, +31 20 000 0000",
    "contact": "duty officer, +31 20 000 0001",
    "responsibilities": "Supervision after release; receives release notices.",
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pair(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    nodes = Cluster(tmp_path_factory.mktemp("pairing"), SharedClock())
    try:
        await nodes.add(INVITER, "prison")
        await nodes.add(PARTNER, "probation")
        yield nodes
    finally:
        await nodes.close()


async def test_an_expired_invitation_pins_nothing(pair: Cluster) -> None:
    inviter, partner = pair[INVITER], pair[PARTNER]
    code = (await inviter.pairing.invite("probation"))["code"]
    pair.clock.advance(61 * 60 * 1000)
    with pytest.raises(PairingRefused) as refused:
        await partner.pairing.accept(inviter.config.url, code)
    assert refused.value.code == "invitation_ended"
    assert PARTNER not in inviter.directory.peers and INVITER not in partner.directory.peers
    number = int(code.split("-")[0])
    async with inviter.db.connection() as conn:
        status = await conn.fetchval(
            "SELECT status FROM pair_invitations WHERE invitation = $1", number
        )
    assert status == "expired"


async def test_a_wrong_code_three_times_ends_the_invitation(pair: Cluster) -> None:
    inviter, partner = pair[INVITER], pair[PARTNER]
    code = (await inviter.pairing.invite("probation"))["code"]
    number, _ = proto.parse_code(code)
    wrong = [w for w in proto.wordlist() if w not in code.split("-")][:3]
    for word in wrong:
        with pytest.raises(PairingRefused) as refused:
            await partner.pairing.accept(inviter.config.url, f"{number}-{word}-{word}")
        assert refused.value.code == "pairing_failed"
    # The right code now finds the invitation ended.
    with pytest.raises(PairingRefused) as refused:
        await partner.pairing.accept(inviter.config.url, code)
    assert refused.value.code == "invitation_ended"
    assert PARTNER not in inviter.directory.peers and INVITER not in partner.directory.peers
    failed = [e for e in await audit_entries(inviter) if e.get("action") == "pairing_failed"]
    assert [e["attempt"] for e in failed[-3:]] == [1, 2, 3]
    assert failed[-1]["ended"] is True
    assert code not in str(await audit_entries(inviter))  # the code is never logged


async def test_a_code_pairs_both_nodes_with_profiles(pair: Cluster) -> None:
    inviter, partner = pair[INVITER], pair[PARTNER]
    await partner.profiles.set_own(PROFILE)
    await inviter.profiles.set_own({**PROFILE, "organisation": "Inviting prison"})
    code = (await inviter.pairing.invite("probation"))["code"]
    result = await partner.pairing.accept(inviter.config.url, code)
    assert result["node"] == INVITER and result["kind"] == "prison"
    assert inviter.directory.kind(PARTNER) == "probation"
    assert partner.directory.kind(INVITER) == "prison"
    assert inviter.directory.peers[PARTNER].fingerprint == partner.directory.keys.fingerprint
    assert partner.directory.peers[INVITER].fingerprint == inviter.directory.keys.fingerprint
    held = await inviter.profiles.held(PARTNER)
    assert held.profile is not None
    assert held.profile.fields["organisation"] == PROFILE["organisation"]
    assert held.profile.fields["kind"] == "probation"
    held = await partner.profiles.held(INVITER)
    assert held.profile is not None and held.profile.fields["organisation"] == "Inviting prison"
    assert result["safety_number"] == safety_number(
        inviter.directory.keys.fingerprint, partner.directory.keys.fingerprint
    )
    # Used once: the same code does not pair again.
    with pytest.raises(PairingRefused):
        await partner.pairing.accept(inviter.config.url, code)


async def test_a_profile_change_is_noticed_and_audited(pair: Cluster) -> None:
    inviter, partner = pair[INVITER], pair[PARTNER]
    await partner.profiles.set_own({**PROFILE, "contact": "new duty officer, +31 20 000 0002"})
    seen = await inviter.profiles.refresh(PARTNER)
    assert seen.changed and seen.profile is not None
    assert seen.profile.fields["contact"].startswith("new duty officer")
    entry = [e for e in await audit_entries(inviter) if e.get("action") == "peer_profile_changed"]
    assert entry[-1]["counterpart"] == PARTNER and entry[-1]["fields"] == ["contact"]
    assert not (await inviter.profiles.refresh(PARTNER)).changed  # the same again: no change


async def test_the_kind_of_a_pinned_partner_changes_only_when_asked_and_nothing_waits(
    pair: Cluster,
) -> None:
    inviter, partner = pair[INVITER], pair[PARTNER]
    url, fingerprint = partner.config.url, partner.directory.keys.fingerprint
    with pytest.raises(ConfigError, match="--change-kind"):
        await inviter.directory.pin(url, fingerprint, "exit")
    assert inviter.directory.kind(PARTNER) == "probation"
    pair.transport.down(url)
    sent = await send(inviter, [PARTNER], RELEASE_NOTICE, release_notice(new_case()))
    pair.transport.down(url, False)
    async with inviter.db.connection() as conn:
        assert await outbox_store.pending_to(conn, PARTNER) >= 1
    with pytest.raises(ConfigError, match="wait in the outbox"):
        await inviter.directory.pin(url, fingerprint, "exit", change_kind=True)
    assert inviter.directory.kind(PARTNER) == "probation"
    assert sent


async def test_starts_that_are_never_confirmed_count_and_end_the_invitation(
    pair: Cluster,
) -> None:
    """Someone guessing who never sends `confirm` still uses up the three attempts."""
    inviter = pair[INVITER]
    code = (await inviter.pairing.invite("probation"))["code"]
    number, password = proto.parse_code(code)
    for _ in range(3):
        start = proto.Spake("accepter", f"{number}-acid-acid")
        answer = await inviter.pairing.answer(
            proto.message("start", invitation=number, spake=start.message)
        )
        assert len(proto.parse_message(answer, "start", {"spake": 33})["spake"]) == 33
    fourth = proto.Spake("accepter", password)
    with pytest.raises(RequestRefused) as refused:
        await inviter.pairing.answer(
            proto.message("start", invitation=number, spake=fourth.message)
        )
    assert refused.value.code is ErrorCode.INVITATION_ENDED
    ended = [e for e in await audit_entries(inviter) if e.get("action") == "pairing_failed"]
    assert ended[-1]["problem"] == "attempts" and ended[-1]["ended"] is True


async def test_malformed_pairing_messages_are_refused_as_bad_requests(pair: Cluster) -> None:
    inviter = pair[INVITER]
    for raw in (
        b"not json",
        b'{"step":"start"}',
        proto.message("start", invitation=1, spake=b"short"),
        proto.message("start", invitation=1000, spake=bytes(33)),
        proto.message("start", invitation=1, spake=bytes(33), extra="x"),
        b'{"spake":"","step":"dance","typ":"hp1.pair","v":1}',
    ):
        with pytest.raises(RequestRefused) as refused:
            await inviter.pairing.answer(raw)
        assert refused.value.code is ErrorCode.BAD_REQUEST, raw


async def test_a_partial_profile_set_keeps_the_other_fields(pair: Cluster) -> None:
    partner = pair[PARTNER]
    await partner.profiles.set_own(PROFILE)
    profile = await partner.profiles.set_own({"contact": "night desk, +31 20 000 0009"})
    assert profile.fields["contact"] == "night desk, +31 20 000 0009"
    assert profile.fields["organisation"] == PROFILE["organisation"]
    assert profile.fields["kind"] == "probation"
