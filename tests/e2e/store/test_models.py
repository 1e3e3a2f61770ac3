"""The model repository (catalogue entries in the store), on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import pytest

from ghostllm.accounts.audit import Actor
from ghostllm.accounts.models import ModelRepository
from ghostllm.config import StoreConfig
from ghostllm.errors import AlreadyExists, InvalidRequest, NotFound
from ghostllm.store import Store, load_migrations, make_store
from ghostllm.store.sqlite import statements

T = TypeVar("T")
INJECTION = "x'; DROP TABLE models; --"


def with_repo(config: StoreConfig, body: Callable[[ModelRepository], Awaitable[T]]) -> T:
    async def run() -> T:
        async with make_store(config) as store:
            await store.migrate()
            return await body(ModelRepository(store))

    return asyncio.run(run())


async def dump(store: Store) -> list[Any]:
    found = await store.fetch_all("SELECT * FROM models ORDER BY id")
    return [repr(found), await store.fetch_all("SELECT COUNT(*) FROM audit_log")]


async def audit(store: Store) -> list[tuple[str, str, dict[str, Any]]]:
    found = await store.fetch_all("SELECT action, target_id, detail, created_at FROM audit_log ORDER BY created_at")
    return [(a, str(t), d if isinstance(d, dict) else json.loads(d)) for a, t, d, _ in found]


def test_create_get_list_update_delete_with_an_audit_row_each(store_config: StoreConfig) -> None:
    admin = Actor(user_id="0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3", ip_address="10.0.0.7", via="admin-api")

    async def body(repo: ModelRepository) -> None:
        created = await repo.create_model(
            "gpt-4o",
            provider="openai",
            upstream_model="gpt-4o-2024-08-06",
            context_length=128000,
            input_price_per_1m=2.5,
            output_price_per_1m=10,
            capabilities=["vision", "chat", "streaming", "chat"],
            actor=admin,
        )
        # Canonical order, once each; a provider only the config knows is fine.
        assert created.capabilities == ("chat", "streaming", "vision")
        assert (created.provider_id, created.upstream_model, created.context_length) == (
            "openai",
            "gpt-4o-2024-08-06",
            128000,
        )
        assert (created.input_price_per_1m, created.output_price_per_1m, created.owned_by) == (2.5, 10.0, "")
        plain = await repo.create_model("llama3:8b", provider="ollama", owned_by="meta")
        pathlike = await repo.create_model("meta-llama/Llama-3.1-8B", provider="x", upstream_model="hf.co/a/b:Q4")
        assert await repo.get_model(pathlike.id) == pathlike
        await repo.delete_model(pathlike.id)
        assert plain.capabilities == ("chat", "streaming", "functions", "completions")
        assert plain.upstream_model == "" and plain.context_length == 0 and plain.owned_by == "meta"

        data = created.to_dict()
        assert orjson.loads(orjson.dumps(data)) == data  # JSON-ready as it is
        assert data["capabilities"] == ["chat", "streaming", "vision"] and data["provider_id"] == "openai"
        assert data["created_at"].endswith("Z") and data["updated_at"].endswith("Z")
        assert data["input_price_per_1m"] == 2.5 and isinstance(data["context_length"], int)

        assert await repo.get_model("gpt-4o") == created
        assert [m.id for m in await repo.list_models()] == ["gpt-4o", "llama3:8b"]
        # The seed's supports_* flags mirror capabilities.
        flags = await repo.store.fetch_all(
            "SELECT supports_vision, supports_funcs, supports_stream FROM models WHERE id = ?", ("gpt-4o",)
        )
        assert [bool(v) for v in flags[0]] == [True, False, True]

        updated = await repo.update_model(
            "gpt-4o", input_price_per_1m=1.25, capabilities=("chat", "functions"), upstream_model="", actor=admin
        )
        assert updated.input_price_per_1m == 1.25 and updated.output_price_per_1m == 10.0
        assert updated.capabilities == ("chat", "functions") and updated.upstream_model == ""
        assert updated.updated_at >= created.updated_at and updated.created_at == created.created_at
        moved = await repo.update_model("gpt-4o", provider="azure", context_length=0, owned_by="openai")
        assert (moved.provider_id, moved.context_length, moved.owned_by) == ("azure", 0, "openai")

        deleted = await repo.delete_model("gpt-4o", actor=admin)
        assert deleted.id == "gpt-4o"
        with pytest.raises(NotFound):
            await repo.get_model("gpt-4o")
        assert await repo.find_model("gpt-4o") is None
        with pytest.raises(NotFound):
            await repo.delete_model("gpt-4o")
        with pytest.raises(NotFound):
            await repo.update_model("gpt-4o", context_length=1)
        with pytest.raises(AlreadyExists):
            await repo.create_model("llama3:8b", provider="other")

        trail = [e for e in await audit(repo.store) if e[1] != "meta-llama/Llama-3.1-8B"]
        assert [(a, t) for a, t, _ in trail] == [
            ("model.create", "gpt-4o"),
            ("model.create", "llama3:8b"),
            ("model.update", "gpt-4o"),
            ("model.update", "gpt-4o"),
            ("model.delete", "gpt-4o"),
        ]
        assert trail[0][2]["capabilities"] == ["chat", "streaming", "vision"] and trail[0][2]["via"] == "admin-api"
        assert trail[2][2] == {
            "via": "admin-api",
            "input_price": 1.25,
            "capabilities": ["chat", "functions"],
            "upstream_model": "",
        }
        who = await repo.store.fetch_all(
            "SELECT actor_user_id, ip_address FROM audit_log WHERE action = 'model.delete' AND target_id = 'gpt-4o'"
        )
        assert [(str(u), ip) for u, ip in who] == [(admin.user_id, "10.0.0.7")]

    with_repo(store_config, body)


BAD_CREATE: list[tuple[str, dict[str, Any], str]] = [
    (INJECTION, {}, "id"),
    ("a" * 129, {}, "id"),
    ("", {}, "id"),
    ("has space", {}, "id"),
    ("/leading", {}, "id"),
    ("a//b", {}, "id"),
    ("a/../b", {}, "id"),
    ("trailing/", {}, "id"),
    ("ok", {"provider": INJECTION}, "provider"),
    ("ok", {"provider": "p" * 65}, "provider"),
    ("ok", {"upstream_model": INJECTION}, "upstream_model"),
    ("ok", {"upstream_model": "u" * 257}, "upstream_model"),
    ("ok", {"upstream_model": 7}, "upstream_model"),
    ("ok", {"context_length": -1}, "context_length"),
    ("ok", {"context_length": 2**31}, "context_length"),
    ("ok", {"context_length": True}, "context_length"),
    ("ok", {"context_length": "8192"}, "context_length"),
    ("ok", {"context_length": None}, "context_length"),
    ("ok", {"input_price_per_1m": float("nan")}, "input_price_per_1m"),
    ("ok", {"input_price_per_1m": -0.01}, "input_price_per_1m"),
    ("ok", {"output_price_per_1m": 1e13}, "output_price_per_1m"),
    ("ok", {"output_price_per_1m": "1.0"}, "output_price_per_1m"),
    ("ok", {"capabilities": ["chat", INJECTION]}, "capabilities"),
    ("ok", {"capabilities": "chat"}, "capabilities"),
    ("ok", {"capabilities": []}, "capabilities"),
    ("ok", {"capabilities": ["chat"] * 1000}, "capabilities"),
    ("ok", {"capabilities": [1]}, "capabilities"),
    ("ok", {"owned_by": "o" * 65}, "owned_by"),
    ("ok", {"owned_by": "line\nbreak"}, "owned_by"),
]


def test_bad_values_are_400s_that_write_nothing(store_config: StoreConfig) -> None:
    async def body(repo: ModelRepository) -> None:
        await repo.create_model("kept", provider="openai", context_length=8192)
        before = await dump(repo.store)
        for model_id, fields, param in BAD_CREATE:
            with pytest.raises(InvalidRequest) as err:
                await repo.create_model(model_id, **{"provider": "openai", **fields})
            assert err.value.param == param, (model_id, fields)
            if model_id == "ok":
                with pytest.raises(InvalidRequest) as err:
                    await repo.update_model("kept", **fields)
                assert err.value.param == param, fields
        for ref in (INJECTION, "x" * 10_000):
            for call in (repo.get_model, repo.delete_model):
                with pytest.raises(InvalidRequest):
                    await call(ref)
            with pytest.raises(InvalidRequest):
                await repo.update_model(ref, context_length=1)
        with pytest.raises(InvalidRequest, match="nothing to update"):
            await repo.update_model("kept")
        assert await dump(repo.store) == before

    with_repo(store_config, body)


def test_migration_0002_keeps_existing_rows_meaningful(store_config: StoreConfig) -> None:
    """A row written under 0001 (capability flags, a provider foreign key) reads the same after 0002,
    and a model may then name a provider the store does not have."""
    from ghostllm.store.postgres import _BOOKKEEPING as PG_BOOKKEEPING
    from ghostllm.store.sqlite import _BOOKKEEPING as SQLITE_BOOKKEEPING

    async def run() -> None:
        async with make_store(store_config) as store:
            first = load_migrations(store.dialect)[0]
            assert first.version == 1
            if store.dialect == "sqlite":
                for stmt in [SQLITE_BOOKKEEPING, *statements(first.sql)]:
                    await store.execute(stmt)
            else:
                await store.execute(PG_BOOKKEEPING)
                await store.execute(first.sql)
            await store.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
                (first.version, first.name, first.checksum),
            )
            await store.execute("INSERT INTO providers (id, provider_type, base_url) VALUES ('p', 'openai', 'u')")
            await store.execute(
                "INSERT INTO models (id, provider_id, context_length, input_price, output_price, supports_vision,"
                " supports_funcs, supports_stream) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ("old", "p", 4096, 0.5, 1.5, True, False, True),
            )
            applied = await store.migrate()
            assert [m.version for m in applied] == [m.version for m in load_migrations(store.dialect)[1:]]
            repo = ModelRepository(store)
            old = await repo.get_model("old")
            assert old.capabilities == ("chat", "streaming", "vision", "completions")
            assert (old.context_length, old.input_price_per_1m, old.output_price_per_1m) == (4096, 0.5, 1.5)
            assert old.upstream_model == "" and old.owned_by == ""
            # No foreign key any more: a provider only the config defines.
            orphan = await repo.create_model("new", provider="config-only")
            assert orphan.provider_id == "config-only"
            assert (await store.status()).current

    asyncio.run(run())
