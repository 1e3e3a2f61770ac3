"""Providers built from configuration, and the catalogue of public model ids.

A public model id (what clients send) resolves to a provider and the name the
upstream knows the model by. Providers with `discover_models` add what their
upstream lists at start-up, so a local Ollama's models appear without config.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ghostllm.config import Config, ModelConfig, ProviderConfig
from ghostllm.errors import GhostError, InvalidRequest, ModelNotFound
from ghostllm.providers.base import Provider
from ghostllm.providers.openai import OpenAIProvider

log = logging.getLogger(__name__)

_ADAPTERS: dict[str, type[Provider]] = {"openai": OpenAIProvider}


@dataclass(frozen=True)
class Route:
    model: ModelConfig
    provider: Provider


def make_provider(config: ProviderConfig) -> Provider:
    return _ADAPTERS[config.type](config)


class Registry:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.providers: dict[str, Provider] = {p.id: make_provider(p) for p in config.providers}
        self._routes: dict[str, Route] = {m.id: Route(m, self.providers[m.provider]) for m in config.models}
        self.created = int(time.time())
        self._health: dict[str, bool] = {}
        self._health_at = -1e9
        self._health_check: asyncio.Future[None] | None = None

    @property
    def routes(self) -> list[Route]:
        return list(self._routes.values())

    def resolve(self, model: str, capability: str | None = None) -> Route:
        """The route for a public model id, which must offer `capability` when given."""
        route = self._routes.get(model)
        if route is None:
            raise ModelNotFound(model)
        if capability is not None and capability not in route.model.capabilities:
            raise InvalidRequest(f"model '{model}' does not support {capability}", param="model")
        return route

    async def start(self) -> None:
        for p in self.providers.values():
            await p.start()
        await asyncio.gather(*(self._discover(p) for p in self.providers.values() if p.config.discover_models))

    async def _discover(self, provider: Provider) -> None:
        try:
            names = await asyncio.wait_for(provider.list_models(), timeout=3.0)
        except (GhostError, TimeoutError) as exc:
            log.info("provider %s: model discovery skipped (%s)", provider.id, exc)
            return
        for name in names:
            if name not in self._routes:
                model = ModelConfig(
                    id=name,
                    provider=provider.id,
                    capabilities=("chat", "streaming", "functions", "completions", "embeddings"),
                )
                self._routes[name] = Route(model, provider)

    async def health(self, max_age_s: float = 10.0) -> dict[str, bool]:
        """Each provider's health, checked at most every `max_age_s` per worker and
        once at a time, so probes hitting /health often never load the providers."""
        if time.monotonic() - self._health_at > max_age_s:
            if self._health_check is None:
                self._health_check = asyncio.ensure_future(self._check_health())
            await asyncio.shield(self._health_check)
        return self._health

    async def _check_health(self) -> None:
        try:
            results = await asyncio.gather(*(p.health() for p in self.providers.values()))
            self._health = dict(zip(self.providers, results, strict=True))
            self._health_at = time.monotonic()
        finally:
            self._health_check = None

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)
