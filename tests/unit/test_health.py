"""ghostllm.routing.health: the per-model rule /health answers by, and the background checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from types import SimpleNamespace
from typing import cast

import pytest

from ghostllm.config import ProviderConfig, parse_config
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.providers.base import Call, Json, Provider, Reply, StreamBatch
from ghostllm.routing.catalogue import Catalogue, Deployment, Model
from ghostllm.routing.health import ProviderHealth, model_providers, verdict


class Fake(Provider):
    """A provider whose health() answers what the test says, after `delay_s`; or raises."""

    def __init__(self, pid: str, healthy: bool = True, delay_s: float = 0.0) -> None:
        super().__init__(ProviderConfig(pid, base_url="http://127.0.0.1:9/v1"))
        self.healthy, self.delay_s = healthy, delay_s
        self.raises: Exception | None = None
        self.checks = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def health(self) -> bool:
        self.checks += 1
        await asyncio.sleep(self.delay_s)
        if self.raises is not None:
            raise self.raises
        return self.healthy

    async def list_models(self) -> list[str]:
        return []

    async def complete(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> Reply:
        raise AssertionError("health checks never complete")

    async def stream(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> AsyncGenerator[StreamBatch]:
        raise AssertionError("health checks never stream")
        yield  # pragma: no cover


def catalogue(providers: dict[str, Provider], models: dict[str, str]) -> Catalogue:
    """`models`: public id -> provider id."""
    config = parse_config(
        {
            "providers": [{"id": pid, "base_url": "http://127.0.0.1:9/v1"} for pid in providers],
            "models": [{"id": m, "provider": pid} for m, pid in models.items()],
        },
        env={},
    )
    return Catalogue(config, providers)


PROVIDERS: dict[str, Provider] = {"a": Fake("a"), "b": Fake("b")}
MODELS = catalogue(PROVIDERS, {"m-a": "a", "m-a2": "a", "m-b": "b"}).models


# The rule, per model


def test_every_model_served_is_healthy() -> None:
    v = verdict(MODELS, {"a": True, "b": True})
    assert (v.status, v.available, v.unavailable) == ("healthy", ("m-a", "m-a2", "m-b"), ())


def test_some_models_without_a_healthy_provider_is_degraded() -> None:
    v = verdict(MODELS, {"a": True, "b": False})
    assert (v.status, v.available, v.unavailable) == ("degraded", ("m-a", "m-a2"), ("m-b",))


def test_no_model_served_is_unhealthy() -> None:
    assert verdict(MODELS, {"a": False, "b": False}).status == "unhealthy"


def test_a_provider_serving_no_model_does_not_count() -> None:
    providers: dict[str, Provider] = {"a": Fake("a"), "idle": Fake("idle")}
    models = catalogue(providers, {"m-a": "a"}).models
    assert verdict(models, {"a": True, "idle": False}).status == "healthy"


def test_a_provider_not_checked_yet_or_missing_is_not_healthy() -> None:
    assert verdict(MODELS, {"a": True}).status == "degraded"
    assert verdict(MODELS, {}).status == "unhealthy"


def test_an_empty_catalogue_is_degraded_not_unhealthy() -> None:
    # Nothing to serve, but a 503 would take the replica (and its admin API) out of the balancer.
    assert verdict([], {"a": True}).status == "degraded"


def multi(model_id: str, *providers: Provider) -> Model:
    """A model of the routing issue's shape (`deployments`), duck-typed."""
    deployments = tuple(Deployment(p, model_id) for p in providers)
    return cast(Model, SimpleNamespace(id=model_id, deployment=deployments[0], deployments=deployments))


def test_a_model_with_several_deployments_is_up_while_any_provider_is() -> None:
    a, b = PROVIDERS["a"], PROVIDERS["b"]
    models = [multi("both", a, b), multi("only-b", b)]
    assert [p.id for p in model_providers(models[0])] == ["a", "b"]
    v = verdict(models, {"a": True, "b": False})
    assert (v.status, v.available, v.unavailable) == ("degraded", ("both",), ("only-b",))
    assert verdict(models, {"a": False, "b": True}).status == "healthy"


# The checks


def run(test: object) -> None:
    asyncio.run(asyncio.wait_for(test, 10))  # type: ignore[arg-type]


def test_the_loop_checks_every_provider_and_readers_never_wait() -> None:
    async def go() -> None:
        providers: dict[str, Provider] = {"a": Fake("a"), "b": Fake("b", healthy=False)}
        health = ProviderHealth(providers, interval_s=60, timeout_s=1)
        assert health.checks() == {"a": None, "b": None}  # not checked yet: unknown
        assert health.healthy() == {"a": False, "b": False}
        health.start()
        assert await health.settled(5)
        checks = health.checks()
        assert checks["a"] is not None and checks["a"].healthy and checks["a"].error == ""
        assert checks["b"] is not None and not checks["b"].healthy and checks["b"].error
        assert await health.get() == {"a": True, "b": False}
        await health.stop()

    run(go())


def test_a_check_is_cut_off_at_its_timeout_and_a_raising_one_is_unhealthy() -> None:
    async def go() -> None:
        broken = Fake("broken")
        broken.raises = RuntimeError("boom")
        providers: dict[str, Provider] = {"slow": Fake("slow", delay_s=30), "broken": broken}
        health = ProviderHealth(providers, interval_s=60, timeout_s=0.2)
        health.start()
        assert await health.settled(5)
        slow, bad = health.checks()["slow"], health.checks()["broken"]
        assert slow is not None and not slow.healthy and "0.2 s" in slow.error and slow.latency_s < 5
        assert bad is not None and not bad.healthy and "boom" in bad.error
        await health.stop()

    run(go())


def test_the_next_round_sees_a_provider_recover() -> None:
    async def go() -> None:
        flaky = Fake("flaky", healthy=False)
        health = ProviderHealth({"flaky": flaky}, interval_s=0.05, timeout_s=0.05)
        health.start()
        assert await health.settled(5) and health.healthy() == {"flaky": False}
        flaky.healthy = True
        while not health.healthy()["flaky"]:  # noqa: ASYNC110 (polling what readers see is the point)
            await asyncio.sleep(0.01)
        await health.stop()

    run(go())


def test_a_reload_checks_the_new_provider_at_once_and_keeps_the_others() -> None:
    async def go() -> None:
        a = Fake("a")
        providers: dict[str, Provider] = {"a": a}
        health = ProviderHealth(providers, interval_s=3600, timeout_s=1)
        health.start()
        assert await health.settled(5)
        # As routing/live.py does it: the dict changed in place, then invalidate().
        rebuilt, added = Fake("a", healthy=False), Fake("c")
        providers.clear()
        providers.update({"a": rebuilt, "c": added})
        # A result counts only for the object it was taken of: both read as not checked yet.
        assert health.checks() == {"a": None, "c": None}
        health.invalidate()
        assert await health.settled(5)  # long before the hour's round
        assert health.healthy() == {"a": False, "c": True}
        assert a.checks == 1 and rebuilt.checks == 1 and added.checks == 1
        await health.stop()

    run(go())


def test_a_result_for_a_provider_replaced_during_its_check_is_dropped() -> None:
    async def go() -> None:
        old = Fake("a", delay_s=0.2)
        providers: dict[str, Provider] = {"a": old}
        health = ProviderHealth(providers, interval_s=3600, timeout_s=2)
        health.start()
        await asyncio.sleep(0.05)  # the check of `old` is under way
        new = Fake("a", healthy=False)
        providers["a"] = new
        health.invalidate()
        assert await health.settled(5)
        check = health.checks()["a"]
        assert check is not None and not check.healthy  # new's, never old's
        await health.stop()

    run(go())


def test_without_the_loop_get_checks_once_what_has_no_result() -> None:
    async def go() -> None:
        a = Fake("a")
        health = ProviderHealth({"a": a})
        assert await health.get() == {"a": True}
        assert await health.get() == {"a": True}
        assert a.checks == 1
        assert not await health.settled(0.1)  # nothing to wait for: no loop

    run(go())


def test_stop_ends_the_loop_even_mid_check() -> None:
    async def go() -> None:
        health = ProviderHealth({"slow": Fake("slow", delay_s=30)}, interval_s=60, timeout_s=30)
        health.start()
        await asyncio.sleep(0.05)
        await health.stop()
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "provider-health"]

    run(go())


@pytest.mark.parametrize(("interval", "timeout"), [(15, 0), (15, 16), (0, 0)])
def test_the_settings_are_checked(interval: float, timeout: float) -> None:
    from ghostllm.errors import ConfigError

    raw = {"routing": {"health_check_interval_s": interval, "health_check_timeout_s": timeout}}
    with pytest.raises(ConfigError, match="health_check"):
        parse_config(raw, env={})
    assert parse_config({}, env={}).routing.health_check_interval_s == 15
