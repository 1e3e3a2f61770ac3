"""The model catalogue: public model ids (what clients send) and the deployment serving each.

A deployment is a provider plus the name its upstream knows the model by, with its own
weight and prices; a model has one or more (routing/router.py picks among them). Models
come from the config merged with the store's (routing/merge.py), plus what providers with
`discover_models` list; discovery runs in the supervisor (at start, then every
`catalogue.discovery_interval_s`) and every worker loads the same result, so all of them
answer /v1/models the same (also in the same order, with the same `created`).

A worker keeps one Catalogue object for its whole life (the pipeline's ResolveModel and
the model and health services hold it); a reload builds a new one and `replace`s the old
one's tables with it, so every holder sees the new catalogue at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ghostllm.config import Capability, Config, DeploymentConfig, ModelConfig
from ghostllm.errors import GhostError, InvalidRequest, ModelNotFound
from ghostllm.providers.base import Provider

if TYPE_CHECKING:
    from ghostllm.providers.transport import Timeouts

log = logging.getLogger(__name__)

# What a discovered model is assumed to offer: an OpenAI-compatible server serves all of it.
DISCOVERED_CAPABILITIES = ("chat", "streaming", "functions", "completions", "embeddings")


@dataclass(frozen=True, slots=True, eq=False)
class Deployment:
    provider: Provider
    upstream_model: str
    # "<provider id>/<upstream model>": what routing stats, the x-ghostllm-deployment header and
    # usage records name it by (stable across catalogue reloads).
    key: str = ""
    weight: float = 1.0
    # The model's entry with this deployment's own prices over the model's (what cost uses).
    prices: ModelConfig | None = None
    # Input plus output price per 1M tokens: what lowest-cost orders by.
    cost_rank: float = 0.0
    # Its connect, first-output, idle and total limits over its provider's, made once here and
    # handed to every call (None: the provider's own).
    timeouts: Timeouts | None = None


def deployment(provider: Provider, model: ModelConfig, d: DeploymentConfig) -> Deployment:
    prices = model
    if d.input_price_per_1m is not None or d.output_price_per_1m is not None:
        prices = replace(
            model,
            input_price_per_1m=model.input_price_per_1m if d.input_price_per_1m is None else d.input_price_per_1m,
            output_price_per_1m=model.output_price_per_1m if d.output_price_per_1m is None else d.output_price_per_1m,
        )
    key = f"{provider.id}/{d.upstream_model}"
    return Deployment(
        provider,
        d.upstream_model,
        key,
        d.weight,
        prices,
        prices.input_price_per_1m + prices.output_price_per_1m,
        provider.timeouts_for(d),
    )


@dataclass(frozen=True, slots=True)
class Model:
    """A public model: its catalogue entry and the deployments that serve it (at least one)."""

    config: ModelConfig
    capabilities: frozenset[Capability]
    deployments: tuple[Deployment, ...]

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def deployment(self) -> Deployment:
        """The first deployment (the primary, in priority order)."""
        return self.deployments[0]


def created_at(config: Config) -> int:
    """One `created` for every model, the same in every worker: the config file's age."""
    try:
        return int(os.stat(config.source).st_mtime) if config.source else 0
    except OSError:
        return 0


class Catalogue:
    def __init__(
        self, config: Config, providers: Mapping[str, Provider], discovered: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        self.created = created_at(config)
        self._models: dict[str, Model] = {}
        for m in config.models:
            self._add(m, providers)
        for provider_id, names in sorted((discovered or {}).items()):
            for name in sorted(names):
                if name not in self._models and provider_id in providers:
                    self._add(
                        ModelConfig(id=name, provider=provider_id, capabilities=DISCOVERED_CAPABILITIES), providers
                    )

    def _add(self, m: ModelConfig, providers: Mapping[str, Provider]) -> None:
        targets = tuple(deployment(providers[d.provider], m, d) for d in m.targets)
        self._models[m.id] = Model(m, frozenset(Capability(c) for c in m.capabilities), targets)

    def replace(self, other: Catalogue) -> None:
        """Take `other`'s entries: one assignment, so no caller ever sees half of each. A
        request already resolved keeps the Model (and provider) it resolved to."""
        self._models, self.created = other._models, other.created

    @property
    def models(self) -> list[Model]:
        return list(self._models.values())

    def get(self, model: str) -> Model | None:
        return self._models.get(model)

    def resolve(self, model: str, capability: Capability | None = None) -> Model:
        """The public model `model`, which must offer `capability` when given."""
        found = self._models.get(model)
        if found is None:
            raise ModelNotFound(model)
        if capability is not None and capability not in found.capabilities:
            raise InvalidRequest(f"model '{model[:200]}' does not support {capability.value}", param="model")
        return found


async def discover(providers: Iterable[Provider], timeout_s: float = 3.0) -> dict[str, list[str]]:
    """What each provider with `discover_models` lists, by provider id. One that does not
    answer is absent (an empty list: it answered, listing nothing), so a caller can keep what
    it listed last instead of losing its models to a blip."""

    async def one(p: Provider) -> tuple[str, list[str] | None]:
        try:
            # asyncio.timeout, not wait_for: a round cancelled at shutdown must end (see ghostllm.background).
            async with asyncio.timeout(timeout_s):
                return p.id, await p.list_models()
        except GhostError as exc:
            log.info("provider %s: model discovery got no answer (%s)", p.id, exc)
            return p.id, None
        except TimeoutError:
            log.info("provider %s: model discovery got no answer within %g s", p.id, timeout_s)
            return p.id, None

    found = await asyncio.gather(*(one(p) for p in providers if p.config.discover_models))
    return {pid: names for pid, names in found if names is not None}


async def discover_configured(config: Config, timeout_s: float = 3.0) -> dict[str, list[str]]:
    """Discovery for the configured providers, outside any worker (the supervisor runs it, so
    every worker serves the same catalogue); each provider is built for the round and closed."""
    from ghostllm.providers.factory import make_provider

    providers = [make_provider(p) for p in config.providers if p.discover_models]
    if not providers:
        return {}
    try:
        for p in providers:
            await p.start()
        return await discover(providers, timeout_s)
    finally:
        await asyncio.gather(*(p.close() for p in providers), return_exceptions=True)
