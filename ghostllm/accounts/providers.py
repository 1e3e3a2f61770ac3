"""Providers in the store (the `providers` table), their API keys encrypted at rest.

Listing never returns a key (only whether one is stored); `set_key` encrypts with the
provider id in the associated data; `get_key` decrypts, for internal use only (the
workers' catalogue sync, which uses it in place of `api_key_env`);
`reencrypt` moves every stored key to the cipher's primary key (`secrets rotate`).
Every mutation writes an audit_log row, never with the key in it."""

from __future__ import annotations

import json
from typing import Any

from ghostllm.accounts import rows, validation
from ghostllm.accounts.audit import CLI, Actor, record
from ghostllm.accounts.cipher import SecretCipher, key_id_of
from ghostllm.accounts.records import ProviderRecord
from ghostllm.accounts.repository import UNSET, Unset
from ghostllm.accounts.writes import update, write
from ghostllm.errors import AlreadyExists, InvalidRequest, NotFound
from ghostllm.store import DuplicateError, Store


def context(provider_id: str) -> str:
    """The associated data of a provider's key: a value moved to another row does not decrypt."""
    return f"provider:{provider_id}"


class ProviderRepository:
    def __init__(self, store: Store, cipher: SecretCipher | None = None) -> None:
        self.store = store
        self._cipher = cipher

    @property
    def cipher(self) -> SecretCipher:
        if self._cipher is None:
            raise RuntimeError("this ProviderRepository has no cipher: keys cannot be read or written")
        return self._cipher

    async def create_provider(
        self,
        provider_id: str,
        *,
        provider_type: str,
        base_url: str,
        name: str = "",
        enabled: bool = True,
        config: dict[str, Any] | None = None,
        actor: Actor = CLI,
    ) -> ProviderRecord:
        values: dict[str, Any] = {
            "name": validation.text("name", name, max_length=validation.MAX_KEY_NAME),
            "provider_type": validation.provider_type(provider_type),
            "base_url": validation.base_url(base_url),
            "enabled": _bool("enabled", enabled),
            "config": _config(config),
        }
        provider_id = validation.provider_id(provider_id)
        try:
            async with self.store.transaction() as tx:
                await write(
                    tx,
                    "INSERT INTO providers (id, name, provider_type, base_url, enabled, config)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (provider_id, *values.values()),
                )
                await record(tx, actor, "provider.create", "provider", provider_id, values)
        except DuplicateError:
            raise AlreadyExists(f"a provider {provider_id!r} already exists", param="provider") from None
        return await self.get_provider(provider_id)

    async def get_provider(self, provider_id: str) -> ProviderRecord:
        found = await self.find_provider(provider_id)
        if found is None:
            raise NotFound(f"no provider {provider_id!r} in the store", param="provider")
        return found

    async def find_provider(self, provider_id: str) -> ProviderRecord | None:
        provider_id = validation.provider_id(provider_id)
        found = await self.store.fetch_all(
            f"SELECT {rows.PROVIDER_COLUMNS} FROM providers WHERE id = ?", (provider_id,)
        )
        return rows.provider(found[0]) if found else None

    async def list_providers(self) -> list[ProviderRecord]:
        found = await self.store.fetch_all(f"SELECT {rows.PROVIDER_COLUMNS} FROM providers ORDER BY id")
        return [rows.provider(r) for r in found]

    async def update_provider(
        self,
        provider_id: str,
        *,
        name: str | Unset = UNSET,
        provider_type: str | Unset = UNSET,
        base_url: str | Unset = UNSET,
        enabled: bool | Unset = UNSET,
        config: dict[str, Any] | Unset = UNSET,
        actor: Actor = CLI,
    ) -> ProviderRecord:
        current = await self.get_provider(provider_id)
        changes: dict[str, Any] = {}
        if name is not UNSET:
            changes["name"] = validation.text("name", name, max_length=validation.MAX_KEY_NAME)
        if provider_type is not UNSET:
            changes["provider_type"] = validation.provider_type(provider_type)
        if base_url is not UNSET:
            changes["base_url"] = validation.base_url(base_url)
        if enabled is not UNSET:
            changes["enabled"] = _bool("enabled", enabled)
        if config is not UNSET:
            changes["config"] = _config(config)
        if not changes:
            raise InvalidRequest("nothing to update")
        async with self.store.transaction() as tx:
            await update(tx, "providers", current.id, changes)
            await record(tx, actor, "provider.update", "provider", current.id, changes)
        return await self.get_provider(current.id)

    async def set_key(self, provider_id: str, api_key: str, *, actor: Actor = CLI) -> ProviderRecord:
        """Store the provider's API key, encrypted under the cipher's primary key."""
        current = await self.get_provider(provider_id)
        token = self.cipher.encrypt(validation.secret("api_key", api_key), context(current.id))
        detail = {"api_key": True, "encryption_key_id": self.cipher.key_id}
        async with self.store.transaction() as tx:
            await update(tx, "providers", current.id, {"api_key_enc": token.encode("ascii")})
            await record(tx, actor, "provider.set_key", "provider", current.id, detail)
        return await self.get_provider(current.id)

    async def clear_key(self, provider_id: str, *, actor: Actor = CLI) -> ProviderRecord:
        current = await self.get_provider(provider_id)
        async with self.store.transaction() as tx:
            await update(tx, "providers", current.id, {"api_key_enc": None})
            await record(tx, actor, "provider.clear_key", "provider", current.id, {"api_key": None})
        return await self.get_provider(current.id)

    async def get_key(self, provider_id: str) -> str | None:
        """The clear key, for internal use only (never returned by an API, never logged)."""
        provider_id = validation.provider_id(provider_id)
        found = await self.store.fetch_all("SELECT api_key_enc FROM providers WHERE id = ?", (provider_id,))
        if not found:
            raise NotFound(f"no provider {provider_id!r} in the store", param="provider")
        token = rows.sealed(found[0][0])
        return None if token is None else self.cipher.decrypt(token, context(provider_id))

    async def reencrypt(self, *, actor: Actor = CLI) -> int:
        """Every stored key not yet under the cipher's primary key: decrypted (with any of
        the cipher's keys) and encrypted again under the primary one. A row changed
        meanwhile is left alone (compare-and-set) for a later pass. How many moved."""
        moved = 0
        found = await self.store.fetch_all("SELECT id, api_key_enc FROM providers WHERE api_key_enc IS NOT NULL")
        for provider_id, cell in found:
            token = rows.sealed(cell)
            if token is None or key_id_of(token) == self.cipher.key_id:
                continue
            clear = self.cipher.decrypt(token, context(str(provider_id)))
            fresh = self.cipher.encrypt(clear, context(str(provider_id)))
            detail = {"api_key": True, "from_key_id": key_id_of(token), "encryption_key_id": self.cipher.key_id}
            async with self.store.transaction() as tx:
                changed = await update(
                    tx,
                    "providers",
                    str(provider_id),
                    {"api_key_enc": fresh.encode("ascii")},
                    where=" AND api_key_enc = ?",
                    args=(cell,),
                )
                if changed:
                    await record(tx, actor, "provider.rotate_key", "provider", str(provider_id), detail)
            moved += bool(changed)
        return moved

    async def keys_not_under(self, key_id: str) -> list[str]:
        """The providers whose stored key is under another encryption key than `key_id`."""
        found = await self.store.fetch_all("SELECT id, api_key_enc FROM providers WHERE api_key_enc IS NOT NULL")
        return sorted(str(i) for i, cell in found if key_id_of(rows.sealed(cell) or "") != key_id)


def _bool(field: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{field}: expected true or false", param=field, code="invalid_type")
    return value


def _config(value: dict[str, Any] | None) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, dict):
        raise InvalidRequest("config: expected an object", param="config", code="invalid_type")
    text = json.dumps(value, sort_keys=True)
    if len(text) > 65536:
        raise InvalidRequest("config: at most 64 KiB of JSON", param="config")
    return text
