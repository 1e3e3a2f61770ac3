"""ghostllm.routing.auto and `model: "auto"` through the admit stages: the ranking for each
preference (cheapest, fastest, order), models skipped while they cannot serve (open circuits,
failed health checks) and tried anyway when none can, the key's models, what the request needs
(capability, streaming, functions, vision), the other candidates as the request's fallbacks,
the answer and the usage record naming the model that served, and routing.auto's config.
In-memory providers, no network.

Run as a script for the micro-benchmark: `python -m tests.unit.routing.test_auto`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from ghostllm.accounts.permissions import Permissions
from ghostllm.auth.principal import Principal, Via
from ghostllm.config import Capability, Config, parse_config
from ghostllm.errors import ConfigError, InvalidRequest, ModelNotFound, PermissionDenied, ServiceUnavailable
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.exchange import DEPLOYMENT_HEADER, Exchange, Stage
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.gateway.stages import ResolveModel, authorize, decode_body
from ghostllm.gateway.usage import UsageRecord
from ghostllm.protocol.chat import check_chat_request
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Call, Json, Provider, Reply, StreamBatch
from ghostllm.routing.auto import Auto
from ghostllm.routing.catalogue import Catalogue
from ghostllm.routing.health import ProviderHealth
from ghostllm.routing.router import Router

CHAT = frozenset({Capability.CHAT})
CAPS = ["chat", "streaming", "completions"]
PROVIDERS = [{"id": pid, "type": "openai", "base_url": f"http://127.0.0.1:{i + 1}/v1"} for i, pid in enumerate("abcde")]
# Catalogue order: pricey, cheap-b, mid, cheap-c, embed (cheapest of all, but embeddings only).
MODELS: list[dict[str, Any]] = [
    {"id": "pricey", "provider": "a", "capabilities": CAPS, "input_price_per_1m": 10.0, "output_price_per_1m": 20.0},
    {"id": "cheap-b", "provider": "b", "capabilities": CAPS, "input_price_per_1m": 1.0},
    {
        "id": "mid",
        # The model's cheapest deployment is what counts (2 + 2 here, not 9 + 9).
        "deployments": [
            {"provider": "c", "input_price_per_1m": 9.0, "output_price_per_1m": 9.0},
            {"provider": "d", "input_price_per_1m": 2.0, "output_price_per_1m": 2.0},
        ],
        "capabilities": [*CAPS, "functions", "vision"],
    },
    {"id": "cheap-c", "provider": "c", "capabilities": CAPS, "output_price_per_1m": 1.0},
    {"id": "embed", "provider": "e", "capabilities": ["embeddings"]},
]


def config(auto: dict[str, Any] | None = None, models: list[dict[str, Any]] | None = None) -> Config:
    raw = {"providers": PROVIDERS, "models": MODELS if models is None else models, "routing": {"auto": auto or {}}}
    return parse_config(raw, env={})


class Fake(Provider):
    """Answers with its id; `fail` errors are raised first, one per call; `healthy` is its health check."""

    def __init__(self, cfg: Config, pid: str) -> None:
        super().__init__(cfg.provider(pid))
        self.healthy = True
        self.fail: list[BaseException] = []
        self.calls: list[str] = []

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def health(self) -> bool:
        return self.healthy

    async def list_models(self) -> list[str]:
        return []

    def _next(self, model: str) -> None:
        self.calls.append(model)
        if self.fail:
            raise self.fail.pop(0)

    async def complete(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> Reply:
        self._next(model)
        return Reply({"model": model, "choices": [{"index": 0, "message": {"content": self.id}}]}, Usage(1, 2, 3))

    async def stream(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> AsyncGenerator[StreamBatch]:
        self._next(model)
        yield StreamBatch([{"choices": [{"index": 0, "delta": {"content": self.id}}]}], Usage(1, 2, 3), True)


class Setup:
    def __init__(self, auto: dict[str, Any] | None = None, models: list[dict[str, Any]] | None = None) -> None:
        self.config = config(auto, models)
        self.providers: dict[str, Fake] = {p.id: Fake(self.config, p.id) for p in self.config.providers}
        self.catalogue = Catalogue(self.config, self.providers)
        self.now = 1000.0
        self.router = Router(self.catalogue, self.config.routing, clock=lambda: self.now)
        self.health = ProviderHealth(self.providers)
        self.auto = Auto(self.catalogue, self.router, self.health, self.config.routing.auto)

    def ids(self, needs: frozenset[Capability] = CHAT, allowed: Any = None) -> list[str]:
        return [m.id for m in self.auto.candidates(needs, allowed)]

    def open_circuit(self, model: str) -> None:
        for d in self.catalogue.resolve(model).deployments:
            for _ in range(self.config.routing.circuit_failures):
                self.router.failed(self.router.begin(d))

    def check_health(self) -> None:
        """Every provider's health, checked now (without its loop, a ProviderHealth checks once)."""
        self.health = self.auto.health = ProviderHealth(self.providers)
        asyncio.run(self.health.get())


# ---------------------------------------------------------------------- the ranking


def test_cheapest_by_the_cheapest_deployment_ties_in_catalogue_order() -> None:
    s = Setup()
    # cheap-b and cheap-c cost 1 each (catalogue order), mid 4 (its cheaper deployment), pricey 30.
    assert s.ids() == ["cheap-b", "cheap-c", "mid", "pricey"]


def test_fastest_by_the_measured_time_to_first_token_unmeasured_first() -> None:
    s = Setup({"prefer": "fastest"})

    def measure(model: str, ttft_ms: float, which: int = 0) -> None:
        st = s.router.state(s.catalogue.resolve(model).deployments[which])
        st.ttft_ms, st.ttft_at = ttft_ms, s.router.clock()

    measure("pricey", 50.0)
    measure("cheap-b", 300.0)
    measure("cheap-c", 100.0)
    measure("mid", 900.0)
    # mid's second deployment is unmeasured: mid comes first, so that it gets measured.
    assert s.ids() == ["mid", "pricey", "cheap-c", "cheap-b"]
    measure("mid", 20.0, which=1)
    assert s.ids() == ["mid", "pricey", "cheap-c", "cheap-b"]  # its best deployment counts
    measure("mid", 400.0, which=1)
    assert s.ids() == ["pricey", "cheap-c", "cheap-b", "mid"]
    # An open deployment's average does not count for its model.
    s.open_circuit("pricey")
    assert s.ids() == ["cheap-c", "cheap-b", "mid"]


def test_order_is_the_listed_order_and_restricts_the_other_preferences() -> None:
    s = Setup({"prefer": "order", "order": ["pricey", "embed", "cheap-c", "not-yet-discovered"]})
    assert s.ids() == ["pricey", "cheap-c"]  # embed offers no chat; the unknown id is skipped
    assert s.ids(frozenset({Capability.EMBEDDINGS})) == ["embed"]
    # With another preference, `order` restricts the candidates and orders the ties.
    s = Setup({"prefer": "cheapest", "order": ["cheap-c", "pricey", "cheap-b"]})
    assert s.ids() == ["cheap-c", "cheap-b", "pricey"]


def test_what_the_request_needs() -> None:
    s = Setup()
    assert s.ids(frozenset({Capability.EMBEDDINGS})) == ["embed"]
    assert s.ids(frozenset({Capability.CHAT, Capability.FUNCTIONS, Capability.VISION})) == ["mid"]
    with pytest.raises(InvalidRequest, match="'auto' has no model that supports chat, structured_output") as exc:
        s.auto.candidates(frozenset({Capability.CHAT, Capability.STRUCTURED_OUTPUT}))
    assert exc.value.param == "model"


def test_open_circuits_and_failed_health_checks_are_skipped_until_none_is_left() -> None:
    s = Setup()
    s.open_circuit("cheap-b")
    assert s.ids() == ["cheap-c", "mid", "pricey"]
    # mid's deployments are on c and d: with c's provider down, d still serves it.
    s.providers["c"].healthy = False
    s.check_health()
    assert s.ids() == ["mid", "pricey"]
    s.providers["d"].healthy = False
    s.check_health()
    assert s.ids() == ["pricey"]
    # Nothing can serve: every candidate is still tried, in rank order.
    s.open_circuit("pricey")
    assert s.ids() == ["cheap-b", "cheap-c", "mid", "pricey"]
    # A cooldown that is over (half-open) lets the model be chosen again.
    s.now += s.config.routing.circuit_cooldown_s
    assert s.ids() == ["cheap-b", "pricey"]


def test_a_provider_not_checked_yet_counts_as_up() -> None:
    s = Setup()
    s.providers["b"].healthy = False  # not checked yet: nothing known against it
    assert s.ids()[0] == "cheap-b"
    s.check_health()
    assert s.ids()[0] == "cheap-c"


def test_the_keys_models() -> None:
    s = Setup()
    assert s.ids(allowed={"pricey", "embed"}.__contains__) == ["pricey"]
    with pytest.raises(PermissionDenied, match="any of the models 'auto' chooses from") as exc:
        s.auto.candidates(CHAT, {"embed"}.__contains__)
    assert exc.value.param == "model"
    assert s.auto.capabilities({"embed"}.__contains__) == {Capability.EMBEDDINGS}
    assert s.auto.capabilities({"nothing"}.__contains__) == frozenset()
    with pytest.raises(ModelNotFound):
        Setup(models=[]).auto.candidates()


def test_the_other_candidates_are_the_requests_fallbacks() -> None:
    s = Setup({"fallbacks": 2})
    chosen = s.auto.choose(CHAT)
    assert (chosen.id, chosen.config.fallbacks) == ("cheap-b", ("cheap-c", "mid"))
    assert chosen.deployments is s.catalogue.resolve("cheap-b").deployments
    assert s.auto.choose(CHAT) is chosen  # the same candidates: the same object, not rebuilt
    plan = [(m.id, d.key) for m, d in s.router.plan(chosen, Capability.CHAT)]
    assert plan == [("cheap-b", "b/cheap-b"), ("cheap-c", "c/cheap-c"), ("mid", "c/mid"), ("mid", "d/mid")]
    assert Setup({"fallbacks": 0}).auto.choose(CHAT).config.fallbacks == ()


def test_a_catalogue_reload_is_seen() -> None:
    s = Setup()
    assert s.ids()[0] == "cheap-b"
    free = {"id": "free", "provider": "a", "capabilities": CAPS}
    s.catalogue.replace(Catalogue(config(models=[*MODELS, free]), s.providers))
    assert s.ids()[0] == "free"
    assert s.auto.choose(CHAT).id == "free"


# ---------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("auto", "models", "message"),
    [
        ({"prefer": "random"}, None, "routing.auto.prefer: unknown 'random'; known: cheapest, fastest, order"),
        ({"prefer": "order"}, None, "routing.auto.order: required when routing.auto.prefer is order"),
        ({"order": ["mid", "mid"]}, None, "routing.auto.order[1]: 'mid' listed twice"),
        ({"order": ["auto"]}, None, "routing.auto.order[0]: 'auto' is not a model"),
        ({"fallbacks": 11}, None, "routing.auto.fallbacks: expected 0 to 10"),
        ({"prefr": "fastest"}, None, "routing.auto.prefr"),
        ({}, [{"id": "auto", "provider": "a"}], "models[0]: the id 'auto' is routing.auto's"),
    ],
)
def test_config_validation(auto: dict[str, Any], models: list[dict[str, Any]] | None, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config(auto, models)
    assert message in str(exc.value)


def test_config_defaults_and_the_environment() -> None:
    auto = config().routing.auto
    assert (auto.enabled, auto.prefer, auto.order, auto.fallbacks) == (True, "cheapest", (), 3)
    env = {"GHOSTLLM_ROUTING_AUTO_PREFER": "order", "GHOSTLLM_ROUTING_AUTO_ORDER": "mid, pricey"}
    auto = parse_config({"providers": PROVIDERS, "models": MODELS}, env=env).routing.auto
    assert (auto.prefer, auto.order) == ("order", ("mid", "pricey"))
    # Off, "auto" is an ordinary model name.
    off = config({"enabled": False}, [{"id": "auto", "provider": "a"}])
    assert [m.id for m in off.models] == ["auto"]


# ---------------------------------------------------------------------- through the admit stages


def principal(models: tuple[str, ...] | None = None) -> Principal:
    return Principal(Via.KEY, "u", None, "k", None, Permissions(models=models))


def pipeline(
    s: Setup, *, auto: bool = True, models: tuple[str, ...] | None = None
) -> tuple[Pipeline, list[UsageRecord]]:
    """The worker's admit stages, with a key that may use `models` (None: any)."""
    records: list[UsageRecord] = []
    who = principal(models)

    async def authenticate(ex: Exchange) -> None:
        ex.principal = who

    stages: list[Stage] = [
        authenticate,
        decode_body,
        authorize,
        ResolveModel(s.catalogue, s.router, s.auto if auto else None),
    ]
    return Pipeline(stages, [records.append]), records


async def run(p: Pipeline, body: Json) -> tuple[Any, RequestContext]:
    rc = RequestContext(request_id="r", started=time.monotonic())
    async with p.exchange(rc, Endpoint.CHAT, lambda: check_chat_request(body)) as ex:
        await ex.admit()
        if not ex.stream:
            return await ex.complete(), rc
        return [item async for item in ex.relay()], rc


def chat(**extra: Any) -> Json:
    return {"model": "auto", "messages": [{"role": "user", "content": "hello"}], **extra}


def answered_model(out: Any, stream: bool) -> str:
    return str(out[0][0][0]["model"] if stream else out["model"])


@pytest.mark.parametrize("stream", [False, True])
def test_auto_answers_with_the_chosen_model_and_records_it(stream: bool) -> None:
    s = Setup()
    p, records = pipeline(s)
    out, rc = asyncio.run(run(p, chat(stream=stream)))
    assert answered_model(out, stream) == "cheap-b"
    assert (DEPLOYMENT_HEADER, "b/cheap-b") in rc.response_headers
    [r] = records
    assert (r.model, r.deployment, r.attempts) == ("cheap-b", "b/cheap-b", 1)


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_first_choice_falls_back_to_the_next_candidate(stream: bool) -> None:
    s = Setup({"fallbacks": 1})
    s.providers["b"].fail = [ServiceUnavailable("busy")] * 2  # the first attempt and its retry
    p, records = pipeline(s)
    out, rc = asyncio.run(run(p, chat(stream=stream)))
    assert answered_model(out, stream) == "cheap-c"
    assert (DEPLOYMENT_HEADER, "c/cheap-c") in rc.response_headers
    [r] = records
    # The record names the model that served (the request named none), priced as it.
    assert (r.model, r.deployment, r.deployments_tried) == ("cheap-c", "c/cheap-c", ("b/cheap-b",) * 2 + ("c/cheap-c",))
    # All candidates it may try failing: the last error is the client's, the record names the first choice.
    s.providers["b"].fail = [ServiceUnavailable("busy")] * 2
    s.providers["c"].fail = [ServiceUnavailable("busy")] * 2
    with pytest.raises(ServiceUnavailable):
        asyncio.run(run(p, chat(stream=stream)))
    assert records[-1].model == "cheap-b" and records[-1].status == 503


def test_the_keys_models_restrict_the_choice_not_the_name() -> None:
    s = Setup()
    p, records = pipeline(s, models=("pricey", "embed"))
    out, _ = asyncio.run(run(p, chat()))
    assert out["model"] == "pricey" and records[-1].model == "pricey"
    p, records = pipeline(s, models=("embed",))
    with pytest.raises(PermissionDenied):
        asyncio.run(run(p, chat()))
    assert records[-1].model == "auto" and records[-1].status == 403


def test_the_request_needs_streaming_functions_vision() -> None:
    models: list[dict[str, Any]] = [
        {"id": "plain", "provider": "a", "capabilities": ["chat"]},
        {"id": "streams", "provider": "b", "capabilities": ["chat", "streaming"], "input_price_per_1m": 1.0},
        {"id": "tools", "provider": "c", "capabilities": ["chat", "functions"], "input_price_per_1m": 2.0},
        {"id": "eyes", "provider": "d", "capabilities": ["chat", "vision"], "input_price_per_1m": 3.0},
    ]
    p, _ = pipeline(Setup(models=models))
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    image = [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]
    assert asyncio.run(run(p, chat()))[0]["model"] == "plain"
    assert answered_model(asyncio.run(run(p, chat(stream=True)))[0], True) == "streams"
    assert asyncio.run(run(p, chat(tools=[tool])))[0]["model"] == "tools"
    assert asyncio.run(run(p, chat(messages=[{"role": "user", "content": image}])))[0]["model"] == "eyes"
    with pytest.raises(InvalidRequest, match="functions, streaming"):
        asyncio.run(run(p, chat(stream=True, tools=[tool])))


def test_off_auto_is_an_ordinary_name() -> None:
    s = Setup({"enabled": False})
    p, records = pipeline(s, auto=False)
    with pytest.raises(ModelNotFound):
        asyncio.run(run(p, chat()))
    assert records[-1].model == "auto"
    p, _ = pipeline(s, auto=False, models=("pricey",))
    with pytest.raises(PermissionDenied):  # the key's models apply to the name, as to any
        asyncio.run(run(p, chat()))


def test_explicit_models_are_unchanged() -> None:
    s = Setup()
    p, records = pipeline(s)
    out, _ = asyncio.run(run(p, {**chat(), "model": "pricey"}))
    assert out["model"] == "pricey" and records[-1].model == "pricey"


def _bench() -> None:
    allowed = Permissions(models=("pricey", "mid", "cheap-c")).allows_model
    for prefer in ("cheapest", "fastest", "order"):
        s = Setup({"prefer": prefer, "order": ["mid", "pricey", "cheap-c", "cheap-b"]})
        for who in (None, allowed):
            n = 100_000
            started = time.perf_counter()
            for _ in range(n):
                s.auto.choose(CHAT, who)
            us = (time.perf_counter() - started) / n * 1e6
            print(f"{prefer:9} {'restricted' if who else 'any model':10} {us:.2f} us per choice")


if __name__ == "__main__":
    _bench()
