"""ghostllm.routing.catalogue: public ids, deployments, capabilities, discovery merged the same everywhere."""

from __future__ import annotations

import pytest

from ghostllm.config import Capability, parse_config
from ghostllm.errors import InvalidRequest, ModelNotFound
from ghostllm.providers.factory import make_provider
from ghostllm.routing.catalogue import Catalogue

CONFIG = parse_config(
    {
        "providers": [
            {"id": "a", "type": "openai", "base_url": "http://127.0.0.1:1/v1"},
            {"id": "local", "type": "openai", "base_url": "http://127.0.0.1:2/v1", "discover_models": True},
        ],
        "models": [
            {"id": "gpt", "provider": "a", "upstream_model": "gpt-4o-2024", "capabilities": ["chat", "vision"]},
            {"id": "llama3", "provider": "local"},
        ],
    },
    env={},
)
PROVIDERS = {p.id: make_provider(p) for p in CONFIG.providers}


def test_resolve_and_capabilities() -> None:
    cat = Catalogue(CONFIG, PROVIDERS)
    m = cat.resolve("gpt", Capability.CHAT)
    assert m.deployment.provider is PROVIDERS["a"] and m.deployment.upstream_model == "gpt-4o-2024"
    assert m.capabilities == {Capability.CHAT, Capability.VISION}
    with pytest.raises(InvalidRequest):
        cat.resolve("gpt", Capability.EMBEDDINGS)
    with pytest.raises(ModelNotFound):
        cat.resolve("nope")


def test_discovered_models_are_added_in_a_stable_order_without_overriding_config() -> None:
    one = Catalogue(CONFIG, PROVIDERS, {"local": ["qwen", "llama3", "mistral"]})
    two = Catalogue(CONFIG, PROVIDERS, {"local": ["mistral", "qwen", "llama3"]})
    assert [m.id for m in one.models] == [m.id for m in two.models] == ["gpt", "llama3", "mistral", "qwen"]
    assert one.resolve("llama3").config is CONFIG.models[1]
    assert Capability.EMBEDDINGS in one.resolve("qwen").capabilities
    assert one.created == two.created
