"""ghostllm.routing.router and the exchange's attempt loop: the plan (strategy order, open
circuits skipped, fallbacks), config validation, retries with backoff on one deployment then
the next, then fallbacks; nothing retried after the first relayed chunk, or after a 400; the
usage record names what served. Scripted in-memory providers, an injected clock.

Run as a script for the routing micro-benchmark: `python -m tests.unit.routing.test_router`."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from ghostllm.config import Capability, Config, RoutingConfig, parse_config
from ghostllm.errors import (
    ConfigError,
    GhostError,
    InvalidRequest,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
    UpstreamTimeout,
)
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.exchange import DEPLOYMENT_HEADER
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.gateway.stages import ResolveModel, decode_body
from ghostllm.gateway.usage import UsageRecord
from ghostllm.protocol.chat import check_chat_request
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Call, Json, Provider, Reply, StreamBatch
from ghostllm.routing.catalogue import Catalogue, Deployment
from ghostllm.routing.circuit import CircuitState
from ghostllm.routing.router import Router, retry_after_s
from tests.support.providers import InMemory

PROVIDERS = [{"id": pid, "type": "openai", "base_url": f"http://127.0.0.1:{i + 1}/v1"} for i, pid in enumerate("abc")]


def config(*models: dict[str, Any], routing: dict[str, Any] | None = None) -> Config:
    return parse_config({"providers": PROVIDERS, "models": list(models), "routing": routing or {}}, env={})


# ---------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("models", "routing", "message"),
    [
        ([{"id": "m", "deployments": [{"provider": "ghost"}]}], {}, "models[0].deployments[0].provider"),
        ([{"id": "m", "provider": "ghost"}], {}, "unknown provider"),
        ([{"id": "m", "provider": "a", "strategy": "random"}], {}, "models[0].strategy"),
        ([{"id": "m", "provider": "a", "fallbacks": ["nope"]}], {}, "models[0].fallbacks[0]: unknown model"),
        ([{"id": "m", "provider": "a", "fallbacks": ["m"]}], {}, "cannot fall back to itself"),
        ([{"id": "m", "deployments": [{"provider": "a", "weight": -1}]}], {}, "models[0].deployments[0].weight"),
        ([{"id": "m", "deployments": [{"provider": "a", "wieght": 1}]}], {}, "models[0].deployments[0].wieght"),
        ([{"id": "m", "provider": "b", "deployments": [{"provider": "a"}]}], {}, "not both"),
        ([{"id": "m", "deployments": [{"provider": "a"}, {"provider": "a"}]}], {}, "listed twice"),
        ([{"id": "m"}], {}, "models[0]: provider (or deployments) is required"),
        ([{"id": "m", "provider": "a", "retries": 11}], {}, "models[0].retries"),
        ([{"id": "m", "provider": "a"}], {"retries": -1}, "routing.retries"),
        ([{"id": "m", "provider": "a"}], {"circuit_failure_rate": 0}, "routing.circuit_failure_rate"),
        ([{"id": "m", "provider": "a"}], {"retry_budget_s": 0}, "retry_budget_s"),
    ],
)
def test_config_validation_names_the_path(models: list[dict[str, Any]], routing: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config(*models, routing=routing)
    assert message in str(exc.value)


def test_both_forms_and_the_environment() -> None:
    cfg = parse_config(
        {
            "providers": PROVIDERS,
            "models": [
                {"id": "one", "provider": "a", "upstream_model": "up-one", "input_price_per_1m": 1.0},
                {
                    "id": "two",
                    "strategy": "weighted",
                    "input_price_per_1m": 1.0,
                    "deployments": [
                        {"provider": "a", "weight": 3},
                        {"provider": "b", "upstream_model": "two-b", "weight": 1, "input_price_per_1m": 0.5},
                    ],
                    "fallbacks": ["one"],
                },
            ],
        },
        env={"GHOSTLLM_ROUTING_RETRIES": "3", "GHOSTLLM_ROUTING_RETRY_BUDGET_S": "9.5"},
    )
    assert (cfg.routing.retries, cfg.routing.retry_budget_s) == (3, 9.5)
    one, two = cfg.models
    assert [(d.provider, d.upstream_model) for d in one.targets] == [("a", "up-one")]
    assert two.provider == "a"  # the first deployment's, for callers that show one provider
    assert [(d.provider, d.upstream_model, d.weight) for d in two.targets] == [("a", "two", 3.0), ("b", "two-b", 1.0)]
    cat = Catalogue(cfg, providers(cfg))
    m = cat.resolve("two")
    assert [d.key for d in m.deployments] == ["a/two", "b/two-b"] and m.deployment is m.deployments[0]
    prices = [d.prices for d in m.deployments]
    assert [p.input_price_per_1m for p in prices if p is not None] == [1.0, 0.5]


# ---------------------------------------------------------------------- scripted providers

USAGE = Usage(3, 5, 8)
OK = "ok"


class Scripted(InMemory):
    """Each call takes the next outcome: OK, an error to raise, or ("after", err): a stream
    that relays one chunk and then fails with err."""

    def __init__(self, pid: str, script: list[Any]) -> None:
        super().__init__(next(p for p in config({"id": "x", "provider": "a"}).providers if p.id == pid))
        self.script = script
        self.calls: list[tuple[str, Json]] = []

    def _next(self, model: str, body: Json) -> Any:
        self.calls.append((model, body))
        return self.script.pop(0) if self.script else OK

    async def complete(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> Reply:
        outcome = self._next(model, body)
        if isinstance(outcome, BaseException):
            raise outcome
        return Reply({"model": model, "choices": [{"index": 0, "message": {"content": self.id}}]}, USAGE)

    async def stream(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> AsyncGenerator[StreamBatch]:
        outcome = self._next(model, body)
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, tuple):
            yield StreamBatch([{"choices": [{"index": 0, "delta": {"content": "partial"}}]}], None, False)
            raise outcome[1]
        yield StreamBatch([{"choices": [{"index": 0, "delta": {"content": self.id}}]}], USAGE, True)


def providers(cfg: Config, scripts: dict[str, list[Any]] | None = None) -> dict[str, Provider]:
    return {p.id: Scripted(p.id, (scripts or {}).get(p.id, [])) for p in cfg.providers}


FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.002}
TWO = {"id": "m", "deployments": [{"provider": "a"}, {"provider": "b"}], "fallbacks": ["f"]}
FALLBACK = {"id": "f", "provider": "c", "upstream_model": "f-up", "input_price_per_1m": 2.0}


def setup(
    scripts: dict[str, list[Any]], *models: dict[str, Any], routing: dict[str, Any] | None = None
) -> tuple[Pipeline, Router, dict[str, Provider], list[UsageRecord]]:
    cfg = config(*(models or (TWO, FALLBACK)), routing={**FAST, **(routing or {})})
    ps = providers(cfg, scripts)
    cat = Catalogue(cfg, ps)
    router = Router(cat, cfg.routing, rng=random.Random(1))
    records: list[UsageRecord] = []
    return Pipeline([decode_body, ResolveModel(cat, router)], [records.append]), router, ps, records


def body(**extra: Any) -> Json:
    return {"model": "m", "messages": [{"role": "user", "content": "hello"}], **extra}


async def run(p: Pipeline, b: Json) -> tuple[Any, RequestContext]:
    rc = RequestContext(request_id="r", started=time.monotonic())
    async with p.exchange(rc, Endpoint.CHAT, lambda: check_chat_request(b)) as ex:
        await ex.admit()
        if not ex.stream:
            return await ex.complete(), rc
        return [item async for item in ex.relay()], rc


def calls(ps: dict[str, Provider]) -> list[str]:
    return [pid for pid, p in ps.items() for _ in p.calls]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- the plan


def test_plan_orders_then_fallbacks_and_skips_open_circuits() -> None:
    _p, router, _ps, _ = setup({})
    m = router.catalogue.resolve("m")
    assert [(x.id, d.key) for x, d in router.plan(m)] == [("m", "a/m"), ("m", "b/m"), ("f", "c/f-up")]
    st = router.state(m.deployments[0])
    for _ in range(5):  # circuit_failures default
        router.failed(router.begin(m.deployments[0]))
    assert st.circuit.state is CircuitState.OPEN and router.serving(m)  # b is still closed
    assert [d.key for _, d in router.plan(m)] == ["b/m", "c/f-up"]
    # Every one of the model's open: the one whose cooldown ends first is still tried.
    clock = [100.0]
    router.clock = lambda: clock[0]
    for _ in range(5):
        router.failed(router.begin(m.deployments[1]))
    st.circuit.open_until = 110.0
    assert [d.key for _, d in router.plan(m)] == ["a/m", "c/f-up"]
    assert not router.serving(m)
    # A fallback without the endpoint's capability is left out.
    assert [d.key for _, d in router.plan(m, Capability.EMBEDDINGS)] == ["a/m"]
    snap = router.snapshot()
    assert set(snap) == {"a/m", "b/m", "c/f-up"}
    assert snap["a/m"].circuit is CircuitState.OPEN and snap["a/m"].open_for_s == 10.0
    assert snap["c/f-up"].circuit is CircuitState.CLOSED and snap["c/f-up"].models == ("f",)


def test_retry_after_parsing() -> None:
    assert (retry_after_s("7"), retry_after_s("0.5"), retry_after_s("Wed, 21 Oct 2015"), retry_after_s(None)) == (
        7.0, 0.5, None, None,
    )  # fmt: skip
    cfg = config({"id": "m", "provider": "a"})
    router = Router(Catalogue(cfg, providers(cfg)), RoutingConfig(retry_after_cap_s=5.0))
    assert router.delay(0, RateLimited("x", retry_after="2"), 30.0) == 2.0
    assert router.delay(0, RateLimited("x", retry_after="7"), 30.0) is None  # over the cap: move on
    assert router.delay(0, ServiceUnavailable("x"), 0.01) is None  # past the retry budget
    waits = [router.delay(n, ProviderError("x"), 30.0) for n in range(6)]
    assert all(w is not None and 0.05 <= w <= 2.0 for w in waits)


# ---------------------------------------------------------------------- the attempt loop


@pytest.mark.parametrize("stream", [False, True])
def test_retry_on_the_same_deployment_succeeds(stream: bool) -> None:
    p, _router, ps, records = setup({"a": [ServiceUnavailable("busy")]})
    _out, rc = asyncio.run(run(p, body(stream=stream)))
    assert calls(ps) == ["a", "a"]
    assert (DEPLOYMENT_HEADER, "a/m") in rc.response_headers
    [r] = records
    assert (r.status, r.deployment, r.attempts, r.deployments_tried, r.total_tokens) == (
        200,
        "a/m",
        2,
        ("a/m", "a/m"),
        8,
    )
    assert all(b == body(stream=stream) for _, b in ps["a"].calls)  # type: ignore[attr-defined]


@pytest.mark.parametrize("stream", [False, True])
def test_failover_to_the_next_deployment_then_the_fallback(stream: bool) -> None:
    errors: list[GhostError] = [ProviderError("down"), UpstreamTimeout("slow")]
    p, _router, ps, records = setup({"a": list(errors), "b": [RateLimited("429", retry_after="60")] * 2})
    out, rc = asyncio.run(run(p, body(stream=stream)))
    # a: tried and retried; b: its retry-after is over the cap, so no retry there; then f.
    assert calls(ps) == ["a", "a", "b", "c"]
    model = out["model"] if not stream else out[0][0][0]["model"]
    assert model == "f"  # the answer names the fallback that served it
    [r] = records
    assert (r.deployment, r.attempts, r.deployments_tried) == ("c/f-up", 4, ("a/m", "a/m", "b/m", "c/f-up"))
    assert (r.model, r.provider, r.upstream_model) == ("m", "c", "f-up")
    assert r.cost_nano_usd == 3 * 2000  # the fallback's prices: 3 prompt tokens at $2/1M
    assert dict(rc.response_headers)[DEPLOYMENT_HEADER] == "c/f-up"


def test_every_attempt_failing_gives_the_last_error() -> None:
    p, router, _ps, records = setup(
        {"a": [ProviderError("a")] * 2, "b": [ProviderError("b")] * 2, "c": [UpstreamTimeout("c")] * 2}
    )
    with pytest.raises(UpstreamTimeout):
        asyncio.run(run(p, body()))
    [r] = records
    assert (r.status, r.attempts, r.deployment, r.total_tokens) == (504, 6, "c/f-up", 0)
    assert router.state(router.catalogue.resolve("m").deployments[0]).failures == 2


@pytest.mark.parametrize("stream", [False, True])
def test_a_400_is_not_retried(stream: bool) -> None:
    p, router, ps, records = setup({"a": [InvalidRequest("bad")]})
    with pytest.raises(InvalidRequest):
        asyncio.run(run(p, body(stream=stream)))
    assert calls(ps) == ["a"] and records[0].attempts == 1
    st = router.state(router.catalogue.resolve("m").deployments[0])
    assert (st.in_flight, st.failures, st.circuit.consecutive) == (0, 0, 0)  # not the deployment's fault


def test_no_retry_once_the_stream_has_begun() -> None:
    p, _router, ps, records = setup({"a": [("after", ProviderError("cut"))]})
    with pytest.raises(ProviderError):
        asyncio.run(run(p, body(stream=True)))
    assert calls(ps) == ["a"]
    [r] = records
    assert (r.attempts, r.deployment, r.status) == (1, "a/m", 502)


def test_the_retry_budget_caps_the_attempts() -> None:
    p, _router, ps, _records = setup(
        {"a": [ProviderError("x")] * 9},
        {"id": "m", "provider": "a"},
        routing={"retries": 5, "retry_budget_s": 0.001, "backoff_base_s": 0.01, "backoff_max_s": 0.01},
    )
    with pytest.raises(ProviderError):
        asyncio.run(run(p, body()))
    assert calls(ps) == ["a"]  # the first backoff would outlast the budget


def test_a_cancel_during_the_backoff_propagates_at_once() -> None:
    p, router, ps, records = setup(
        {"a": [ServiceUnavailable("busy")]},
        {"id": "m", "provider": "a"},
        routing={"backoff_base_s": 60, "backoff_max_s": 60, "retry_budget_s": 600},
    )

    async def go() -> None:
        task = asyncio.ensure_future(run(p, body()))
        await asyncio.sleep(0.05)  # the first attempt failed; the 30-60 s backoff has begun
        assert len(ps["a"].calls) == 1  # type: ignore[attr-defined]
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 5

    asyncio.run(go())
    [r] = records
    assert (r.status, r.attempts) == (499, 1)
    assert router.state(router.catalogue.resolve("m").deployment).in_flight == 0


def test_least_busy_and_least_latency_through_the_router() -> None:
    cfg = config(
        {"id": "busy", "strategy": "least-busy", "deployments": [{"provider": "a"}, {"provider": "b"}]},
        {"id": "fast", "strategy": "least-latency", "deployments": [{"provider": "a"}, {"provider": "b"}]},
    )
    cat = Catalogue(cfg, providers(cfg))
    router = Router(cat, cfg.routing)
    busy, fast = cat.resolve("busy"), cat.resolve("fast")
    held = router.begin(busy.deployments[0])
    assert [d.key for _, d in router.plan(busy)] == ["b/busy", "a/busy"]
    router.succeeded(held, 0.1)
    assert [d.key for _, d in router.plan(busy)] == ["a/busy", "b/busy"]
    for d, seconds in ((fast.deployments[0], 0.9), (fast.deployments[1], 0.05)):
        st = router.begin(d)
        router.first_output(st, seconds)
        router.succeeded(st, seconds)
    assert [d.key for _, d in router.plan(fast)] == ["b/fast", "a/fast"]


def test_least_latency_tries_a_slow_deployment_again_once_its_average_is_stale() -> None:
    """A deployment slow once is not avoided for good: after routing.latency_stale_s its average
    is forgotten, so it comes first again (as if never measured), and its next sample starts a
    new average instead of being blended into the old one."""
    cfg = config({"id": "fast", "strategy": "least-latency", "deployments": [{"provider": "a"}, {"provider": "b"}]})
    now = [1000.0]
    router = Router(Catalogue(cfg, providers(cfg)), cfg.routing, clock=lambda: now[0])
    slow, quick = router.catalogue.resolve("fast").deployments

    def sample(d: Deployment, seconds: float) -> None:
        st = router.begin(d)
        router.first_output(st, seconds)
        router.succeeded(st, seconds)

    sample(slow, 2.0)
    sample(quick, 0.1)
    model = router.catalogue.resolve("fast")
    assert [d.key for _, d in router.plan(model)] == ["b/fast", "a/fast"]
    now[0] += cfg.routing.latency_stale_s - 1
    sample(quick, 0.1)  # the fast one keeps its average fresh; the slow one's goes stale
    now[0] += 2
    assert [d.key for _, d in router.plan(model)] == ["a/fast", "b/fast"]
    sample(slow, 0.05)  # it recovered: its new average is this sample, not a blend with 2 s
    assert router.state(slow).ttft_ms == 50.0
    assert [d.key for _, d in router.plan(model)] == ["a/fast", "b/fast"]


# ---------------------------------------------------------------------- cost


def bench(n: int = 100_000) -> float:
    """Microseconds of routing per request: plan + begin + succeeded, two weighted deployments."""
    cfg = config(
        {"id": "m", "strategy": "weighted", "deployments": [{"provider": "a", "weight": 3}, {"provider": "b"}]}
    )
    cat = Catalogue(cfg, providers(cfg))
    router = Router(cat, cfg.routing)
    m = cat.resolve("m")
    plan, begin, succeeded = router.plan, router.begin, router.succeeded
    started = time.perf_counter()
    for _ in range(n):
        _, d = plan(m, Capability.CHAT)[0]
        st = begin(d)
        succeeded(st, 0.01)
    return (time.perf_counter() - started) / n * 1e6


def test_routing_cost_is_measured() -> None:
    """No timing assertion (machines differ): it runs, and prints what it measured."""
    print(f"routing: {bench(20_000):.2f} us per request (two weighted deployments)")


if __name__ == "__main__":
    print(f"routing: {min(bench() for _ in range(5)):.2f} us per request (two weighted deployments)")
