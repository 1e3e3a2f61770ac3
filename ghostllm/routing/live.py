"""A worker's live providers and catalogue, rebuilt in place when the merged config changes.

Whoever holds them keeps the objects it was given (the pipeline's ResolveModel, the model
and health services, ProviderHealth): the providers dict is updated in place and the
Catalogue takes the new one's tables, both in one step of the event loop (no await in
between), so nobody sees a model whose provider is missing from the dict, or the reverse.

A provider whose settings did not change is kept, with its connection pool. A new or
changed one is built and started before the swap. One replaced or removed is closed only
`retire_after_s` later: requests and streams that resolved to it before the swap still
use it, and by then Envoy's route timeout has ended every one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ghostllm.config import Config, ProviderConfig
from ghostllm.providers.base import Provider
from ghostllm.routing.catalogue import Catalogue, Model
from ghostllm.routing.health import ProviderHealth
from ghostllm.routing.merge import Merged

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Changes:
    """What a reload changed, by id."""

    providers_added: tuple[str, ...] = ()
    providers_changed: tuple[str, ...] = ()
    providers_removed: tuple[str, ...] = ()
    models_added: tuple[str, ...] = ()
    models_changed: tuple[str, ...] = ()
    models_removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)

    def describe(self, most: int = 8) -> str:
        """For the log: at most `most` ids of each kind (a provider going takes all its models)."""
        parts = []
        for name in self.__dataclass_fields__:
            ids: tuple[str, ...] = getattr(self, name)
            if ids:
                more = f" and {len(ids) - most} more" if len(ids) > most else ""
                parts.append(f"{name.replace('_', ' ')}: {', '.join(ids[:most])}{more}")
        return "; ".join(parts) or "nothing changed"


def retire_delay(config: Config) -> float:
    """How long a replaced provider stays open: past Envoy's route timeout (an hour when that is off)."""
    timeout = config.server.request_timeout_s
    return timeout + 5.0 if timeout > 0 else 3600.0


def _diff(old: Mapping[str, object], new: Mapping[str, object]) -> tuple[tuple[str, ...], ...]:
    added = tuple(k for k in new if k not in old)
    changed = tuple(k for k in new if k in old and old[k] != new[k])
    removed = tuple(k for k in old if k not in new)
    return added, changed, removed


def _entry(m: Model) -> tuple[object, ...]:
    # The provider by identity: a rebuilt provider changes every model it serves.
    return (m.config, m.capabilities, tuple((id(d.provider), d.upstream_model) for d in m.deployments))


class LiveCatalogue:
    def __init__(
        self,
        config: Config,
        build: Callable[[ProviderConfig], Provider],
        discovered: Mapping[str, Sequence[str]] | None = None,
        *,
        retire_after_s: float = 600.0,
    ) -> None:
        self.config = config
        self._build = build
        # What the providers with discover_models list, by provider id; replaced when discovery
        # finds something new (server/catalogue_sync.py), taking effect at the next apply.
        self.discovered: dict[str, list[str]] = {k: list(v) for k, v in (discovered or {}).items()}
        self.retire_after_s = retire_after_s
        self.providers: dict[str, Provider] = {p.id: build(p) for p in config.providers}
        self.catalogue = Catalogue(config, self.providers, self.discovered)
        self.health = ProviderHealth(self.providers)
        # Replaced providers waiting to be closed, by the task that will close them.
        self._retiring: dict[asyncio.Task[None], Provider] = {}

    async def start(self) -> None:
        for p in self.providers.values():
            await p.start()

    async def apply(self, merged: Merged) -> Changes:
        """Serve `merged` from now on; what changed."""
        current = self.providers
        fresh: dict[str, Provider] = {}
        built: list[Provider] = []
        for cfg in merged.providers:
            old = current.get(cfg.id)
            if old is not None and old.config == cfg:
                fresh[cfg.id] = old
            else:
                fresh[cfg.id] = provider = self._build(cfg)
                built.append(provider)
        try:
            for provider in built:
                await provider.start()
            catalogue = Catalogue(merged.config(self.config), fresh, self.discovered)
        except BaseException:
            await asyncio.gather(*(p.close() for p in built), return_exceptions=True)
            raise
        old_models = {m.id: _entry(m) for m in self.catalogue.models}
        new_models = {m.id: _entry(m) for m in catalogue.models}
        identities = {k: id(v) for k, v in current.items()}, {k: id(v) for k, v in fresh.items()}
        p_added, p_changed, p_removed = _diff(*identities)
        m_added, m_changed, m_removed = _diff(old_models, new_models)
        retired = [p for pid, p in current.items() if fresh.get(pid) is not p]
        # The swap: nothing awaited from here on.
        current.clear()
        current.update(fresh)
        self.catalogue.replace(catalogue)
        if built or retired:
            self.health.invalidate()
        for provider in retired:
            self._retire(provider)
        return Changes(p_added, p_changed, p_removed, m_added, m_changed, m_removed)

    def _retire(self, provider: Provider) -> None:
        async def later() -> None:
            await asyncio.sleep(self.retire_after_s)
            await _close(provider)

        task = asyncio.create_task(later(), name=f"retire-provider-{provider.id}")
        self._retiring[task] = provider
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    @property
    def retiring(self) -> list[Provider]:
        return list(self._retiring.values())

    async def close(self) -> None:
        """Every provider, also those still retiring (the worker has drained its requests)."""
        retiring = list(self._retiring.items())
        for task, _ in retiring:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        everything = [*self.providers.values(), *(p for _, p in retiring)]
        await asyncio.gather(*(p.close() for p in everything), return_exceptions=True)


async def _close(provider: Provider) -> None:
    try:
        await provider.close()
    except Exception:
        log.exception("closing the replaced provider %s failed", provider.id)
