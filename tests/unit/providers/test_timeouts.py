"""Per-deployment timeouts: the fields (deployment entries, the single-deployment form, the
provider's defaults) and their checks, how they resolve (a deployment's own over its
provider's, the server's stream bounds on top; nothing changes by default), that the catalogue
makes them once per deployment and the exchange hands each attempt its deployment's, and that
a client leaving during a backoff wait ends the request with no further attempt. No sockets:
the transport over real HTTP is tests/e2e/providers/test_transport_timeouts.py."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import pytest

from ghostllm.config import Config, DeploymentConfig, ProviderConfig, parse_config
from ghostllm.errors import ConfigError, ServiceUnavailable, UpstreamTimeout
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.gateway.stages import ResolveModel, decode_body
from ghostllm.gateway.usage import UsageRecord
from ghostllm.protocol.chat import check_chat_request
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Call, Json, Reply, StreamBatch
from ghostllm.providers.factory import make_provider
from ghostllm.providers.http import HTTPProvider
from ghostllm.providers.transport import Timeouts, resolve_timeouts
from ghostllm.routing.catalogue import Catalogue
from ghostllm.routing.router import Router
from tests.support.providers import InMemory

PROVIDERS: list[dict[str, Any]] = [
    {"id": "a", "type": "openai", "base_url": "http://127.0.0.1:1/v1"},
    {"id": "b", "type": "openai", "base_url": "http://127.0.0.1:2/v1", "timeout_s": 60, "ttft_timeout_s": 20},
]
P = ProviderConfig("p", base_url="http://127.0.0.1:1/v1", connect_timeout_s=3.0, timeout_s=60.0)


def config(*models: dict[str, Any], providers: list[dict[str, Any]] | None = None, **rest: Any) -> Config:
    return parse_config({"providers": providers or PROVIDERS, "models": list(models), **rest}, env={})


# ---------------------------------------------------------------------- config


def test_the_fields_parse_on_deployments_the_single_form_and_providers() -> None:
    cfg = config(
        {"id": "two", "deployments": [{"provider": "a", "ttft_timeout_s": 5, "idle_timeout_s": 2}, {"provider": "b"}]},
        {"id": "one", "provider": "a", "connect_timeout_s": 1, "timeout_s": 30},
    )
    two, one = cfg.models
    limits = [(d.ttft_timeout_s, d.idle_timeout_s, d.timeout_s) for d in two.targets]
    assert limits == [(5.0, 2.0, None), (None, None, None)]
    [single] = one.targets
    assert (single.connect_timeout_s, single.ttft_timeout_s, single.idle_timeout_s, single.timeout_s) == (
        1.0, None, None, 30.0,
    )  # fmt: skip
    a, b = cfg.providers
    assert (a.ttft_timeout_s, a.idle_timeout_s, b.ttft_timeout_s) == (0.0, 0.0, 20.0)
    env = {"GHOSTLLM_PROVIDER_A_IDLE_TIMEOUT_S": "7.5", "GHOSTLLM_PROVIDER_A_TTFT_TIMEOUT_S": "12"}
    a = parse_config({"providers": PROVIDERS}, env=env).providers[0]
    assert (a.ttft_timeout_s, a.idle_timeout_s) == (12.0, 7.5)


@pytest.mark.parametrize(
    ("model", "provider", "message"),
    [
        ({"id": "m", "deployments": [{"provider": "a", "idle_timeout_s": 0}]}, {},
         "models[0].deployments[0].idle_timeout_s: expected more than 0"),
        ({"id": "m", "provider": "a", "ttft_timeout_s": -1}, {}, "models[0].ttft_timeout_s"),
        ({"id": "m", "deployments": [{"provider": "a"}], "timeout_s": 5}, {},
         "models[0]: with deployments, give timeouts on each deployment"),
        ({"id": "m", "provider": "a"}, {"idle_timeout_s": -1}, "provider a: expected"),
        ({"id": "m", "provider": "a"}, {"timeout_s": 0}, "provider a: expected"),
    ],
)  # fmt: skip
def test_bad_timeouts_are_refused_naming_the_path(
    model: dict[str, Any], provider: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        config(model, providers=[{**PROVIDERS[0], **provider}])
    assert message in str(exc.value)


# ---------------------------------------------------------------------- resolution


def test_by_default_nothing_changes() -> None:
    """A deployment that sets nothing gets what a provider had before there were these fields:
    timeout_s for a whole answer and for silence within a stream, the server's stream bounds."""
    t = resolve_timeouts(P, DeploymentConfig("p"), stream_total_s=599.0, stream_silence_s=599.0)
    assert t.answer == aiohttp.ClientTimeout(total=60.0, connect=3.0)
    assert t.stream == aiohttp.ClientTimeout(total=599.0, connect=3.0, sock_read=60.0)
    assert (t.first_timer_s, t.tighten) == (None, False)  # no timer of ours
    assert resolve_timeouts(P, None, 599.0, 599.0) == t
    # Envoy's idle timeout (less a second) caps the silence of a stream, not a whole answer.
    capped = resolve_timeouts(P, None, 599.0, 9.0)
    assert (capped.stream.sock_read, capped.answer.total) == (9.0, 60.0)


def test_a_deployments_own_limits_win() -> None:
    own = DeploymentConfig("p", connect_timeout_s=1.0, ttft_timeout_s=10.0, idle_timeout_s=2.0, timeout_s=120.0)
    t = resolve_timeouts(P, own, 599.0, 599.0)
    assert (t.connect_s, t.answer_s, t.first_s, t.idle_s, t.stream_s) == (1.0, 10.0, 10.0, 2.0, 120.0)
    # Until the first bytes sock_read is the longer limit (and a timer the first-output one);
    # after them it drops to the idle limit.
    assert t.answer == aiohttp.ClientTimeout(total=10.0, connect=1.0)
    assert t.stream == aiohttp.ClientTimeout(total=120.0, connect=1.0, sock_read=10.0)
    assert (t.first_timer_s, t.tighten) == (10.0, True)
    quick_start = resolve_timeouts(P, DeploymentConfig("p", ttft_timeout_s=2.0, idle_timeout_s=30.0), 599.0, 599.0)
    assert quick_start.stream.sock_read == 30.0 and (quick_start.first_timer_s, quick_start.tighten) == (2.0, False)


def test_a_deployments_total_is_also_the_default_of_its_other_limits() -> None:
    t = resolve_timeouts(P, DeploymentConfig("p", timeout_s=300.0), 599.0, 599.0)
    # Longer than its provider's 60 s: its whole answer may take that long, and its stream too.
    assert (t.answer_s, t.first_s, t.idle_s, t.stream_s) == (300.0, 300.0, 300.0, 300.0)
    # ... but never past the server's stream limit.
    assert resolve_timeouts(P, DeploymentConfig("p", timeout_s=900.0), 599.0, 599.0).stream_s == 599.0
    # A provider's own first-output limit stands over a deployment's total.
    b = ProviderConfig("b", base_url="http://x", timeout_s=60.0, ttft_timeout_s=20.0, idle_timeout_s=5.0)
    t = resolve_timeouts(b, DeploymentConfig("b", timeout_s=300.0), None, None)
    assert (t.answer_s, t.first_s, t.idle_s, t.stream_s) == (20.0, 20.0, 5.0, 300.0)
    assert resolve_timeouts(b, None, None, None).stream_s is None  # no server limit: unbounded


# ---------------------------------------------------------------------- catalogue and exchange


def test_the_catalogue_makes_each_deployments_timeouts_once() -> None:
    cfg = config(
        {"id": "two", "deployments": [{"provider": "a", "ttft_timeout_s": 5}, {"provider": "b"}]},
        {"id": "one", "provider": "a", "idle_timeout_s": 4},
    )
    providers = {p.id: make_provider(p) for p in cfg.providers}
    cat = Catalogue(cfg, providers)
    first, second = cat.resolve("two").deployments
    [single] = cat.resolve("one").deployments
    assert isinstance(first.timeouts, Timeouts) and first.timeouts.first_s == 5.0
    assert second.timeouts is not None and second.timeouts.answer_s == 20.0  # provider b's ttft_timeout_s
    assert single.timeouts is not None and single.timeouts.idle_s == 4.0
    provider = providers["a"]
    assert isinstance(provider, HTTPProvider)
    assert provider.transport.timeouts.answer_s == 600.0  # the provider's own, for health and model lists


USAGE = Usage(3, 5, 8)


class Recording(InMemory):
    """Records the Call of each attempt and answers from a script (an error to raise, else an
    answer); its timeouts are made as the HTTP provider makes them."""

    def __init__(self, config: ProviderConfig, script: list[BaseException]) -> None:
        super().__init__(config)
        self.script = script
        self.seen: list[Timeouts | None] = []
        self.called = asyncio.Event()

    def timeouts_for(self, deployment: DeploymentConfig) -> Timeouts:
        return resolve_timeouts(self.config, deployment)

    def _next(self, call: Call) -> None:
        self.seen.append(call.timeouts)
        self.called.set()
        if self.script:
            raise self.script.pop(0)

    async def complete(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> Reply:
        self._next(call)
        return Reply({"model": model, "choices": [{"index": 0, "message": {"content": "ok"}}]}, USAGE)

    async def stream(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> AsyncGenerator[StreamBatch]:
        self._next(call)
        yield StreamBatch([{"choices": [{"index": 0, "delta": {"content": "ok"}}]}], USAGE, True)


FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.002}


def setup(
    scripts: dict[str, list[BaseException]], *models: dict[str, Any], routing: dict[str, Any] | None = None
) -> tuple[Pipeline, Router, dict[str, Recording], list[UsageRecord]]:
    cfg = config(*models, routing={**FAST, **(routing or {})})
    ps = {p.id: Recording(p, scripts.get(p.id, [])) for p in cfg.providers}
    cat = Catalogue(cfg, ps)
    router = Router(cat, cfg.routing, rng=random.Random(1))
    records: list[UsageRecord] = []
    return Pipeline([decode_body, ResolveModel(cat, router)], [records.append]), router, ps, records


async def run(p: Pipeline, b: Json) -> Any:
    rc = RequestContext(request_id="r", started=time.monotonic())
    async with p.exchange(rc, Endpoint.CHAT, lambda: check_chat_request(b)) as ex:
        await ex.admit()
        if not ex.stream:
            return await ex.complete()
        return [item async for item in ex.relay()]


def body(model: str, **extra: Any) -> Json:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}


@pytest.mark.parametrize("stream", [False, True])
def test_each_attempt_runs_under_its_deployments_timeouts(stream: bool) -> None:
    two = {"id": "m", "deployments": [{"provider": "a", "ttft_timeout_s": 1}, {"provider": "b", "idle_timeout_s": 9}]}
    p, router, ps, records = setup({"a": [UpstreamTimeout("slow"), UpstreamTimeout("slow")]}, two)
    asyncio.run(run(p, body("m", stream=stream)))
    first, second = router.catalogue.resolve("m").deployments
    # a: tried and retried under its own limits, then b under its own.
    assert ps["a"].seen == [first.timeouts, first.timeouts] and ps["b"].seen == [second.timeouts]
    assert first.timeouts is not None and first.timeouts.first_s == 1.0
    assert second.timeouts is not None and second.timeouts.idle_s == 9.0
    assert records[0].deployments_tried == ("a/m", "a/m", "b/m")


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_leaving_during_the_backoff_stops_there(stream: bool) -> None:
    """The backoff (60 s here) is cancelled with the request: no second attempt, on this
    deployment or the next, and the attempt's state is released."""
    two = {"id": "m", "deployments": [{"provider": "a"}, {"provider": "b"}]}
    p, router, ps, records = setup(
        {"a": [ServiceUnavailable("busy")]},
        two,
        routing={"backoff_base_s": 60, "backoff_max_s": 60, "retry_budget_s": 600},
    )
    st = router.state(router.catalogue.resolve("m").deployments[0])

    async def go() -> None:
        task = asyncio.ensure_future(run(p, body("m", stream=stream)))
        # The attempt fails and the backoff begins in the same step: the task waits in it now.
        await ps["a"].called.wait()
        assert st.failures == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert (len(ps["a"].seen), len(ps["b"].seen)) == (1, 0)
    [r] = records
    assert (r.status, r.error_code, r.attempts) == (499, "client_closed", 1)
    assert st.in_flight == 0
