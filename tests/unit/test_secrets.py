"""The at-rest cipher's format and the key file rules."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from ghostllm.accounts.cipher import EncryptionKey, SecretCipher, SecretError, key_id_of
from ghostllm.accounts.keyring import ENV_KEY, ENV_NEW_KEY, create_key_file, load_cipher, read_key_file, write_key_file
from ghostllm.config import parse_config
from ghostllm.errors import ConfigError

SECRET = "sk-live-do-not-leak-0123456789"


def test_format_is_versioned_and_identifies_the_key() -> None:
    key = EncryptionKey.generate()
    token = SecretCipher(key).encrypt(SECRET, "provider:openai")
    version, key_id, body = token.split(":")
    assert (version, key_id) == ("v1", key.id) and key_id_of(token) == key.id and len(key.id) == 12
    raw = base64.b64decode(body, validate=True)
    assert len(raw) == 12 + len(SECRET) + 16  # nonce, ciphertext, tag
    assert SECRET not in token and key.to_base64() not in token


def test_round_trip_and_a_fresh_nonce_each_time() -> None:
    cipher = SecretCipher(EncryptionKey.generate())
    a, b = cipher.encrypt(SECRET, "provider:x"), cipher.encrypt(SECRET, "provider:x")
    assert a != b and base64.b64decode(a.split(":")[2])[:12] != base64.b64decode(b.split(":")[2])[:12]
    assert cipher.decrypt(a, "provider:x") == cipher.decrypt(b, "provider:x") == SECRET
    assert cipher.decrypt(cipher.encrypt("ünïcødé", "c"), "c") == "ünïcødé"


def _tamper(token: str) -> str:
    head, body = token.rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 1
    return f"{head}:{base64.b64encode(bytes(raw)).decode()}"


@pytest.mark.parametrize(
    ("mangle", "context", "message"),
    [
        (_tamper, "provider:x", "does not decrypt"),
        (lambda t: t, "provider:y", "does not decrypt"),  # moved to another provider: the associated data differs
        (lambda t: t.replace("v1:", "v9:", 1), "provider:x", "not in a format"),
        (lambda t: t[:-8], "provider:x", "malformed|does not decrypt"),
        (lambda t: t.rsplit(":", 1)[0] + ":!!!", "provider:x", "malformed"),
        (lambda t: t.rsplit(":", 1)[0] + ":AAAA", "provider:x", "malformed"),
        (lambda t: "plain text", "provider:x", "not in a format"),
    ],
)
def test_tampered_or_misplaced_values_fail_cleanly(mangle: object, context: str, message: str) -> None:
    key = EncryptionKey.generate()
    cipher = SecretCipher(key)
    token = cipher.encrypt(SECRET, "provider:x")
    with pytest.raises(SecretError, match=message) as err:
        cipher.decrypt(mangle(token), context)  # type: ignore[operator]
    assert SECRET not in str(err.value) and token not in str(err.value) and key.to_base64() not in str(err.value)


def test_a_wrong_key_fails_cleanly_and_a_header_naming_another_key_too() -> None:
    right, wrong = EncryptionKey.generate(), EncryptionKey.generate()
    token = SecretCipher(right).encrypt(SECRET, "provider:x")
    with pytest.raises(SecretError, match="not configured") as err:
        SecretCipher(wrong).decrypt(token, "provider:x")
    assert SECRET not in str(err.value) and right.to_base64() not in str(err.value)
    forged = token.replace(right.id, wrong.id)  # the header claims the key we have: the tag still refuses
    with pytest.raises(SecretError, match="does not decrypt"):
        SecretCipher(wrong).decrypt(forged, "provider:x")


def test_a_rotation_cipher_reads_both_keys_and_writes_the_new_one() -> None:
    old, new = EncryptionKey.generate(), EncryptionKey.generate()
    token = SecretCipher(old).encrypt(SECRET, "c")
    both = SecretCipher(new, decrypt_only=(old,))
    assert both.decrypt(token, "c") == SECRET and key_id_of(both.encrypt(SECRET, "c")) == new.id
    assert set(both.key_ids) == {old.id, new.id}


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(b"short").decode(), "A" * 400])
def test_a_malformed_key_is_a_clear_config_error_without_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match=f"{ENV_KEY}: expected base64 of 32 random bytes") as err:
        EncryptionKey.from_base64(text, source=ENV_KEY)
    assert (text not in str(err.value)) or not text


def test_key_file_created_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "data" / "encryption.key"
    key = create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == key == create_key_file(path)  # a second call keeps the file


def test_group_or_world_readable_key_file_refused_and_never_chmod_ed(tmp_path: Path) -> None:
    path = tmp_path / "encryption.key"
    create_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"accessible by group or others \(mode 0644\).*chmod 600"):
        read_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    os.chmod(path, 0o400)  # stricter is fine, and stays as it is
    read_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o400


def test_atomic_write_makes_a_0600_file(tmp_path: Path) -> None:
    path = tmp_path / "encryption.key"
    key = EncryptionKey.generate()
    write_key_file(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and read_key_file(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["encryption.key"]


def test_load_cipher_sources(tmp_path: Path) -> None:
    sqlite = parse_config({"server": {"data_dir": str(tmp_path)}}, env={})
    with pytest.raises(ConfigError, match="no encryption key file"):
        load_cipher(sqlite, {})
    made = load_cipher(sqlite, {}, create=True)
    assert (tmp_path / "encryption.key").exists() and load_cipher(sqlite, {}).key_id == made.key_id
    key, new = EncryptionKey.generate(), EncryptionKey.generate()
    env = {ENV_KEY: key.to_base64(), ENV_NEW_KEY: new.to_base64()}
    assert load_cipher(sqlite, env).key_id == key.id and set(load_cipher(sqlite, env).key_ids) == {key.id, new.id}
    pg = parse_config({"store": {"url": "postgresql://u@h/db"}}, env={})
    with pytest.raises(ConfigError, match=f"{ENV_KEY} is required with a PostgreSQL store"):
        load_cipher(pg, {})
    assert load_cipher(pg, {ENV_KEY: key.to_base64()}).key_id == key.id
