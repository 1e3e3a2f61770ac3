"""`ghostllm secrets rotate`: every stored secret re-encrypted under a new key.

With `GHOSTLLM_ENCRYPTION_KEY` set, the new key is `GHOSTLLM_NEW_ENCRYPTION_KEY`; the
operator then swaps the two variables (while both are set, values under either key
decrypt). With the key file, in this order, so that no step can lose a key a stored
value still needs:

1. the new key goes to `encryption.key.new` and the current one is copied to
   `encryption.key.old` (both 0600, written atomically);
2. every stored secret is re-encrypted under the new key (row by row, compare-and-set);
3. `encryption.key.new` replaces `encryption.key` (an atomic rename);
4. a second pass re-encrypts anything written meanwhile under the old key, every value
   is checked to be under the new key, and only then is `encryption.key.old` removed.

Interrupted anywhere, every value still decrypts (the loader reads `.old` and `.new`
too), and running the command again finishes the job (it reuses `encryption.key.new`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ghostllm.accounts.audit import CLI, Actor
from ghostllm.accounts.cipher import EncryptionKey, SecretCipher
from ghostllm.accounts.keyring import (
    ENV_KEY,
    ENV_NEW_KEY,
    env_key,
    key_file_path,
    read_key_file,
    sibling,
    write_key_file,
)
from ghostllm.accounts.providers import ProviderRepository
from ghostllm.config import Config
from ghostllm.errors import ConfigError
from ghostllm.store import Store


@dataclass(frozen=True)
class Rotation:
    rotated: int
    old_key_id: str
    new_key_id: str
    # None: the keys are in the environment.
    key_file: Path | None


async def rotate_secrets(
    store: Store, config: Config, env: Mapping[str, str] | None = None, *, actor: Actor = CLI
) -> Rotation:
    env = os.environ if env is None else env
    current = env_key(env)
    if current is not None:
        return await _rotate_env(store, current, env, actor)
    if not config.store.is_sqlite:
        raise ConfigError(f"{ENV_KEY} is required with a PostgreSQL store; set {ENV_NEW_KEY} too to rotate")
    return await _rotate_file(store, key_file_path(config), actor)


async def _rotate_env(store: Store, current: EncryptionKey, env: Mapping[str, str], actor: Actor) -> Rotation:
    new = env_key(env, ENV_NEW_KEY)
    if new is None:
        raise ConfigError(
            f"{ENV_KEY} is set: put the new key in {ENV_NEW_KEY} (base64 of 32 random bytes: openssl rand -base64 32)"
        )
    if new.id == current.id:
        raise ConfigError(f"{ENV_NEW_KEY} is the same key as {ENV_KEY}")
    repo = ProviderRepository(store, SecretCipher(new, decrypt_only=(current,)))
    rotated = await repo.reencrypt(actor=actor)
    await _check(repo, new)
    return Rotation(rotated, current.id, new.id, None)


async def _rotate_file(store: Store, path: Path, actor: Actor) -> Rotation:
    current = read_key_file(path)
    old_path, new_path = sibling(path, "old"), sibling(path, "new")
    leftovers = [read_key_file(p) for p in (old_path, new_path) if p.exists()]
    if old_path.exists() and not new_path.exists():
        # An earlier run stopped after step 3: finish it (step 4) before starting anew.
        earlier = ProviderRepository(store, SecretCipher(current, decrypt_only=leftovers))
        await earlier.reencrypt(actor=actor)
        await _check(earlier, current)
        old_path.unlink()
        leftovers = []

    # 1. The new key on disk before anything is encrypted with it; the current one kept aside.
    new = read_key_file(new_path) if new_path.exists() else EncryptionKey.generate()
    if not new_path.exists():
        write_key_file(new_path, new)
    if not old_path.exists():
        write_key_file(old_path, current)
    elif read_key_file(old_path).id != current.id:
        raise ConfigError(f"{old_path} and {new_path} do not match {path}: move them aside and check every key first")
    # 2. Re-encrypt (any key we know decrypts).
    repo = ProviderRepository(store, SecretCipher(new, decrypt_only=(current, *leftovers)))
    rotated = await repo.reencrypt(actor=actor)
    # 3. The new key becomes the key.
    os.replace(new_path, path)
    # 4. Catch what was written under the old key meanwhile, check, and drop the old key.
    rotated += await repo.reencrypt(actor=actor)
    await _check(repo, new)
    old_path.unlink()
    return Rotation(rotated, current.id, new.id, path)


async def _check(repo: ProviderRepository, key: EncryptionKey) -> None:
    """Every stored value is under `key` and decrypts with it alone."""
    behind = await repo.keys_not_under(key.id)
    if behind:
        raise ConfigError(f"provider key(s) still under another encryption key: {', '.join(behind)}; run again")
    alone = ProviderRepository(repo.store, SecretCipher(key))
    for provider in await alone.list_providers():
        if provider.has_key:
            await alone.get_key(provider.id)
