"""`handover backup` and `handover restore` on real node processes.

Two nodes exchange packets both ways; the prison's node is backed up while it
runs; more packets go both ways (so probation holds receipts and sender
commitments from the prison beyond the backup); the prison's node stops and
is restored from the backup into a new directory, then served on the same
address. Probation's witnessing must see a declared fork, not a silent one;
the restored node's own audit log must verify; new packets flow again; a
packet pending at backup time is delivered again and deduplicated.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation import Federation, NodeProcess, cli_env, run_cli
from handover.protocol.auditchain import verify_checkpoint, verify_fork_declaration
from handover.protocol.canonical import b64u_encode
from handover.protocol.keyset import accept_keyset
from handover.protocol.timeutil import now_ms
from test_openapi import check_answer

PRISON, PROBATION = "prison.example", "probation.example"
PASSPHRASE = "lantern orbit seventy quiet harbour"
# What each kind may send the other under the default sharing policy.
SCHEMA = {PRISON: "handover/release-notice/1", PROBATION: "handover/condition-update/1"}


def handover(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`handover ARGS` with `stdin` as its standard input (the passphrase, say)."""
    return subprocess.run(
        [sys.executable, "-m", "handover.cli", *args],
        input=stdin or "",
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=180,
        check=False,
    )


def verify(node: Path, *, peers: bool = False) -> tuple[subprocess.CompletedProcess[str], Any]:
    proc = run_cli(
        "audit", "verify", "--dir", str(node), *(["--peers"] if peers else []), check=False
    )
    return proc, json.loads(proc.stdout)


def secrets_of(directory: Path) -> list[str]:
    """The private key files' contents (what must never be printed)."""
    keys = directory / "keys"
    return [
        p.read_text().strip()
        for p in keys.iterdir()
        if p.name.endswith(".key") and p.read_text().strip()
    ]


def exchange(a: NodeProcess, b: NodeProcess, n: int = 1) -> list[str]:
    """`n` packets each way, delivered; their pids."""
    pids = []
    for sender, receiver in ((a, b), (b, a)):
        for _ in range(n):
            pid = sender.send([receiver.node], SCHEMA[sender.node])
            assert sender.wait_delivered(pid)["deliveries"][0]["status"] == "delivered"
            pids.append(pid)
    return pids


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    federation = Federation(tmp_path, [(PRISON, "prison"), (PROBATION, "probation")])
    for node in federation.nodes.values():
        node.configure(retry_base_s=0.2, retry_max_s=1.0)
    federation.start()
    yield federation
    federation.stop()


def test_restore_from_backup_is_a_declared_fork_and_the_node_carries_on(
    fed: Federation, tmp_path: Path
) -> None:
    prison, probation = fed[PRISON], fed[PROBATION]
    passfile = tmp_path / "passphrase"
    passfile.write_text(PASSPHRASE + "\n")
    passfile.chmod(0o600)
    before = exchange(prison, probation)

    # A packet pending at backup time: probation is down while it is sent.
    probation.stop()
    pending = prison.send([PROBATION])
    assert prison.packet(pending)["deliveries"][0]["status"] == "pending"

    # The backup, taken while the prison's node runs.
    backup = tmp_path / "prison.hbk"
    out = run_cli(
        "backup", "--dir", str(prison.dir), "--out", str(backup), "--passphrase-file", str(passfile)
    )
    summary = json.loads(out.stdout)
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert {"handover.toml", "keys/storage.key", "keys/root.key"} <= set(summary["files"])
    raw = backup.read_bytes()
    assert raw.startswith(b"HOVRBAK\x00\x01\x01")
    for secret in secrets_of(prison.dir):
        assert secret not in out.stdout + out.stderr
        assert secret.encode() not in raw
    (at_backup,) = prison.sql("SELECT max(seq) AS seq FROM audit_log")

    # The backup refuses to overwrite a file.
    again = handover(
        "backup", "--dir", str(prison.dir), "--out", str(backup), stdin=PASSPHRASE + "\n"
    )
    assert again.returncode != 0 and "already exists" in again.stderr
    assert backup.read_bytes() == raw

    # After the backup: the pending packet arrives, and more go both ways.
    probation.start()
    assert prison.wait_delivered(pending)["deliveries"][0]["status"] == "delivered"
    (first_receipt,) = probation.sql(
        "SELECT receipt FROM received WHERE pid = $1 AND sender = $2", pending, PRISON
    )
    after = exchange(prison, probation, 2)
    proc, report = verify(probation.dir, peers=True)
    assert report["ok"] is True, proc.stderr
    old_heads = {
        r["seq"]: b64u_encode(bytes(r["head"]))
        for r in prison.sql("SELECT seq, head FROM audit_log ORDER BY seq")
    }
    lost_seq = max(old_heads)
    prison.stop()

    # A wrong passphrase and a tampered file: one line each, nothing written.
    restored = tmp_path / "prison-restored"
    wrong = handover(
        "restore", "--from", str(backup), "--dir", str(restored), stdin="not the passphrase\n"
    )
    assert wrong.returncode == 1 and not restored.exists()
    assert wrong.stderr.count("\n") == 1 and "wrong passphrase" in wrong.stderr
    tampered = tmp_path / "tampered.hbk"
    changed = bytearray(raw)
    changed[len(raw) // 2] ^= 0x01
    tampered.write_bytes(bytes(changed))
    bad = handover(
        "restore", "--from", str(tampered), "--dir", str(restored), "--passphrase-file",
        str(passfile),
    )  # fmt: skip
    assert bad.returncode == 1 and not restored.exists()
    assert bad.stderr.count("\n") == 1 and "altered" in bad.stderr
    truncated = tmp_path / "truncated.hbk"
    truncated.write_bytes(raw[: len(raw) - 40])
    cut = handover("restore", "--from", str(truncated), "--dir", str(restored), stdin=PASSPHRASE)
    assert cut.returncode == 1 and not restored.exists() and "truncated" in cut.stderr

    # The restore, passphrase on stdin.
    done = handover(
        "restore", "--from", str(backup), "--dir", str(restored), "--reason",
        "disk failure on the prison's server", stdin=PASSPHRASE + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    previous = result["fork"]["previous"]
    # The last head the backup holds: a position of the old chain, from when the
    # backup ran (the idle node may have written an entry since the dump began).
    backup_seq = previous["seq"]
    assert previous == {"seq": backup_seq, "head": old_heads[backup_seq]}
    assert at_backup["seq"] - 2 <= backup_seq <= at_backup["seq"] < lost_seq
    for secret in secrets_of(restored):
        assert secret not in done.stdout + done.stderr
    assert stat.S_IMODE((restored / "keys").stat().st_mode) == 0o700
    for path in [restored / "handover.toml", *(restored / "keys").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    # Served from the new directory on the same address: probation's pin still fits,
    # and the keyset, signed again at the restore, is newer than any it accepted.
    prison.dir = restored
    prison.start()
    (accepted,) = probation.sql("SELECT serial FROM peers WHERE node = $1", PRISON)
    assert result["keyset_serial"] > accepted["serial"]
    repin = run_cli(
        "peers", "add", "--dir", str(probation.dir), "--url", prison.url,
        f"--fingerprint={prison.fingerprint}", "--kind", "prison",
    )  # fmt: skip
    assert json.loads(repin.stdout)["serial"] == result["keyset_serial"]
    proc, own = verify(restored)
    assert own["ok"] is True, proc.stderr
    assert own["chain"]["entries"] >= 1
    (fork,) = own["forks"]
    assert fork["ok"] is True and fork["entries"] == backup_seq
    (first,) = prison.sql("SELECT entry FROM audit_log WHERE seq = 1")
    entry = json.loads(bytes(first["entry"]))
    assert entry["op"] == "alteration" and entry["action"] == "restored_from_backup"
    assert entry["previous"] == result["fork"]["previous"]
    assert entry["justification"] == "disk failure on the prison's server"
    assert entry["backup_at"] == summary["created_at"]
    archived = prison.sql("SELECT count(*) AS n FROM audit_archive WHERE chain = 1")
    assert archived[0]["n"] == backup_seq

    # The declaration is published and signed with the prison's signing key.
    status, raw_keyset = prison.request("GET", "/.well-known/handover/keyset")
    keyset = accept_keyset(raw_keyset, node=PRISON, fingerprint=prison.fingerprint, now=now_ms())
    status, forks = prison.get("/federation/v1/log/forks")
    assert status == 200 and set(forks) == {"forks"}
    check_answer("GET", "/federation/v1/log/forks", status, forks)
    (wire,) = forks["forks"]
    declaration = verify_fork_declaration(json.dumps(wire), keyset, now_ms())
    assert declaration.previous.to_json() == previous

    # Probation sees a declared fork of the prison's log: not ok, but declared.
    proc, report = verify(probation.dir, peers=True)
    assert proc.returncode == 1 and report["ok"] is False and report["chain"]["ok"] is True
    (peer,) = report["peers"]
    assert peer["ok"] is False and peer["fork"] == "declared", peer
    assert peer["problem"].startswith("declared fork:")
    assert f"peer {PRISON}: declared fork:" in proc.stderr
    assert "silent fork" not in proc.stderr
    assert peer["declared_fork"]["lost"] >= 1
    # The local API answers the same, in the documented shape.
    for node, path in (
        (probation, "/api/v1/audit/verify?peers=1"),
        (prison, "/api/v1/audit/verify"),
    ):
        status, answer = node.api("POST", path, role="auditor")
        check_answer("POST", "/api/v1/audit/verify", status, answer)
    assert status == 200 and answer["forks"][0]["ok"] is True
    (held,) = peer["declared_fork"]["declarations"]
    assert held["previous"] == result["fork"]["previous"]

    # The packet pending at backup time goes again; probation answers with the
    # receipt it stored the first time and keeps one copy.
    assert prison.wait_delivered(pending)["deliveries"][0]["status"] == "delivered"
    copies = probation.sql("SELECT receipt FROM received WHERE pid = $1", pending)
    assert copies == [first_receipt]
    (stored,) = prison.sql("SELECT receipt FROM deliveries WHERE pid = $1", pending)
    assert bytes(stored["receipt"]) == bytes(first_receipt["receipt"])

    # New packets both ways, with new pids, delivered.
    fresh = exchange(prison, probation)
    assert not set(fresh) & {*before, pending, *after}
    assert len(set(fresh)) == len(fresh)
    (latest,) = probation.sql(
        "SELECT sender_seq FROM received WHERE pid = $1 AND sender = $2", fresh[0], PRISON
    )
    assert latest["sender_seq"] < lost_seq  # on the new chain
    proc, report = verify(probation.dir, peers=True)
    assert report["peers"][0]["fork"] == "declared", report
    proc, own = verify(restored)
    assert own["ok"] is True, proc.stderr
    status, head = prison.request("GET", "/.well-known/handover/log-head")
    assert verify_checkpoint(head, keyset, now_ms()).seq == own["chain"]["entries"]

    # Without its declaration the same fork is a silent one.
    prison.sql("DELETE FROM audit_forks")
    proc, report = verify(probation.dir, peers=True)
    (peer,) = report["peers"]
    assert peer["fork"] == "silent" and "declared_fork" not in peer
    assert f"peer {PRISON}: silent fork:" in proc.stderr


def test_restore_refuses_a_directory_in_use_and_a_dsn_database_that_is_not_empty(
    fed: Federation, tmp_path: Path
) -> None:
    prison = fed[PRISON]
    backup = tmp_path / "prison.hbk"
    out = handover(
        "backup", "--dir", str(prison.dir), "--out", str(backup), stdin=PASSPHRASE + "\n"
    )
    assert out.returncode == 0, out.stderr

    # A short passphrase is refused before anything is written.
    short = handover(
        "backup", "--dir", str(prison.dir), "--out", str(tmp_path / "s.hbk"), stdin="x"
    )
    assert short.returncode == 1 and "at least" in short.stderr
    assert not (tmp_path / "s.hbk").exists()

    # Into a directory that holds something: refused, left as it was.
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    busy = handover("restore", "--from", str(backup), "--dir", str(occupied), stdin=PASSPHRASE)
    assert busy.returncode == 1 and "not empty" in busy.stderr
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]

    # Into a DSN whose database has tables (the running probation node's): refused.
    dsn = fed[PROBATION].dsn()
    tables = fed[PROBATION].sql("SELECT count(*) AS n FROM audit_log")[0]["n"]
    target = tmp_path / "into-dsn"
    env = cli_env(HANDOVER_DSN=dsn)
    refused = subprocess.run(
        [sys.executable, "-m", "handover.cli", "restore", "--from", str(backup), "--dir",
         str(target)],
        input=PASSPHRASE, capture_output=True, text=True, env=env, timeout=180, check=False,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    assert "is not empty" in refused.stderr and refused.stderr.count("\n") == 1
    assert "postgresql://" not in refused.stderr  # the DSN is described, never printed whole
    assert not target.exists()
    assert fed[PROBATION].sql("SELECT count(*) AS n FROM audit_log")[0]["n"] == tables
