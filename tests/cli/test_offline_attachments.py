"""`handover packet seal --attach --out` and `packet open --attachments --save`, in a
subprocess, checked against the independent implementation (tests/independent_att.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import independent_att as ia
from handover.node import keystore
from handover.protocol.keyset import accept_keyset
from handover.protocol.opening import Opened, open_packet
from handover.protocol.timeutil import now_ms

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_ID = "handover/release-notice/1"
BODY = json.loads((ROOT / "schemas/release-notice.v1.json").read_text("utf-8"))["examples"][0]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run(
        [sys.executable, "-m", "handover.cli", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"handover {' '.join(args)} failed: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli-att")
    for node in ("prison.att.example", "probation.att.example"):
        cli("keys", "init", "--node", node, "--dir", str(tmp / node))
    (tmp / "body.json").write_text(json.dumps(BODY), "utf-8")
    files = tmp / "files"
    files.mkdir()
    (files / "risk-assessment.pdf").write_bytes(os.urandom(200_000))
    (files / "licence conditions.txt").write_bytes(b"Report weekly; no contact.\n")
    (files / "empty").write_bytes(b"")
    return tmp


def seal(world: Path, out: Path) -> dict[str, object]:
    args = ["packet", "seal", "--keys", str(world / "prison.att.example"), "--schema", SCHEMA_ID]
    args += ["--to", str(world / "probation.att.example" / "keyset.json")]
    args += ["--body", str(world / "body.json"), "--out", str(out)]
    for name in ("risk-assessment.pdf", "licence conditions.txt", "empty"):
        args += ["--attach", str(world / "files" / name)]
    result: dict[str, object] = json.loads(cli(*args).stdout)
    return result


def open_args(world: Path, packet: Path) -> list[str]:
    return [
        "packet", "open", "--keys", str(world / "probation.att.example"),
        "--sender", str(world / "prison.att.example" / "keyset.json"), str(packet),
    ]  # fmt: skip


def test_seal_with_attachments_and_open_them(world: Path) -> None:
    out = world / "sealed"
    sealed = seal(world, out)
    listed = sealed["attachments"]
    assert isinstance(listed, list)
    assert [(a["name"], a["type"]) for a in listed] == [
        ("risk-assessment.pdf", "application/pdf"),
        ("licence conditions.txt", "text/plain"),
        ("empty", "application/octet-stream"),
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["packet.json"] + [f"{a['aid']}.att" for a in listed]
    )
    save = world / "saved"
    opened = json.loads(
        cli(
            *open_args(world, out / "packet.json"), "--attachments", str(out), "--save", str(save)
        ).stdout
    )
    assert opened["body"] == BODY
    for name in ("risk-assessment.pdf", "licence conditions.txt", "empty"):
        assert (save / name).read_bytes() == (world / "files" / name).read_bytes()
    # Without the flags: as before, plus the list (names, no keys).
    plain = json.loads(cli(*open_args(world, out / "packet.json")).stdout)
    assert [a["name"] for a in plain["attachments"]] == [a["name"] for a in listed]
    assert all("key" not in a for a in plain["attachments"])


def test_independent_side_decrypts_the_cli_streams(world: Path) -> None:
    """The items come from opening the packet in the package; each AID.att the CLI
    wrote is then checked and decrypted by the independent implementation."""
    out = world / "sealed-ind"
    seal(world, out)
    wire = (out / "packet.json").read_bytes().strip()
    keys = keystore.load_keys(world / "probation.att.example")
    sender = accept_keyset(
        (world / "prison.att.example" / "keyset.json").read_bytes(),
        node="prison.att.example", fingerprint=None, now=now_ms(),
    )  # fmt: skip
    result = open_packet(
        wire, receiver=keys.receiver_keys(), peer_keyset={sender.node: sender}.get,
        now=now_ms(), validator=_Permissive(),
    )  # fmt: skip
    assert isinstance(result, Opened) and len(result.attachments) == 3
    for item in result.attachments:
        if item.size > 100_000:
            continue  # the pure-Python secretstream is slow; the vectors cover two chunks
        data = ia.decrypt(ia.check_item(item.to_json()), (out / f"{item.aid}.att").read_bytes())
        assert data == (world / "files" / item.name).read_bytes()


def test_a_damaged_stream_fails_the_command_and_writes_nothing(world: Path) -> None:
    out = world / "sealed-bad"
    sealed = seal(world, out)
    listed = sealed["attachments"]
    assert isinstance(listed, list)
    victim = out / f"{listed[0]['aid']}.att"
    data = bytearray(victim.read_bytes())
    data[70_000] ^= 1  # inside the second chunk
    victim.write_bytes(bytes(data))
    save = world / "saved-bad"
    proc = cli(
        *open_args(world, out / "packet.json"), "--attachments", str(out), "--save", str(save),
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "stream_damaged" in proc.stderr
    assert list(save.iterdir()) == []
    # A missing stream: the same.
    victim.unlink()
    proc = cli(
        *open_args(world, out / "packet.json"), "--attachments", str(out), "--save", str(save),
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "missing" in proc.stderr
    assert list(save.iterdir()) == []


class _Permissive:
    def validate(self, schema_id: str, body: object) -> None:
        return None
