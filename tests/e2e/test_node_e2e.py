"""Two real nodes (`handover serve`, embedded PostgreSQL, real HTTP) hand over a packet."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation import Federation, run_cli
from handover.protocol.canonical import b64u_decode
from handover.protocol.keyset import accept_keyset
from handover.protocol.receipt import verify_receipt
from handover.protocol.timeutil import now_ms

PRISON, PROBATION = "prison.example", "probation.example"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(
        tmp_path_factory.mktemp("fed"), [(PRISON, "prison"), (PROBATION, "probation")]
    )
    federation.start()
    yield federation
    federation.stop()


def test_packet_delivered_end_to_end_with_verifiable_receipt(fed: Federation) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    pid = prison.send([PROBATION])
    packet = prison.wait_delivered(pid)
    (delivery,) = packet["deliveries"]
    assert delivery["node"] == PROBATION and delivery["status"] == "delivered"

    # The receipt verifies with the receiver's keyset, fetched independently.
    status, keyset_wire = probation.request("GET", "/.well-known/handover/keyset")
    assert status == 200
    keyset = accept_keyset(
        keyset_wire, node=PROBATION, fingerprint=probation.fingerprint, now=now_ms()
    )
    (row,) = prison.sql("SELECT pd FROM outbox WHERE pid = $1", pid)
    receipt = verify_receipt(
        json.dumps(delivery["receipt"]).encode(),
        sender=PRISON,
        pid=pid,
        pd=bytes(row["pd"]),
        recipient=PROBATION,
        keyset_for={PROBATION: keyset}.get,
        now=now_ms(),
    )
    assert receipt.status == "accepted"

    # Both audit logs show it: a disclosure and a delivery on the sender, a
    # collection holding the packet digest on the receiver, at the receipt's position.
    sender_ops = [r["op"] for r in prison.sql("SELECT op FROM audit_log WHERE pid = $1", pid)]
    assert sender_ops.count("disclosure") == 1 and sender_ops.count("delivery") == 1
    (collected,) = probation.sql(
        "SELECT seq, entry, head FROM audit_log WHERE pid = $1 AND op = 'collection'", pid
    )
    assert collected["seq"] == receipt.log.seq and bytes(collected["head"]) == receipt.log.head
    entry = json.loads(collected["entry"])
    assert b64u_decode(entry["pd"]) == bytes(row["pd"])

    # The receiver's inbox shows it; reading the body needs a justification.
    status, inbox = probation.api("GET", "/api/v1/inbox")
    assert status == 200 and pid in [i["pid"] for i in inbox["items"]]
    status, answer = probation.api("GET", f"/api/v1/inbox/{pid}")
    assert status == 400 and "justification" in answer["message"]
    status, opened = probation.api("GET", f"/api/v1/inbox/{pid}?justification=supervision+plan")
    assert status == 200 and opened["body"]["case_ref"] == entry["case"]
    assert probation.sql("SELECT op FROM audit_log WHERE pid = $1 AND op = 'consultation'", pid)

    # Both case timelines show it: queued then delivered on the sender, accepted on the receiver.
    case_ref = entry["case"]
    status, sent_case = prison.api("GET", f"/api/v1/cases/{case_ref}")
    assert status == 200
    events = [(e["pid"], e["counterpart"], e["event"]) for e in sent_case["timeline"]]
    assert (pid, PROBATION, "queued") in events and (pid, PROBATION, "delivered") in events
    assert events.index((pid, PROBATION, "queued")) < events.index((pid, PROBATION, "delivered"))
    status, received_case = probation.api("GET", f"/api/v1/cases/{case_ref}")
    assert status == 200
    assert (pid, PRISON, "accepted") in [
        (e["pid"], e["counterpart"], e["event"]) for e in received_case["timeline"]
    ]

    for node in (prison, probation):
        out = run_cli("audit", "verify", "--dir", str(node.dir), "--peers")
        assert json.loads(out.stdout)["ok"] is True


def test_local_api_requires_a_valid_token_and_role(fed: Federation) -> None:
    prison = fed[PRISON]
    assert prison.api("GET", "/api/v1/inbox", token="")[0] == 401
    assert prison.api("GET", "/api/v1/inbox", token="hov_wrong")[0] == 401
    status, answer = prison.api(
        "POST",
        "/api/v1/packets",
        {
            "to": [PROBATION],
            "schema": "handover/release-notice/1",
            "body": {},
            "justification": "checking the refusal here",
        },
        role="auditor",
    )
    assert status == 403 and answer["error"] == "forbidden"
    assert prison.api("GET", "/api/v1/audit", role="auditor")[0] == 200
    assert prison.api("GET", "/api/v1/audit", role="caseworker")[0] == 403


def test_keys_directory_is_private(fed: Federation) -> None:
    keys = Path(fed[PRISON].dir) / "keys"
    for path in keys.glob("*.key"):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_a_body_canonical_json_cannot_carry_is_refused_clearly(fed: Federation) -> None:
    prison = fed[PRISON]
    schema = "handover/responsibility-agreement/1"
    body = json.loads(
        (Path(__file__).parents[2] / "schemas" / "responsibility-agreement.v1.json").read_text()
    )["examples"][0]
    payload = {
        "to": [PROBATION],
        "schema": schema,
        "body": body,
        "justification": "agreement on supervision roles",
    }
    raw = json.dumps(payload).replace('"revision": 1', '"revision": 1.0', 1)
    assert '"revision": 1.0' in raw
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {prison.tokens['caseworker']}",
    }
    before = prison.sql("SELECT count(*) AS n FROM outbox")[0]["n"]
    # JSON Schema accepts 1.0 as an integer; canonical JSON has no floats: 422, not a 500.
    status, answer = prison.request("POST", "/api/v1/packets", raw.encode(), headers)
    assert status == 422, answer
    assert json.loads(answer)["error"] == "schema_invalid"
    assert prison.sql("SELECT count(*) AS n FROM outbox")[0]["n"] == before
    # The same body with an integer goes through.
    status, answer = prison.request(
        "POST", "/api/v1/packets", json.dumps(payload).encode(), headers
    )
    assert status == 202, answer
