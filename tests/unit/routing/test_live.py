"""ghostllm.routing.live: the merged config swapped in place for everyone holding the catalogue."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from ghostllm.config import Capability, ModelConfig, ProviderConfig, parse_config
from ghostllm.gateway.stages import ResolveModel
from ghostllm.providers.base import Provider
from ghostllm.providers.factory import make_provider
from ghostllm.providers.http import HTTPProvider
from ghostllm.routing.live import LiveCatalogue
from ghostllm.routing.merge import Merged, StoredProvider, merge

# Nothing listens on these ports: nothing here reaches the network but the health check.
CONFIG = parse_config(
    {
        "providers": [
            {"id": "a", "base_url": "http://127.0.0.1:9/v1", "connect_timeout_s": 0.5},
            {"id": "b", "base_url": "http://127.0.0.1:9/v1", "connect_timeout_s": 0.5},
        ],
        "models": [{"id": "m-a", "provider": "a"}, {"id": "m-b", "provider": "b"}],
    },
    env={},
)


def is_open(p: Provider) -> bool:
    assert isinstance(p, HTTPProvider)
    return p.transport._session is not None


def test_apply_swaps_in_place_keeps_unchanged_providers_and_retires_the_others() -> None:
    async def run() -> None:
        live = LiveCatalogue(CONFIG, make_provider, {"b": ["found-b"]}, retire_after_s=60)
        await live.start()
        catalogue, providers, resolve = live.catalogue, live.providers, ResolveModel(live.catalogue)
        a, b = providers["a"], providers["b"]
        before = catalogue.resolve("m-a")
        assert [m.id for m in catalogue.models] == ["m-a", "m-b", "found-b"]

        rows = [
            StoredProvider("b", True, "openai", "http://127.0.0.1:10/v1"),  # changed
            StoredProvider("c", True, "openai", "http://127.0.0.1:11/v1", api_key="sk-c"),  # new
        ]
        models = [ModelConfig("m-c", "c", upstream_model="up-c", capabilities=("chat",)), ModelConfig("m-a", "b")]
        changes = await live.apply(merge(CONFIG, rows, models))

        # The very objects everyone holds now show the new catalogue.
        assert live.catalogue is catalogue and live.providers is providers and resolve.catalogue is catalogue
        assert list(providers) == ["a", "b", "c"] and providers["a"] is a and providers["b"] is not b
        assert [m.id for m in catalogue.models] == ["m-a", "m-b", "m-c", "found-b"]
        assert catalogue.resolve("m-a").deployment.provider is providers["b"]
        assert catalogue.resolve("m-c", Capability.CHAT).deployment.upstream_model == "up-c"
        assert providers["c"].config.api_key == "sk-c" and is_open(providers["c"])
        # What resolved before the swap keeps its provider, still open until retired.
        assert before.deployment.provider is a and is_open(b) and live.retiring == [b]
        assert changes.providers_added == ("c",) and changes.providers_changed == ("b",)
        assert changes.models_added == ("m-c",) and set(changes.models_changed) == {"m-a", "m-b", "found-b"}
        assert "providers added: c" in changes.describe()

        # The same again changes nothing and builds nothing.
        again = await live.apply(merge(CONFIG, rows, models))
        assert not again and again.describe() == "nothing changed" and providers["a"] is a

        # Disabling removes the provider and its models (and the discovered ones).
        rows[0] = replace(rows[0], enabled=False)
        changes = await live.apply(merge(CONFIG, rows, models))
        assert list(providers) == ["a", "c"] and [m.id for m in catalogue.models] == ["m-c"]
        assert changes.providers_removed == ("b",) and set(changes.models_removed) == {"m-a", "m-b", "found-b"}
        assert len(live.retiring) == 2

        await live.close()
        assert not any(is_open(p) for p in (a, b, *providers.values())) and live.retiring == []

    asyncio.run(run())


def test_a_retired_provider_is_closed_after_the_delay() -> None:
    async def run() -> None:
        live = LiveCatalogue(CONFIG, make_provider, retire_after_s=0.05)
        await live.start()
        old = live.providers["a"]
        changed = replace(CONFIG.providers[0], timeout_s=5.0)
        await live.apply(Merged((changed, CONFIG.providers[1]), CONFIG.models))
        assert live.retiring == [old] and is_open(old)
        for _ in range(500):  # polled, not timed: a busy machine may take longer than the delay
            if not live.retiring:
                break
            await asyncio.sleep(0.02)
        assert live.retiring == [] and not is_open(old) and is_open(live.providers["a"])
        await live.close()

    asyncio.run(run())


def test_health_names_exactly_the_providers_there_are_now() -> None:
    async def run() -> None:
        live = LiveCatalogue(CONFIG, make_provider)
        await live.start()
        assert await live.health.get() == {"a": False, "b": False}
        extra = ProviderConfig("c", base_url="http://127.0.0.1:9/v1", connect_timeout_s=0.5)
        await live.apply(Merged((CONFIG.providers[1], extra), (CONFIG.models[1],)))
        assert await live.health.get() == {"b": False, "c": False}
        await live.close()

    asyncio.run(run())
