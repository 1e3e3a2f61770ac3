"""ghostllm.routing.merge: config + store -> what the catalogue serves (the store wins)."""

from __future__ import annotations

import pytest

from ghostllm.config import ModelConfig, parse_config
from ghostllm.routing.merge import StoredProvider, merge

CONFIG = parse_config(
    {
        "providers": [
            {"id": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_KEY", "timeout_s": 30},
            {"id": "local", "base_url": "http://127.0.0.1:11434/v1", "headers": {"X-Team": "ml"}},
        ],
        "models": [
            {"id": "gpt", "provider": "openai", "upstream_model": "gpt-4o", "input_price_per_1m": 2.5},
            {"id": "llama", "provider": "local"},
        ],
    },
    env={},
)
SECRET = "sk-stored-CLEAR-0123456789"


def ids(items: tuple[object, ...]) -> list[str]:
    return [getattr(i, "id") for i in items]  # noqa: B009 - providers and models alike


def test_config_alone_is_served_as_is() -> None:
    merged = merge(CONFIG, [], [])
    assert merged.providers == CONFIG.providers and merged.models == CONFIG.models and merged.warnings == ()
    assert merged.config(CONFIG).providers == CONFIG.providers


def test_a_store_provider_replaces_the_config_one_field_by_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_KEY", "sk-from-env")
    row = StoredProvider("openai", True, "openai", "https://proxy.example/v1", {"connect_timeout_s": 2})
    merged = merge(CONFIG, [row], [])
    p = merged.providers[0]
    assert ids(merged.providers) == ["openai", "local"]  # in the config's place
    assert p.base_url == "https://proxy.example/v1" and p.connect_timeout_s == 2.0
    assert p.timeout_s == 30.0  # what the row does not set stays the config's
    assert p.api_key == "sk-from-env"  # no stored key: the config's api_key_env still applies
    assert ids(merged.models) == ["gpt", "llama"] and merged.models[0].provider == "openai"


def test_a_stored_key_wins_over_api_key_env_and_is_never_in_a_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_KEY", "sk-from-env")
    row = StoredProvider("openai", True, "openai", "https://api.openai.com/v1", {}, SECRET)
    p = merge(CONFIG, [row], []).providers[0]
    assert p.api_key == SECRET and p.stored_api_key == SECRET
    assert SECRET not in repr(p) and SECRET not in repr(row)


def test_store_only_providers_and_models_are_added_after_the_configs_in_id_order() -> None:
    rows = [
        StoredProvider("zeta", True, "openai", "https://zeta.example/v1", {"headers": {"X-A": "1"}}, SECRET),
        StoredProvider("groq", True, "openai", "https://groq.example/v1"),
    ]
    models = [ModelConfig("z-model", "zeta"), ModelConfig("a-model", "groq", capabilities=("chat",))]
    merged = merge(CONFIG, rows, models)
    assert ids(merged.providers) == ["openai", "local", "groq", "zeta"]
    assert merged.providers[3].headers == {"X-A": "1"} and merged.providers[3].api_key == SECRET
    assert merged.providers[2].api_key == ""
    assert ids(merged.models) == ["gpt", "llama", "a-model", "z-model"] and merged.warnings == ()


def test_a_store_model_replaces_the_config_model_of_its_id() -> None:
    mine = ModelConfig("gpt", "local", upstream_model="llama3:70b", input_price_per_1m=0.1, capabilities=("chat",))
    merged = merge(CONFIG, [], [mine])
    assert merged.models == (mine, CONFIG.models[1])


def test_a_disabled_store_provider_removes_the_provider_and_its_models_quietly() -> None:
    rows = [
        StoredProvider("openai", False, "openai", "https://api.openai.com/v1"),
        StoredProvider("groq", False, "openai", "https://groq.example/v1"),
    ]
    merged = merge(CONFIG, rows, [ModelConfig("fast", "groq"), ModelConfig("gpt-mini", "openai")])
    assert ids(merged.providers) == ["local"]
    assert ids(merged.models) == ["llama"] and merged.warnings == ()


def test_a_model_whose_provider_exists_nowhere_is_left_out_with_a_warning() -> None:
    merged = merge(CONFIG, [], [ModelConfig("orphan", "ghost")])
    assert ids(merged.models) == ["gpt", "llama"]
    assert merged.warnings == ("model orphan: provider 'ghost' is in neither the config nor the store; left out",)


def test_unusable_store_rows_leave_the_config_definition_standing() -> None:
    rows = [
        StoredProvider("openai", True, "carrier-pigeon", "https://api.openai.com/v1"),
        StoredProvider("local", True, "openai", "http://127.0.0.1:1/v1", {"timeout_s": "forever"}),
        StoredProvider("new", True, "openai", "https://new.example/v1", {"no_such_setting": 1}),
    ]
    bad_caps = ModelConfig("llama", "local", capabilities=("chat", "teleport"))
    merged = merge(CONFIG, rows, [bad_caps, ModelConfig("empty", "local", capabilities=())])
    assert merged.providers == CONFIG.providers and merged.models == CONFIG.models
    text = "\n".join(merged.warnings)
    assert "provider openai: the store's definition is not usable (unknown type 'carrier-pigeon'" in text
    assert "provider local: the store's definition is not usable" in text and "expected a number" in text
    assert "provider new: the store's definition is not usable" in text and "left out" in text
    assert "model llama: the store's definition is not usable (unknown capabilities ['teleport'])" in text
    assert "model empty: the store's definition is not usable (no capabilities); left out" in text


def test_stored_api_key_comes_neither_from_yaml_nor_the_environment() -> None:
    env = {"GHOSTLLM_PROVIDER_OPENAI_STORED_API_KEY": SECRET}
    config = parse_config({"providers": [{"id": "openai", "base_url": "https://x/v1"}]}, env=env)
    assert config.providers[0].stored_api_key == "" and config.providers[0].api_key == ""
    row = StoredProvider("openai", True, "openai", "https://x/v1", {"stored_api_key": SECRET})
    merged = merge(config, [row], [])
    assert merged.providers == config.providers and "unknown key(s)" in merged.warnings[0]
