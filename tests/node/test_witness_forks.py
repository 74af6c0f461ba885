"""Declared forks (docs/protocol.md 5.1), in one process: a prison node loses the
newest entries of its log as a restore from backup would, declares the fork
(`declare_fork`, what `handover restore` runs), and probation's witnessing
reports a declared fork; lies and later truncations are still silent forks.
The own log (`AuditLog.verify`) checks archived chains and declarations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from handover.node.auditing import declare_fork
from handover.node.runtime import Node
from handover.protocol.auditchain import LogPosition, make_fork_declaration
from handover.protocol.canonical import b64u_encode
from inproc import Cluster, body, send_delivered

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRISON, PROBATION = "prison.fork.test", "probation.fork.test"
RELEASE, CONDITIONS = "handover/release-notice/1", "handover/condition-update/1"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    nodes = Cluster(tmp_path_factory.mktemp("forks"))
    try:
        await nodes.add(PRISON, "prison")
        await nodes.add(PROBATION, "probation")
        await nodes.pin_all()
        yield nodes
    finally:
        await nodes.close()


async def traffic(pair: Cluster) -> None:
    prison, probation = pair[PRISON], pair[PROBATION]
    await send_delivered(prison, [PROBATION], RELEASE, body(RELEASE))
    await send_delivered(probation, [PRISON], CONDITIONS, body(CONDITIONS))


async def witness(pair: Cluster) -> dict[str, Any]:
    (report,) = await pair[PROBATION].audit.witness_peers()
    return report.to_json()


async def sql(node: Node, query: str, *args: Any) -> list[Any]:
    async with node.db.connection() as conn:
        return list(await conn.fetch(query, *args))


async def test_a_restore_declared_as_a_fork_is_told_from_a_silent_one(pair: Cluster) -> None:
    prison = pair[PRISON]
    await traffic(pair)
    assert (await witness(pair))["ok"] is True
    ((backup_seq, backup_head),) = await sql(
        prison, "SELECT seq, head FROM audit_log ORDER BY seq DESC LIMIT 1"
    )
    await traffic(pair)  # entries the "restore" loses; probation holds statements about them
    assert (await witness(pair))["ok"] is True

    # What `handover restore` does to the database: the entries after the
    # backup are gone, and the fork is declared.
    await sql(prison, "DELETE FROM audit_log WHERE seq > $1", backup_seq)
    pair.clock.advance(1000)
    fork = await declare_fork(
        prison.db,
        prison.directory.keys.identity(),
        reason="test restore",
        backup_at=pair.clock() - 500,
        clock=pair.clock,
    )
    assert (fork.chain, fork.prev_seq, bytes(fork.prev_head)) == (1, backup_seq, backup_head)

    report = await witness(pair)
    assert report["ok"] is False and report["fork"] == "declared", report
    assert report["problem"].startswith("declared fork:")
    assert report["declared_fork"]["lost"] >= 2
    (declared,) = report["declared_fork"]["declarations"]
    assert declared["previous"] == {"seq": backup_seq, "head": b64u_encode(backup_head)}

    own = await prison.audit.verify(peers=False)
    assert own["ok"] is True and own["chain"]["entries"] == 1
    assert own["forks"][0]["ok"] is True and own["forks"][0]["entries"] == backup_seq

    # Work goes on on the new chain: still the same declared fork.
    pair.clock.advance(1000)
    await traffic(pair)
    assert (await witness(pair))["fork"] == "declared"

    # The new chain cut short again, silently: no declaration covers that.
    await sql(prison, "DELETE FROM audit_log WHERE seq > 1")
    report = await witness(pair)
    assert report["fork"] == "silent" and "declared_fork" not in report
    assert report["problem"].startswith("silent fork:")
    assert "no fork declaration covers it" in report["problem"]


async def test_a_declaration_that_contradicts_what_the_peer_signed_covers_nothing(
    pair: Cluster,
) -> None:
    prison = pair[PRISON]
    probation = pair[PROBATION]
    held = await sql(
        probation,
        "SELECT sender_seq, sender_head FROM received WHERE sender = $1 ORDER BY iat LIMIT 1",
        PRISON,
    )
    seq = held[0]["sender_seq"]
    identity = prison.directory.keys.identity()
    lie = make_fork_declaration(
        node=PRISON,
        kid=identity.kid,
        key=identity.key,
        previous=LogPosition(seq, bytes(32 * [7])),
        now=pair.clock(),
    )
    await sql(prison, "UPDATE audit_forks SET wire = $1", lie)
    report = await witness(pair)
    assert report["fork"] == "silent", report
    assert "another head than its fork declaration names" in report["problem"]
    assert {s["kind"] for s in report["conflict"]} == {"packet", "fork"}

    # The own log sees the declaration no longer matches its archive either.
    own = await prison.audit.verify(peers=False)
    assert own["ok"] is False
    assert "does not match the archive" in own["forks"][0]["problem"]


async def test_an_edited_archive_is_named_by_the_own_verification(pair: Cluster) -> None:
    prison = pair[PRISON]
    await sql(prison, "UPDATE audit_archive SET entry = entry || ' '::bytea WHERE seq = 2")
    own = await prison.audit.verify(peers=False)
    (fork,) = own["forks"]
    assert own["ok"] is False and fork["ok"] is False and fork["bad_seq"] == 2
