"""Store models with several deployments, a strategy, fallbacks and retries (migration 0007),
on SQLite and on PostgreSQL: written, read back, changed with PATCH semantics, audited, and
rows from before the migration keep their meaning."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ghostllm.accounts.models import ModelRepository
from ghostllm.config import TIMEOUT_FIELDS, DeploymentConfig, StoreConfig
from ghostllm.errors import InvalidRequest
from ghostllm.store import Store, load_migrations, make_store
from tests.e2e.store.test_models import audit, dump, with_repo

D = DeploymentConfig
TWO = [D("openai", "gpt-4o", 3), D("azure", "gpt-4o-prod", 1, input_price_per_1m=2.0)]

# A deployment that sets none of its own timeouts (its provider's apply).
NO_TIMEOUTS = dict.fromkeys(TIMEOUT_FIELDS)


def test_deployments_strategy_fallbacks_and_retries_round_trip_with_audit_rows(store_config: StoreConfig) -> None:
    async def body(repo: ModelRepository) -> None:
        created = await repo.create_model(
            "gpt", deployments=TWO, strategy="weighted", fallbacks=["llama", "mini"], retries=2, input_price_per_1m=3
        )
        assert created.deployments == (D("openai", "gpt-4o", 3.0), D("azure", "gpt-4o-prod", 1.0, 2.0, None))
        # provider_id and upstream_model mirror the first deployment.
        assert (created.provider_id, created.upstream_model) == ("openai", "gpt-4o")
        assert (created.strategy, created.fallbacks, created.retries) == ("weighted", ("llama", "mini"), 2)
        assert await repo.get_model("gpt") == created and [m.id for m in await repo.list_models()] == ["gpt"]
        config = created.to_config()
        assert [(d.provider, d.upstream_model) for d in config.targets] == [
            ("openai", "gpt-4o"),
            ("azure", "gpt-4o-prod"),
        ]
        assert config.strategy == "weighted" and config.fallbacks == ("llama", "mini") and config.retries == 2

        # The single form is one deployment; restating the first deployment's provider is fine.
        single = await repo.create_model("mini", provider="openai", upstream_model="gpt-4o-mini")
        assert single.deployments == () and single.targets == (D("openai", "gpt-4o-mini"),)
        assert (single.strategy, single.fallbacks, single.retries) == ("priority", (), None)
        same = await repo.create_model("restated", provider="openai", deployments=[D("openai"), D("azure")])
        assert same.provider_id == "openai" and same.upstream_model == ""

        # PATCH: what is given changes, the rest stays.
        moved = await repo.update_model("gpt", deployments=[D("azure", "gpt-4o-prod")], strategy="least-busy")
        assert moved.deployments == (D("azure", "gpt-4o-prod"),) and moved.provider_id == "azure"
        assert moved.fallbacks == ("llama", "mini") and moved.retries == 2 and moved.input_price_per_1m == 3
        # Its one deployment edited through the single form, keeping its weight and prices.
        await repo.update_model("gpt", deployments=[D("azure", "gpt-4o-prod", 2, output_price_per_1m=9)])
        edited = await repo.update_model("gpt", upstream_model="gpt-4o-eu")
        assert edited.deployments == (D("azure", "gpt-4o-eu", 2.0, None, 9.0),) and edited.upstream_model == "gpt-4o-eu"
        cleared = await repo.update_model("gpt", fallbacks=None, retries=None)
        assert cleared.fallbacks == () and cleared.retries is None and cleared.strategy == "least-busy"
        widened = await repo.update_model("mini", deployments=TWO[::-1], fallbacks=["gpt"], retries=0)
        assert [d.provider for d in widened.deployments] == ["azure", "openai"] and widened.retries == 0

        trail = [e for e in await audit(repo.store) if e[1] == "gpt"]
        assert [a for a, _, _ in trail] == ["model.create"] + ["model.update"] * 4
        first = trail[0][2]
        assert first["strategy"] == "weighted" and first["fallbacks"] == ["llama", "mini"] and first["retries"] == 2
        assert first["deployments"][1] == {
            "provider": "azure",
            "upstream_model": "gpt-4o-prod",
            "weight": 1.0,
            "input_price_per_1m": 2.0,
            "output_price_per_1m": None,
            **NO_TIMEOUTS,
        }
        assert trail[1][2] == {
            "via": "cli",
            "strategy": "least-busy",
            "deployments": [
                {
                    "provider": "azure",
                    "upstream_model": "gpt-4o-prod",
                    "weight": 1.0,
                    "input_price_per_1m": None,
                    "output_price_per_1m": None,
                    **NO_TIMEOUTS,
                }
            ],
        }
        assert trail[4][2] == {"via": "cli", "fallbacks": [], "retries": None}

    with_repo(store_config, body)


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"deployments": [D("openai"), D("azure", weight=0)]}, "deployments[1].weight", "more than 0"),
    ({"deployments": [D("x'; DROP TABLE models;--")]}, "deployments[0].provider", "letters"),
    ({"deployments": [D("openai"), D("openai")]}, "deployments[1]", "listed twice"),
    ({"strategy": "round-robin"}, "strategy", "unknown strategy 'round-robin'"),
    ({"fallbacks": ["other", "kept"]}, "fallbacks[1]", "cannot fall back to itself"),
    ({"retries": 11}, "retries", "0 to 10"),
]


def test_bad_routing_values_are_400s_that_write_nothing(store_config: StoreConfig) -> None:
    async def body(repo: ModelRepository) -> None:
        await repo.create_model("kept", deployments=TWO)
        await repo.create_model("one", provider="openai")
        before = await dump(repo.store)
        for fields, param, words in BAD:
            with pytest.raises(InvalidRequest, match=words) as err:
                await repo.create_model("kept", **{"provider": "openai", **fields})
            assert err.value.param == param, fields
            with pytest.raises(InvalidRequest, match=words) as err:
                await repo.update_model("kept", **fields)
            assert err.value.param == param, fields
        with pytest.raises(InvalidRequest, match="provider and upstream_model, or deployments, not both") as err:
            await repo.create_model("new", provider="azure", deployments=TWO)
        assert err.value.param == "deployments"
        with pytest.raises(InvalidRequest, match="not both"):
            await repo.create_model("new", upstream_model="other", deployments=TWO)
        with pytest.raises(InvalidRequest, match="not both"):
            await repo.update_model("one", provider="azure", deployments=TWO)
        with pytest.raises(InvalidRequest, match="provider: required"):
            await repo.create_model("new")
        # Which of two deployments a provider or upstream model is meant for is not known.
        singles: list[dict[str, Any]] = [{"provider": "azure"}, {"upstream_model": "azure"}]
        for one in singles:
            with pytest.raises(InvalidRequest, match="has 2 deployments: change them with deployments") as err:
                await repo.update_model("kept", **one)
            assert err.value.param == next(iter(one))
        assert await dump(repo.store) == before

    with_repo(store_config, body)


def test_migration_0007_keeps_existing_models_single(
    store_config: StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model written before 0007 reads after it as one deployment, priority, no fallbacks."""

    async def run() -> None:
        async with make_store(store_config) as store:
            everything = store.migrations
            monkeypatch.setattr(type(store), "migrations", property(lambda s: everything[:6]))
            assert [m.version for m in await store.migrate()] == [1, 2, 3, 4, 5, 6]
            await store.execute(
                "INSERT INTO models (id, provider_id, upstream_model, context_length) VALUES (?, ?, ?, ?)",
                ("old", "openai", "gpt-4o", 4096),
            )
            monkeypatch.undo()
            assert [m.version for m in await store.migrate()] == [7]
            assert (await store.status()).current
            old = await ModelRepository(store).get_model("old")
            assert old.deployments == () and old.targets == (D("openai", "gpt-4o"),)
            assert (old.strategy, old.fallbacks, old.retries, old.context_length) == ("priority", (), None, 4096)
            await _hand_edited_rows_still_list(store)

    asyncio.run(run())


async def _hand_edited_rows_still_list(store: Store) -> None:
    """A cell nobody should have written cannot break the listing (the catalogue leaves the model out)."""
    await store.execute("UPDATE models SET deployments = ? WHERE id = 'old'", (json.dumps({"not": "a list"}),))
    (old,) = await ModelRepository(store).list_models()
    assert old.deployments == (D(""),)


def test_both_dialects_carry_0007() -> None:
    for dialect in ("sqlite", "postgresql"):
        assert (load_migrations(dialect)[6].version, load_migrations(dialect)[6].name) == (7, "model_routing")
