"""Provider rows and their API keys encrypted at rest, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from ghostllm.accounts import EncryptionKey, ProviderRepository, SecretCipher, SecretError
from ghostllm.accounts.keyring import (
    ENV_KEY,
    ENV_NEW_KEY,
    key_file_path,
    load_cipher,
    read_key_file,
    sibling,
    write_key_file,
)
from ghostllm.accounts.rotation import rotate_secrets
from ghostllm.config import Config, StoreConfig, parse_config
from ghostllm.errors import AlreadyExists, ConfigError, InvalidRequest, NotFound
from ghostllm.store import Store, make_store

T = TypeVar("T")
SECRETS = {"openai": "sk-openai-CLEAR-0123456789abcdef", "groq": "gsk_groq-CLEAR-fedcba9876543210"}


def with_store(config: StoreConfig, body: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        async with make_store(config) as store:
            await store.migrate()
            return await body(store)

    return asyncio.run(run())


async def raw_dump(store: Store) -> str:
    found = await store.fetch_all("SELECT * FROM providers")
    found += await store.fetch_all("SELECT * FROM audit_log")
    return repr(found) + "".join(bytes(v).decode("latin-1") for r in found for v in r if isinstance(v, bytes))


async def seed(repo: ProviderRepository) -> None:
    for pid, secret in SECRETS.items():
        await repo.create_provider(pid, provider_type="openai", base_url=f"https://{pid}.example/v1")
        await repo.set_key(pid, secret)


def sqlite_bytes(config: StoreConfig) -> bytes:
    if not config.is_sqlite:
        return b""
    path = Path(config.url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_set_key_stores_only_ciphertext_and_decrypts_back(store_config: StoreConfig) -> None:
    cipher = SecretCipher(EncryptionKey.generate())

    async def body(store: Store) -> None:
        repo = ProviderRepository(store, cipher)
        await seed(repo)
        listed = await repo.list_providers()
        assert [(p.id, p.has_key, p.key_encryption_id) for p in listed] == [
            ("groq", True, cipher.key_id),
            ("openai", True, cipher.key_id),
        ]
        assert all(s not in repr(p.to_dict()) for p in listed for s in SECRETS.values())
        for pid, secret in SECRETS.items():
            assert await repo.get_key(pid) == secret
        dump = await raw_dump(store)
        assert all(s not in dump for s in SECRETS.values()) and "v1:" + cipher.key_id in dump
        actions = await store.fetch_all("SELECT action FROM audit_log ORDER BY created_at")
        assert [a for (a,) in actions] == ["provider.create", "provider.set_key"] * 2

        with pytest.raises(AlreadyExists):
            await repo.create_provider("openai", provider_type="openai", base_url="https://x.example")
        with pytest.raises(NotFound):
            await repo.set_key("missing", "k")
        for bad in ("", "has space", "x" * 9000, "line\nbreak"):
            with pytest.raises(InvalidRequest, match="api_key") as err:
                await repo.set_key("openai", bad)
            assert bad not in str(err.value) or not bad
        with pytest.raises(InvalidRequest, match="provider"):
            await repo.get_key("'; DROP TABLE providers; --")
        updated = await repo.update_provider("openai", enabled=False, base_url="https://other.example/v1")
        assert (updated.enabled, updated.base_url, updated.has_key) == (False, "https://other.example/v1", True)
        cleared = await repo.clear_key("groq")
        assert not cleared.has_key and await repo.get_key("groq") is None

    with_store(store_config, body)
    assert all(s.encode() not in sqlite_bytes(store_config) for s in SECRETS.values())


def test_wrong_key_and_tampered_rows_fail_cleanly(store_config: StoreConfig) -> None:
    cipher = SecretCipher(EncryptionKey.generate())

    async def body(store: Store) -> None:
        await seed(ProviderRepository(store, cipher))
        with pytest.raises(SecretError) as err:
            await ProviderRepository(store, SecretCipher(EncryptionKey.generate())).get_key("openai")
        assert "provider:openai" in str(err.value) and SECRETS["openai"] not in str(err.value)

        # Swap the two rows' ciphertexts: each is bound to its provider id.
        cells = dict(await store.fetch_all("SELECT id, api_key_enc FROM providers"))
        await store.execute("UPDATE providers SET api_key_enc = ? WHERE id = ?", (cells["groq"], "openai"))
        with pytest.raises(SecretError, match="does not decrypt"):
            await ProviderRepository(store, cipher).get_key("openai")
        token = bytes(cells["groq"])
        flipped = token[:-3] + (b"B" if token[-3:-2] != b"B" else b"C") + token[-2:]
        await store.execute("UPDATE providers SET api_key_enc = ? WHERE id = ?", (flipped, "groq"))
        with pytest.raises(SecretError) as err:
            await ProviderRepository(store, cipher).get_key("groq")
        assert SECRETS["groq"] not in str(err.value) and token.decode() not in str(err.value)

    with_store(store_config, body)


def _config(store_config: StoreConfig, data_dir: Path) -> Config:
    return parse_config({"server": {"data_dir": str(data_dir)}, "store": {"url": store_config.url}}, env={})


def test_rotation_with_env_keys(store_config: StoreConfig, tmp_path: Path) -> None:
    old, new = EncryptionKey.generate(), EncryptionKey.generate()
    config = _config(store_config, tmp_path)

    async def body(store: Store) -> None:
        await seed(ProviderRepository(store, SecretCipher(old)))
        before = await store.fetch_all("SELECT id, api_key_enc FROM providers ORDER BY id")
        env = {ENV_KEY: old.to_base64(), ENV_NEW_KEY: new.to_base64()}
        done = await rotate_secrets(store, config, env)
        assert (done.rotated, done.old_key_id, done.new_key_id, done.key_file) == (2, old.id, new.id, None)
        after = await store.fetch_all("SELECT id, api_key_enc FROM providers ORDER BY id")
        assert all(bytes(a[1]) != bytes(b[1]) for a, b in zip(before, after, strict=True))
        for pid, secret in SECRETS.items():
            assert await ProviderRepository(store, SecretCipher(new)).get_key(pid) == secret
            with pytest.raises(SecretError):
                await ProviderRepository(store, SecretCipher(old)).get_key(pid)
        back = {ENV_KEY: new.to_base64(), ENV_NEW_KEY: old.to_base64()}
        assert (await rotate_secrets(store, config, back)).rotated == 2
        dump = await raw_dump(store)
        assert all(s not in dump for s in SECRETS.values())
        rotated = await store.fetch_all("SELECT COUNT(*) FROM audit_log WHERE action = 'provider.rotate_key'")
        assert rotated[0][0] == 4

    with_store(store_config, body)


def test_rotation_with_the_key_file(tmp_path: Path) -> None:
    """The key file exists only on the embedded SQLite store."""
    store_config = StoreConfig(url=f"sqlite:///{tmp_path / 'data' / 'g.db'}")
    config = _config(store_config, tmp_path / "data")
    path = key_file_path(config)

    async def body(store: Store) -> None:
        first = load_cipher(config, {}, create=True)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        await seed(ProviderRepository(store, first))
        old_key = read_key_file(path)
        done = await rotate_secrets(store, config, {})
        assert done.rotated == 2 and done.key_file == path and done.new_key_id != old_key.id
        assert read_key_file(path).id == done.new_key_id and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not sibling(path, "old").exists() and not sibling(path, "new").exists()
        for pid, secret in SECRETS.items():
            assert await ProviderRepository(store, load_cipher(config, {})).get_key(pid) == secret
            with pytest.raises(SecretError):
                await ProviderRepository(store, SecretCipher(old_key)).get_key(pid)

        # Interrupted after step 1 (the new key written, nothing re-encrypted): everything still
        # decrypts, and running again finishes with that same new key.
        current = read_key_file(path)
        pending = EncryptionKey.generate()
        write_key_file(sibling(path, "new"), pending)
        write_key_file(sibling(path, "old"), current)
        assert await ProviderRepository(store, load_cipher(config, {})).get_key("openai") == SECRETS["openai"]
        done = await rotate_secrets(store, config, {})
        assert done.new_key_id == pending.id == read_key_file(path).id and not sibling(path, "old").exists()

        os.chmod(path, 0o644)
        with pytest.raises(ConfigError, match="accessible by group or others"):
            await rotate_secrets(store, config, {})

    with_store(store_config, body)
