"""A worker's catalogue sync against a real store (SQLite and PostgreSQL): store changes
reach the live catalogue, stored keys are decrypted but never logged, and a store that
fails keeps the catalogue as it was (logged once) until it answers again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from ghostllm.accounts import EncryptionKey, ProviderRepository, SecretCipher
from ghostllm.accounts.keyring import ENV_KEY
from ghostllm.accounts.models import ModelRepository
from ghostllm.config import Config, StoreConfig, parse_config
from ghostllm.providers.factory import make_provider
from ghostllm.routing.live import LiveCatalogue
from ghostllm.server.catalogue_sync import CatalogueSync
from ghostllm.store import Store, make_store

SECRET = "sk-stored-CLEAR-abcdef0123456789"


def config_for(store_config: StoreConfig) -> Config:
    return parse_config(
        {
            "store": {"url": store_config.url},
            "catalogue": {"poll_s": 0.05},
            "providers": [{"id": "dev", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "NO_SUCH_VARIABLE"}],
            "models": [{"id": "dev-echo", "provider": "dev"}],
        },
        env={},
    )


async def until(check: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "not seen in time"
        await asyncio.sleep(0.02)


def test_store_changes_reach_the_live_catalogue(
    store_config: StoreConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = EncryptionKey.generate()
    monkeypatch.setenv(ENV_KEY, key.to_base64())
    caplog.set_level(logging.INFO, logger="ghostllm")
    config = config_for(store_config)

    async def run() -> None:
        async with make_store(config.store) as store:
            await store.migrate()
            models = ModelRepository(store)
            providers = ProviderRepository(store, SecretCipher(key))
            await models.create_model("stored-before-start", provider="dev", upstream_model="dev-echo")
            live = LiveCatalogue(config, make_provider)
            sync = CatalogueSync(config, store, live)
            await live.start()
            try:
                await sync.start()
                await changes(live, sync, models, providers, store, caplog)
            finally:
                await sync.stop()
                await live.close()
        assert all(SECRET not in r.getMessage() and SECRET not in repr(r.args) for r in caplog.records)

    asyncio.run(run())


async def changes(
    live: LiveCatalogue,
    sync: CatalogueSync,
    models: ModelRepository,
    providers: ProviderRepository,
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    catalogue = live.catalogue

    def ids() -> list[str]:
        return [m.id for m in catalogue.models]

    # Loaded before the worker would serve.
    assert ids() == ["dev-echo", "stored-before-start"]

    await models.create_model("added", provider="remote", capabilities=["chat"])
    await providers.create_provider("remote", provider_type="openai", base_url="http://127.0.0.1:10/v1")
    await providers.set_key("remote", SECRET)
    await until(lambda: "added" in ids() and live.providers.get("remote") is not None)
    await until(lambda: live.providers["remote"].config.api_key == SECRET)

    # The store wins over the config.
    await models.create_model("dev-echo", provider="dev", upstream_model="other")
    await until(lambda: catalogue.resolve("dev-echo").deployment.upstream_model == "other")
    await models.update_model("dev-echo", upstream_model="another")
    await until(lambda: catalogue.resolve("dev-echo").deployment.upstream_model == "another")
    await providers.update_provider("remote", enabled=False)
    await until(lambda: "remote" not in live.providers and "added" not in ids())
    await models.delete_model("dev-echo")  # the config's comes back
    await until(lambda: catalogue.resolve("dev-echo").deployment.upstream_model == "dev-echo")
    await models.create_model("orphan", provider="nowhere")
    await until(lambda: any("provider 'nowhere'" in r.getMessage() for r in caplog.records))
    assert "orphan" not in ids()

    # The store fails: the catalogue stays as it was, and that is said once.
    before = ids()
    await store.execute("ALTER TABLE models RENAME TO models_away")
    reloads = sync.reloads

    def failures() -> int:
        return sum("cannot read providers and models" in r.getMessage() for r in caplog.records)

    await until(lambda: failures() >= 1)
    await asyncio.sleep(0.3)  # more failed polls, most likely; none of them is logged again
    assert failures() == 1 and ids() == before and sync.reloads == reloads
    await store.execute("ALTER TABLE models_away RENAME TO models")
    await models.create_model("after-outage", provider="dev")
    await until(lambda: "after-outage" in ids())
    assert any("the store answers again" in r.getMessage() for r in caplog.records)

    # An announced change (the change feed, or this worker's admin API) reloads at once.
    reloads = sync.reloads
    sync.trigger()
    await until(lambda: sync.reloads > reloads)


def test_an_undecryptable_stored_key_leaves_the_configs_definition(
    store_config: StoreConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ENV_KEY, EncryptionKey.generate().to_base64())  # not the key the row is under
    config = config_for(store_config)

    async def run() -> None:
        async with make_store(config.store) as store:
            await store.migrate()
            providers = ProviderRepository(store, SecretCipher(EncryptionKey.generate()))
            await providers.create_provider("dev", provider_type="openai", base_url="http://127.0.0.1:11/v1")
            await providers.set_key("dev", SECRET)
            live = LiveCatalogue(config, make_provider)
            sync = CatalogueSync(config, store, live)
            await live.start()
            try:
                await sync.start()
                assert live.providers["dev"].config == config.providers[0]
                assert [m.id for m in live.catalogue.models] == ["dev-echo"]
            finally:
                await sync.stop()
                await live.close()
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert "provider dev: the stored API key cannot be decrypted" in text and SECRET not in text

    asyncio.run(run())
