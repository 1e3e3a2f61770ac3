"""Store models with several deployments, a strategy, fallbacks and retries (issue 10): the
rules a value meets before it is written, how a row reads back, how it merges over the
config, the admin API's conversions and the CLI's --deployment. The repository itself, on
both backends, is tests/e2e/store/test_model_routing.py; the running stack,
tests/e2e/api/test_model_deployments.py."""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from ghostllm.accounts import rows
from ghostllm.accounts.models import check_deployments, check_fallbacks, check_retries, check_strategy
from ghostllm.accounts.records import ModelRecord
from ghostllm.api import admin_messages as msg
from ghostllm.api.admin_catalogue import catalogue_model, configured_model, deployments_given
from ghostllm.cli_models import deployment_arg
from ghostllm.config import DeploymentConfig, ModelConfig, parse_config
from ghostllm.errors import InvalidRequest
from ghostllm.routing.merge import merge
from ghostllm.v1 import admin_pb2

D = DeploymentConfig
CONFIG = parse_config(
    {
        "providers": [
            {"id": "openai", "base_url": "https://api.openai.com/v1"},
            {"id": "azure", "type": "azure", "base_url": "https://x.openai.azure.com"},
        ],
        "models": [
            {"id": "gpt", "provider": "openai", "upstream_model": "gpt-4o"},
            {
                "id": "multi",
                "strategy": "weighted",
                "deployments": [
                    {"provider": "openai", "upstream_model": "gpt-4o", "weight": 3},
                    {"provider": "azure", "upstream_model": "gpt-4o-prod", "input_price_per_1m": 2.0},
                ],
                "fallbacks": ["gpt"],
                "retries": 2,
            },
        ],
    },
    env={},
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(**fields: Any) -> ModelRecord:
    base: dict[str, Any] = {
        "id": "m",
        "provider_id": "openai",
        "upstream_model": "",
        "context_length": 0,
        "input_price_per_1m": 1.0,
        "output_price_per_1m": 2.0,
        "capabilities": ("chat",),
        "created_at": NOW,
        "updated_at": NOW,
    }
    return ModelRecord(**{**base, **fields})


# ---------------------------------------------------------------------------------- rules


def test_a_deployments_own_timeouts_are_kept_through_the_store_and_the_api() -> None:
    given = D("openai", "gpt-4o", 2, ttft_timeout_s=5, idle_timeout_s=2.5)
    [checked] = check_deployments("m", [given])
    assert (checked.ttft_timeout_s, checked.idle_timeout_s, checked.timeout_s) == (5.0, 2.5, None)
    cell = json.dumps([dataclasses.asdict(checked)])
    assert rows._deployments(cell) == (checked,)
    request = admin_pb2.CreateCatalogueModelRequest(id="m", deployments=[admin_pb2.Deployment(
        provider="openai", upstream_model="gpt-4o", ttft_timeout_s=5, idle_timeout_s=2.5)])  # fmt: skip
    assert deployments_given(request)[0].ttft_timeout_s == 5.0
    assert deployment_arg("openai:gpt-4o,ttft_timeout=5,timeout=60") == {
        "provider": "openai", "upstream_model": "gpt-4o", "weight": 1.0, "ttft_timeout_s": 5.0, "timeout_s": 60.0,
    }  # fmt: skip


def test_good_deployments_come_back_checked() -> None:
    given = [D("openai", "gpt-4o", 3), D("azure", "", 1, input_price_per_1m=2, output_price_per_1m=None)]
    checked = check_deployments("m", given)
    assert checked == (D("openai", "gpt-4o", 3.0), D("azure", "", 1.0, 2.0, None))
    assert isinstance(checked[1].input_price_per_1m, float)


@pytest.mark.parametrize(
    ("given", "param", "words"),
    [
        ([], "deployments", "at least one"),
        ("openai", "deployments", "a list"),
        ([D("openai")] * 33, "deployments", "at most 32"),
        ([{"provider": "openai"}], "deployments[0]", "expected a deployment"),
        ([D("openai"), D("x'; DROP TABLE models;--")], "deployments[1].provider", "letters, digits"),
        ([D("openai", "has space")], "deployments[0].upstream_model", "expected"),
        ([D("openai", weight=0)], "deployments[0].weight", "more than 0"),
        ([D("openai", weight=-1)], "deployments[0].weight", "more than 0"),
        ([D("openai", weight=float("nan"))], "deployments[0].weight", "more than 0"),
        ([D("openai", weight=True)], "deployments[0].weight", "a number"),
        ([D("openai", input_price_per_1m=-1)], "deployments[0].input_price_per_1m", "from 0"),
        ([D("openai", "m"), D("openai", "")], "deployments[1]", "listed twice"),
        ([D("openai", ttft_timeout_s=0)], "deployments[0].ttft_timeout_s", "more than 0"),
        ([D("openai", timeout_s=10**9)], "deployments[0].timeout_s", "at most 86400"),
    ],
)
def test_bad_deployments_are_400s_naming_the_field(given: Any, param: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        check_deployments("m", given)
    assert exc.value.param == param and words in exc.value.message
    assert exc.value.message.startswith(f"{param}: ")


def test_strategy_fallbacks_and_retries() -> None:
    assert check_strategy("least-latency") == "least-latency"
    with pytest.raises(InvalidRequest, match=r"strategy: unknown strategy 'fastest'; known: priority, weighted") as e:
        check_strategy("fastest")
    assert e.value.param == "strategy"
    assert check_fallbacks("m", ["a", "vendor/b:1"]) == ("a", "vendor/b:1") and check_fallbacks("m", None) == ()
    for bad, param, words in [
        (["a", "m"], "fallbacks[1]", "model m cannot fall back to itself"),
        (["a", "a"], "fallbacks[1]", "listed twice"),
        (["a b"], "fallbacks[0]", "a model id"),
        ("a", "fallbacks", "a list"),
    ]:
        with pytest.raises(InvalidRequest, match=words) as e:
            check_fallbacks("m", bad)
        assert e.value.param == param
    assert check_retries(None) is None and check_retries(0) == 0 and check_retries(10) == 10
    for bad_retries in (11, -1, True, 1.5):
        with pytest.raises(InvalidRequest) as e:
            check_retries(bad_retries)  # type: ignore[arg-type]
        assert e.value.param == "retries"


# ---------------------------------------------------------------------------------- rows and records


def test_a_deployments_cell_reads_on_both_backends_and_a_broken_one_cannot_be_served() -> None:
    cell = [{"provider": "a", "upstream_model": "x", "weight": 2, "input_price_per_1m": 1, "output_price_per_1m": None}]
    assert rows._deployments(json.dumps(cell)) == rows._deployments(cell) == (D("a", "x", 2.0, 1.0, None),)
    assert rows._deployments("[]") == ()
    for broken in ("not json", "{}", [{"upstream_model": "x"}], [{"provider": "a", "weight": "heavy"}], [7]):
        assert rows._deployments(broken) == (D(""),)


def test_a_record_becomes_the_config_model_the_catalogue_takes() -> None:
    single = record(upstream_model="gpt-4o", retries=2)
    assert single.to_config() == ModelConfig(
        "m", "openai", "gpt-4o", input_price_per_1m=1.0, output_price_per_1m=2.0, capabilities=("chat",), retries=2
    )
    assert single.targets == (D("openai", "gpt-4o"),)
    many = record(
        upstream_model="gpt-4o",
        deployments=(D("openai", "gpt-4o", 3), D("azure", "")),
        strategy="weighted",
        fallbacks=("gpt",),
    )
    config = many.to_config()
    assert config.upstream_model == "" and config.provider == "openai" and config.strategy == "weighted"
    assert config.targets == (D("openai", "gpt-4o", 3), D("azure", "m")) and config.fallbacks == ("gpt",)
    data = many.to_dict()
    assert data["deployments"][0] == {
        "provider": "openai",
        "upstream_model": "gpt-4o",
        "weight": 3,
        "input_price_per_1m": None,
        "output_price_per_1m": None,
        "connect_timeout_s": None,
        "ttft_timeout_s": None,
        "idle_timeout_s": None,
        "timeout_s": None,
    }
    assert data["fallbacks"] == ["gpt"] and data["strategy"] == "weighted" and data["retries"] is None


# ---------------------------------------------------------------------------------- merge


def test_a_store_model_with_deployments_replaces_the_configs_and_keeps_only_served_providers() -> None:
    mine = record(
        id="gpt", deployments=(D("azure", "a"), D("gone", "b"), D("openai", "c")), strategy="lowest-cost"
    ).to_config()
    merged = merge(CONFIG, [], [mine])
    gpt = next(m for m in merged.models if m.id == "gpt")
    assert [d.provider for d in gpt.targets] == ["azure", "openai"] and gpt.provider == "azure"
    assert gpt.strategy == "lowest-cost"
    assert merged.warnings == ("model gpt: provider 'gone' is in neither the config nor the store",)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"strategy": "fastest"}, "unknown strategy 'fastest'"),
        ({"deployments": (D("openai"), D(""))}, "a deployment that cannot be read"),
        ({"deployments": (D("openai", weight=0),)}, "a deployment that cannot be read"),
        ({"retries": 99}, "retries 99 out of range"),
    ],
)
def test_a_row_edited_by_hand_is_left_out_and_the_configs_model_stands(fields: dict[str, Any], problem: str) -> None:
    merged = merge(CONFIG, [], [record(id="multi", **fields).to_config()])
    assert merged.models == CONFIG.models
    assert merged.warnings == (
        f"model multi: the store's definition is not usable ({problem}); the config's definition stands",
    )


# ---------------------------------------------------------------------------------- admin API shapes


def test_models_show_every_deployment_whatever_their_source() -> None:
    multi = configured_model(CONFIG.models[1])
    assert multi.source == "config" and multi.strategy == "weighted" and list(multi.fallbacks) == ["gpt"]
    assert multi.retries == 2 and multi.provider == "openai"
    assert [(d.provider, d.upstream_model, d.weight) for d in multi.deployments] == [
        ("openai", "gpt-4o", 3.0),
        ("azure", "gpt-4o-prod", 1.0),
    ]
    assert multi.deployments[1].input_price_per_1m == 2.0 and not multi.deployments[0].HasField("input_price_per_1m")
    single = configured_model(CONFIG.models[0])
    assert [(d.provider, d.upstream_model) for d in single.deployments] == [("openai", "gpt-4o")]
    assert single.strategy == "priority" and not single.HasField("retries")
    stored = catalogue_model(record(deployments=(D("openai", "x", 2), D("azure", "")), fallbacks=("gpt",)))
    assert stored.source == "database" and [d.upstream_model for d in stored.deployments] == ["x", "m"]
    assert list(stored.fallbacks) == ["gpt"] and stored.created_at


def test_request_deployments_default_to_weight_one_and_the_models_prices() -> None:
    request = admin_pb2.CreateCatalogueModelRequest(
        deployments=[
            admin_pb2.Deployment(provider="a", upstream_model="x"),
            admin_pb2.Deployment(provider="b", weight=0, output_price_per_1m=3),
        ]
    )
    assert deployments_given(request) == [D("a", "x", 1.0), D("b", "", 0.0, None, 3.0)]


def test_fallbacks_are_cleared_by_name_and_not_also_given() -> None:
    request = admin_pb2.UpdateCatalogueModelRequest(id="m", clear=["fallbacks", "retries"])
    assert msg.cleared(request, ("fallbacks", "retries")) == {"fallbacks", "retries"}
    both = admin_pb2.UpdateCatalogueModelRequest(id="m", fallbacks=["gpt"], clear=["fallbacks"])
    with pytest.raises(InvalidRequest, match="fallbacks: both given and cleared"):
        msg.cleared(both, ("fallbacks", "retries"))
    with pytest.raises(InvalidRequest, match="cannot be cleared"):
        msg.cleared(admin_pb2.UpdateCatalogueModelRequest(id="m", clear=["deployments"]), ("fallbacks", "retries"))


# ---------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("openai", {"provider": "openai", "upstream_model": "", "weight": 1.0}),
        ("openai:gpt-4o", {"provider": "openai", "upstream_model": "gpt-4o", "weight": 1.0}),
        ("openai:gpt-4o:3", {"provider": "openai", "upstream_model": "gpt-4o", "weight": 3.0}),
        ("ollama:llama3:8b", {"provider": "ollama", "upstream_model": "llama3:8b", "weight": 1.0}),
        ("ollama:qwen:7:0.5", {"provider": "ollama", "upstream_model": "qwen:7", "weight": 0.5}),
        (
            "azure:gpt-4o-prod:1,input_price=2.5, output_price=10",
            {
                "provider": "azure",
                "upstream_model": "gpt-4o-prod",
                "weight": 1.0,
                "input_price_per_1m": 2.5,
                "output_price_per_1m": 10.0,
            },
        ),
    ],
)
def test_deployment_argument(text: str, parsed: dict[str, Any]) -> None:
    assert deployment_arg(text) == parsed


@pytest.mark.parametrize("text", ["openai:gpt,weight=3", "openai:gpt,input_price=cheap", "openai:gpt,input_price"])
def test_deployment_argument_options_are_prices_and_timeouts_only(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"input_price=USD or output_price=USD .* timeout=SECONDS"):
        deployment_arg(text)
