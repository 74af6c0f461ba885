"""Revoking a key: the keyset says so, peers accept the change, the node goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from handover.node import keystore
from handover.protocol.errors import ConfigError
from handover.protocol.keyset import accept_keyset

NOW = 1_767_225_600_000


def test_revoking_the_active_signing_key_replaces_it_and_peers_accept_the_change(
    tmp_path: Path,
) -> None:
    keys = keystore.init_keys(tmp_path / "keys", "prison.example", NOW)
    old = keys.identity().kid
    first = accept_keyset(
        keys.keyset.wire, node="prison.example", fingerprint=keys.fingerprint, now=NOW
    )

    revoked = keystore.revoke(keys, old, NOW + 1000)

    (entry,) = [k for k in revoked.keyset.keys if k.kid == old]
    assert (entry.status, entry.until) == ("revoked", NOW + 1000)
    assert revoked.identity().kid != old  # a new active signing key took its place
    assert revoked.keyset.serial == keys.keyset.serial + 1
    assert not (tmp_path / "keys" / f"sig-{old}.key").exists()
    # A peer holding the earlier keyset accepts the new one (status change only).
    seen = accept_keyset(
        revoked.keyset.wire,
        node="prison.example",
        fingerprint=keys.fingerprint,
        now=NOW + 2000,
        last=first,
    )
    assert seen.signing_key_for(old, NOW + 2000) is None
    assert seen.signing_key_for(old, NOW) is None  # revoked: nothing is accepted


def test_revoking_an_encryption_key_destroys_its_private_half(tmp_path: Path) -> None:
    keys = keystore.init_keys(tmp_path / "keys", "prison.example", NOW)
    (box,) = [k.kid for k in keys.keyset.keys if k.type == "x25519-box"]
    revoked = keystore.revoke(keys, box, NOW + 1000)
    assert not (tmp_path / "keys" / f"box-{box}.key").exists()
    assert box not in revoked.boxes
    assert [k.kid for k in revoked.keyset.keys if k.status == "active"] != []


def test_revoking_an_unknown_or_revoked_key_is_refused(tmp_path: Path) -> None:
    keys = keystore.init_keys(tmp_path / "keys", "prison.example", NOW)
    with pytest.raises(ConfigError, match="no key"):
        keystore.revoke(keys, "A" * 22, NOW)
    kid = keys.identity().kid
    revoked = keystore.revoke(keys, kid, NOW + 1)
    with pytest.raises(ConfigError, match="already revoked"):
        keystore.revoke(revoked, kid, NOW + 2)


def test_an_encrypted_root_key_opens_only_with_its_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = keystore.init_keys(tmp_path / "keys", "prison.example", NOW)
    secret = tmp_path / "root-passphrase"
    secret.write_text("correct horse battery staple\n")
    keystore.protect_root(tmp_path / "keys", b"correct horse battery staple")
    sealed = (tmp_path / "keys" / keystore.ROOT_FILE).read_text()
    assert sealed.startswith(keystore.ROOT_SEALED_PREFIX)
    assert (tmp_path / "keys" / keystore.ROOT_FILE).stat().st_mode & 0o777 == 0o600

    monkeypatch.delenv(keystore.ROOT_PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="is encrypted"):
        keystore.load_keys(tmp_path / "keys")
    monkeypatch.setenv(keystore.ROOT_PASSPHRASE_ENV, str(secret))
    assert keystore.load_keys(tmp_path / "keys").fingerprint == keys.fingerprint
    # The systemd credential works the same way.
    monkeypatch.delenv(keystore.ROOT_PASSPHRASE_ENV)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / keystore.ROOT_CREDENTIAL).write_text("correct horse battery staple\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert keystore.load_keys(tmp_path / "keys").fingerprint == keys.fingerprint
    # A wrong passphrase is refused with one clear error.
    (credentials / keystore.ROOT_CREDENTIAL).write_text("wrong horse battery staple\n")
    with pytest.raises(ConfigError, match="does not open"):
        keystore.load_keys(tmp_path / "keys")
    with pytest.raises(ConfigError, match="already encrypted"):
        keystore.protect_root(tmp_path / "keys", b"correct horse battery staple")


def test_replicas_resign_to_identical_keysets_on_the_same_day(tmp_path: Path) -> None:
    """Replicas with their own copy of the keys (a Kubernetes Secret) re-sign the
    keyset daily: on one day they must publish the same bytes and serial."""
    import shutil

    from handover.protocol.timeutil import DAY_MS

    keys = keystore.init_keys(tmp_path / "a", "prison.example", NOW)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    replica_b = keystore.load_keys(tmp_path / "b")
    next_day = NOW + DAY_MS
    a = keystore.resign(keys, next_day + 3_600_000)  # 01:00
    b = keystore.resign(replica_b, next_day + 20 * 3_600_000)  # 20:00
    assert a.keyset.wire == b.keyset.wire
    assert a.keyset.serial == next_day // 1000 > keys.keyset.serial
    assert a.keyset.exp - a.keyset.iat == 7 * DAY_MS
    # A peer holding the first keyset accepts the re-signed one; the next day's
    # serial is higher again.
    first = accept_keyset(
        keys.keyset.wire, node="prison.example", fingerprint=keys.fingerprint, now=NOW
    )
    seen = accept_keyset(
        a.keyset.wire,
        node="prison.example",
        fingerprint=keys.fingerprint,
        now=next_day + 21 * 3_600_000,
        last=first,
    )
    later = keystore.resign(a, next_day + DAY_MS + 60_000)
    assert later.keyset.serial > seen.serial
