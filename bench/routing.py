"""What routing costs a request, in this process (uvloop not needed: nothing awaits): the
router's plan for a model with two weighted deployments and the attempt's bookkeeping
(begin, first output, success), as every request does it; and `model: "auto"` choosing
among the catalogue's models. End to end the difference is below what a fixed-rate run on
two shared cores can resolve, so this is the number reported."""

from __future__ import annotations

import time

from ghostllm.config import AutoConfig, Capability, parse_config
from ghostllm.providers.factory import make_provider
from ghostllm.routing.auto import Auto
from ghostllm.routing.catalogue import Catalogue
from ghostllm.routing.router import Router

CALLS = 100_000


def _catalogue() -> Catalogue:
    config = parse_config(
        {
            "providers": [
                {"id": "a", "type": "openai", "base_url": "http://127.0.0.1:9/v1"},
                {"id": "b", "type": "openai", "base_url": "http://127.0.0.1:9/v1"},
            ],
            "models": [
                {
                    "id": "gpt-4o",
                    "strategy": "weighted",
                    "deployments": [
                        {"provider": "a", "upstream_model": "gpt-4o", "weight": 3},
                        {"provider": "b", "upstream_model": "gpt-4o-prod", "weight": 1},
                    ],
                    "input_price_per_1m": 2.5,
                    "output_price_per_1m": 10.0,
                },
                *(
                    {"id": f"m{i}", "provider": "a", "input_price_per_1m": 1.0 + i, "output_price_per_1m": 2.0 + i}
                    for i in range(10)
                ),
            ],
        }
    )
    providers = {p.id: make_provider(p) for p in config.providers}
    return Catalogue(config, providers)


def routing_cost(calls: int = CALLS) -> dict[str, float]:
    catalogue = _catalogue()
    router = Router(catalogue)
    model = catalogue.resolve("gpt-4o", Capability.CHAT)
    t0 = time.process_time()
    for _ in range(calls):
        plan = router.plan(model, Capability.CHAT)
        _, d = plan[0]
        st = router.begin(d)
        router.first_output(st, 0.05)
        router.succeeded(st, 0.2)
    routing_us = (time.process_time() - t0) / calls * 1e6
    auto = Auto(catalogue, router, None, AutoConfig())
    needs = frozenset({Capability.CHAT})
    t0 = time.process_time()
    for _ in range(calls):
        auto.choose(needs)
    auto_us = (time.process_time() - t0) / calls * 1e6
    return {"routing_us": routing_us, "auto_us": auto_us}
