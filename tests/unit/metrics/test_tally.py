"""The metrics sink: usage records added up per label set, pushed into the families once."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ghostllm.gateway.usage import UsageRecord
from ghostllm.metrics.families import Families
from ghostllm.metrics.publisher import push
from ghostllm.metrics.tally import Tally
from tests.support.records import usage_record

KNOWN = {"gpt-4o", "dev-echo"}
BASE = usage_record(
    model="gpt-4o",
    provider="openai",
    upstream_model="gpt-4o",
    prompt_tokens=10,
    completion_tokens=20,
    total_tokens=30,
    cached_tokens=4,
    reasoning_tokens=6,
    latency_ms=250.0,
    client_ip="10.0.0.1",
    cost_nano_usd=12_345,
    deployment="openai/gpt-4o",
    attempts=1,
    deployments_tried=("openai/gpt-4o",),
    upstream_ms=249.0,
)


def record(**changes: Any) -> UsageRecord:
    return dataclasses.replace(BASE, **changes)


def published(*records: UsageRecord) -> CollectorRegistry:
    registry = CollectorRegistry()
    families = Families(registry)
    tally = Tally(lambda m: m if m in KNOWN else None)
    for r in records:
        tally(r)
    push(families, tally.take())
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def requests(registry: CollectorRegistry, **labels: str) -> float:
    base = {"endpoint": "chat.completions", "model": "gpt-4o", "provider": "openai", "status_class": "2xx"}
    return value(registry, "ghostllm_requests_total", **{**base, "error_code": "", **labels})


def test_requests_by_status_class_and_error_code() -> None:
    reg = published(
        record(),
        record(),
        record(status=502, error_code="provider_error"),
        record(status=499, error_code="client_closed"),
        record(status=404, error_code="model_not_found", model="made-up-by-a-client", provider=None),
        record(status=401, error_code="invalid_api_key", model="", provider=None, endpoint="models"),
    )
    assert requests(reg) == 2
    assert requests(reg, status_class="5xx", error_code="provider_error") == 1
    assert requests(reg, status_class="4xx", error_code="client_closed") == 1
    # A client's model name never becomes a label value; a request that named none says so.
    assert requests(reg, status_class="4xx", error_code="model_not_found", model="unknown", provider="none") == 1
    labels = {"endpoint": "models", "model": "none", "provider": "none", "status_class": "4xx"}
    assert requests(reg, **labels, error_code="invalid_api_key") == 1


def test_tokens_and_cost_are_summed_per_model_and_provider() -> None:
    reg = published(record(), record(cached_tokens=None, reasoning_tokens=None), record(model="dev-echo"))
    tokens = {t: value(reg, "ghostllm_tokens_total", model="gpt-4o", provider="openai", type=t) for t in
              ("prompt", "completion", "cached", "reasoning")}  # fmt: skip
    assert tokens == {"prompt": 20, "completion": 40, "cached": 4, "reasoning": 6}
    assert value(reg, "ghostllm_cost_usd_total", model="gpt-4o", provider="openai") == pytest.approx(24_690e-9)
    assert value(reg, "ghostllm_tokens_total", model="dev-echo", provider="openai", type="prompt") == 10


def test_histograms_take_what_each_record_has() -> None:
    reg = published(
        record(),
        record(stream=True, ttft_ms=80.0, latency_ms=2_000.0, upstream_ms=1_999.0),
        record(status=401, error_code="invalid_api_key", provider=None, upstream_ms=None, attempts=0),
    )
    h = "ghostllm_request_duration_seconds"
    labels = {"endpoint": "chat.completions", "model": "gpt-4o", "provider": "openai"}
    assert value(reg, h + "_count", **labels, stream="false") == 1
    assert value(reg, h + "_bucket", **labels, stream="false", le="0.25") == 1
    assert value(reg, h + "_bucket", **labels, stream="false", le="0.1") == 0
    assert value(reg, h + "_sum", **labels, stream="true") == pytest.approx(2.0)
    assert value(reg, h + "_count", **{**labels, "provider": "none"}, stream="false") == 1
    # Time to first token: streams only.
    assert value(reg, "ghostllm_time_to_first_token_seconds_count", model="gpt-4o", provider="openai") == 1
    assert value(reg, "ghostllm_time_to_first_token_seconds_bucket", model="gpt-4o", provider="openai", le="0.1") == 1
    # Upstream time and the gateway's share: requests that called an upstream.
    up = "ghostllm_upstream_duration_seconds"
    assert value(reg, up + "_count", model="gpt-4o", provider="openai", stream="false") == 1
    assert value(reg, up + "_sum", model="gpt-4o", provider="openai", stream="true") == pytest.approx(1.999)
    over = "ghostllm_gateway_overhead_seconds"
    assert value(reg, over + "_count", endpoint="chat.completions", stream="false") == 1
    assert value(reg, over + "_sum", endpoint="chat.completions", stream="false") == pytest.approx(0.001)
    assert value(reg, over + "_bucket", endpoint="chat.completions", stream="false", le="0.002") == 1


def test_retries_and_fallbacks_from_the_deployments_tried() -> None:
    tried = ("a/m", "a/m", "b/m", "c/m", "c/m", "c/m")
    reg = published(record(attempts=len(tried), deployments_tried=tried), record())
    assert value(reg, "ghostllm_retries_total", model="gpt-4o") == 3
    assert value(reg, "ghostllm_fallbacks_total", model="gpt-4o") == 2


def test_take_starts_afresh_so_nothing_is_pushed_twice() -> None:
    registry = CollectorRegistry()
    families = Families(registry)
    tally = Tally(lambda m: m if m in KNOWN else None)
    tally(record())
    push(families, tally.take())
    push(families, tally.take())
    tally(record())
    push(families, tally.take())
    assert requests(registry) == 2
    assert value(registry, "ghostllm_tokens_total", model="gpt-4o", provider="openai", type="prompt") == 20
