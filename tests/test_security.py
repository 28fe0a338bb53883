"""The instance key, encrypted credentials and webhook signatures."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from perkflow.core.security import SecretsUnreadable, Vault, load_instance_key, sign, verify_signature
from perkflow.core.settings import Settings


def test_the_key_file_is_created_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(secret_key_file=tmp_path / "keys" / "secret.key")
    first = load_instance_key(settings)
    mode = stat.S_IMODE((tmp_path / "keys" / "secret.key").stat().st_mode)
    assert mode == 0o600
    assert load_instance_key(settings) == first


def test_an_explicit_secret_key_wins_and_a_wrong_key_cannot_read_old_secrets(tmp_path: Path) -> None:
    key = load_instance_key(Settings(secret_key="one", secret_key_file=tmp_path / "k"))
    sealed = Vault(key).seal({"k": "v"})
    assert not (tmp_path / "k").exists()
    assert Vault(load_instance_key(Settings(secret_key="one"))).open(sealed) == {"k": "v"}
    with pytest.raises(SecretsUnreadable, match="reconnect"):
        Vault(load_instance_key(Settings(secret_key="two"))).open(sealed)


def test_signatures_are_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"id":"act_1"}'
    signature = sign("secret", body)
    assert signature == "5f88fb5d8f81ed428514f27a638e60f6e02448768a8019b64c2fed588491b471"
    assert verify_signature("secret", body, "sha256=" + signature)
    assert not verify_signature("secret", body + b" ", signature)
    assert not verify_signature("other", body, signature)
