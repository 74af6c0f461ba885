"""The offline CLI, run for real in subprocesses: keys init, packet seal / open / verify.

Every failure must be a non-zero exit with exactly one line on stderr.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import SCHEMA_ID, example_body
from handover.node import keystore
from handover.protocol import crypto
from handover.protocol.canonical import b64u_decode, b64u_encode, cj_dumps
from handover.protocol.packet import PACKET_LABEL

SRC = Path(__file__).resolve().parents[2] / "src"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "handover.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a refusal: non-zero exit, nothing on stdout, exactly one line on stderr."""
    assert result.returncode != 0, result.stdout
    assert result.stdout == ""
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def init(directory: Path, node: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(
        ok(run("keys", "init", "--node", node, "--dir", str(directory))).stdout
    )
    return out


class World:
    """Four key directories (sender, two recipients, an outsider) and one sealed packet."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fp: dict[str, str] = {}
        for name, node in [
            ("alice", "prison.alice.example"),
            ("bob", "probation.bob.example"),
            ("carol", "exit.carol.example"),
            ("eve", "eve.example"),
        ]:
            self.fp[name] = init(root / name, node)["fingerprint"]
        self.body = root / "body.json"
        self.body.write_text(json.dumps(example_body(), indent=2))
        sealed = ok(
            run(
                "packet", "seal",
                "--keys", str(self.keys("alice")),
                "--to", str(self.keyset("bob")),
                "--to", str(self.keyset("carol")),
                "--schema", SCHEMA_ID,
                "--body", str(self.body),
            )
        )  # fmt: skip
        self.packet = root / "packet.json"
        self.packet.write_text(sealed.stdout)
        self.seal_stderr = sealed.stderr

    def keys(self, name: str) -> Path:
        return self.root / name

    def keyset(self, name: str) -> Path:
        return self.root / name / keystore.KEYSET_FILE

    def open(self, name: str, packet: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return run(
            "packet", "open",
            "--keys", str(self.keys(name)),
            "--sender", str(self.keyset("alice")),
            *extra,
            str(packet),
        )  # fmt: skip

    def verify(self, packet: Path, *extra: str, cwd: Path | None = None) -> Any:
        return run(
            "packet", "verify", "--sender", str(self.keyset("alice")), *extra, str(packet), cwd=cwd
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("cli"))


def write_tampered(world: World, name: str, change: Any) -> Path:
    wire = json.loads(world.packet.read_text())
    change(wire)
    path = world.root / name
    path.write_text(json.dumps(wire) + "\n")
    return path


# --- keys init ------------------------------------------------------------------------


def test_keys_init_creates_private_files_0600_and_prints_the_fingerprint(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    out = init(directory, "prison.example")
    assert set(out) == {"node", "fingerprint", "keyset"}
    assert out["node"] == "prison.example"
    assert Path(out["keyset"]) == directory / "keyset.json"
    names = sorted(p.name for p in directory.iterdir())
    assert "root.key" in names and "keyset.json" in names
    assert len([n for n in names if n.startswith("sig-") and n.endswith(".key")]) == 1
    assert len([n for n in names if n.startswith("box-") and n.endswith(".key")]) == 1
    for name in names:
        if name.endswith(".key"):
            assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    # The printed fingerprint is kid("ed25519-root", root) of the written keyset.
    kb = json.loads(b64u_decode(json.loads((directory / "keyset.json").read_bytes())["hp1k"]))
    assert out["fingerprint"] == crypto.kid("ed25519-root", b64u_decode(kb["root"]))
    keys = keystore.load_keys(directory)
    assert keys.fingerprint == out["fingerprint"]
    assert f"sig-{keys.identity().kid}.key" in names


def test_keys_init_refuses_to_overwrite(tmp_path: Path) -> None:
    directory = tmp_path / "node"
    init(directory, "prison.example")
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    message = failed(run("keys", "init", "--node", "prison.example", "--dir", str(directory)))
    assert "refusing to overwrite" in message
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


def test_keys_init_refuses_a_bad_node_id(tmp_path: Path) -> None:
    message = failed(run("keys", "init", "--node", "Prison_Example", "--dir", str(tmp_path / "n")))
    assert "not a valid node id" in message


# --- seal and open -------------------------------------------------------------------------


def test_seal_warns_once_per_recipient_keyset_trusted_without_fingerprint(world: World) -> None:
    lines = world.seal_stderr.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("warning: no --fingerprint given") for line in lines)
    wire = json.loads(world.packet.read_text())
    assert set(wire) == {"hp1", "sig", "ct"}


@pytest.mark.parametrize("name", ["bob", "carol"])
def test_both_recipients_open_the_packet(world: World, name: str) -> None:
    result = ok(world.open(name, world.packet, f"--fingerprint={world.fp['alice']}"))
    opened = json.loads(result.stdout)
    assert opened["schema"] == SCHEMA_ID
    assert opened["body"] == example_body()
    assert opened["log"] == {"seq": 0, "head": b64u_encode(bytes(32))}
    assert "no --fingerprint" not in result.stderr


def test_open_without_fingerprint_warns_in_one_line(world: World) -> None:
    result = ok(world.open("carol", world.packet))
    assert json.loads(result.stdout)["body"] == example_body()
    lines = result.stderr.splitlines()
    assert lines[0].startswith("warning: no --fingerprint given: trusting the root key in ")
    assert world.fp["alice"] in lines[0]


def test_a_third_node_cannot_open(world: World) -> None:
    message = failed(world.open("eve", world.packet, f"--fingerprint={world.fp['alice']}"))
    assert message.startswith("handover: invalid packet: not_a_recipient")


def test_wrong_fingerprint_is_refused(world: World) -> None:
    message = failed(world.open("bob", world.packet, f"--fingerprint={world.fp['bob']}"))
    assert "does not match the pinned" in message


def test_wrong_fingerprint_starting_with_a_dash_is_refused_not_misparsed(world: World) -> None:
    message = failed(world.open("bob", world.packet, "--fingerprint=-" + "A" * 21))
    assert "does not match the pinned -AAAA" in message


def test_tampered_packet_is_refused(world: World) -> None:
    def flip(wire: dict[str, str]) -> None:
        ct = bytearray(b64u_decode(wire["ct"]))
        ct[200] ^= 0x01
        wire["ct"] = b64u_encode(bytes(ct))

    tampered = write_tampered(world, "tampered-ct.json", flip)
    fp = f"--fingerprint={world.fp['alice']}"
    # Bob has opened the original (same HB and SIG, so the same pd: the replay path) ...
    ok(world.open("bob", world.packet, fp))
    message = failed(world.open("bob", tampered, fp))
    assert message.startswith("handover: invalid packet: ciphertext_mismatch")
    # ... and a recipient that has not (a fresh copy of Carol's keys) refuses it the same way.
    fresh = world.root / "carol-fresh"
    if not fresh.exists():
        fresh.mkdir(mode=0o700)
        for path in world.keys("carol").iterdir():
            if path.name != "replay.json":
                (fresh / path.name).write_bytes(path.read_bytes())
    result = run(
        "packet", "open", "--keys", str(fresh), "--sender", str(world.keyset("alice")), fp,
        str(tampered),
    )  # fmt: skip
    assert failed(result).startswith("handover: invalid packet: ciphertext_mismatch")


def test_not_json_is_refused(world: World) -> None:
    garbage = world.root / "garbage.json"
    garbage.write_text("not json\n\n{")
    message = failed(world.open("bob", garbage, f"--fingerprint={world.fp['alice']}"))
    assert message.startswith("handover: invalid packet: malformed_wire")


def _resigned_same_pid(world: World) -> Path:
    """Alice's packet with another exp, honestly re-signed: same pid, other content."""
    alice = keystore.load_keys(world.keys("alice"))

    def change(wire: dict[str, str]) -> None:
        header = json.loads(b64u_decode(wire["hp1"]))
        header["exp"] -= 1
        hb = cj_dumps(header)
        wire["hp1"] = b64u_encode(hb)
        wire["sig"] = b64u_encode(alice.identity().key.sign(crypto.pae(PACKET_LABEL, hb)))

    return write_tampered(world, "same-pid.json", change)


def test_replayed_pid_with_other_content_is_refused(world: World) -> None:
    fp = f"--fingerprint={world.fp['alice']}"
    first = world.open("bob", world.packet, fp)  # may already be recorded: then a replay
    assert first.returncode == 0, first.stderr
    conflicting = _resigned_same_pid(world)
    message = failed(world.open("bob", conflicting, fp))
    assert message.startswith("handover: invalid packet: replay_conflict")


def test_identical_replay_is_opened_again_with_a_warning(world: World) -> None:
    fp = f"--fingerprint={world.fp['alice']}"
    ok(world.open("bob", world.packet, fp))
    again = ok(world.open("bob", world.packet, fp))
    assert json.loads(again.stdout)["body"] == example_body()
    assert again.stderr.count("\n") == 1 and "identical replay" in again.stderr


# --- verify ---------------------------------------------------------------------------------


def test_verify_prints_the_header_without_any_private_key(world: World, tmp_path: Path) -> None:
    result = ok(world.verify(world.packet, f"--fingerprint={world.fp['alice']}", cwd=tmp_path))
    out = json.loads(result.stdout)
    assert out["signature"] == "valid"
    assert out["time"] == "valid"
    header = out["header"]
    assert header["typ"] == "hp1.packet"
    assert header["from"]["node"] == "prison.alice.example"
    assert [t["node"] for t in header["to"]] == ["probation.bob.example", "exit.carol.example"]
    assert "body" not in result.stdout and "case_ref" not in result.stdout
    assert result.stderr == ""


def test_verify_refuses_a_tampered_header(world: World) -> None:
    def change(wire: dict[str, str]) -> None:
        header = json.loads(b64u_decode(wire["hp1"]))
        header["exp"] += 1
        wire["hp1"] = b64u_encode(cj_dumps(header))

    tampered = write_tampered(world, "tampered-header.json", change)
    message = failed(world.verify(tampered, f"--fingerprint={world.fp['alice']}"))
    assert message.startswith("handover: invalid packet: bad_signature")


def test_verify_refuses_a_packet_from_another_sender(world: World) -> None:
    result = run(
        "packet", "verify",
        "--sender", str(world.keyset("bob")),
        f"--fingerprint={world.fp['bob']}",
        str(world.packet),
    )  # fmt: skip
    assert failed(result).startswith("handover: invalid packet: unknown_sender")


def test_missing_packet_file_is_one_line(world: World) -> None:
    message = failed(
        world.verify(world.root / "missing.json", f"--fingerprint={world.fp['alice']}")
    )
    assert message.startswith("handover: cannot read")
