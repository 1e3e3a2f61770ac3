"""Provider health for GET /health: checked at most every few seconds per worker, once at a time.

The providers mapping is the worker's live one (routing/live.py changes it in place when
the catalogue reloads): a check probes a snapshot of it, a reload invalidates what was
checked, and the answer always names exactly the providers there are now.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from ghostllm.providers.base import Provider


class ProviderHealth:
    def __init__(self, providers: Mapping[str, Provider], max_age_s: float = 10.0) -> None:
        self.providers = providers
        self.max_age_s = max_age_s
        self._health: dict[str, bool] = {}
        self._checked_at = -1e9
        self._check: asyncio.Future[None] | None = None
        # Bumped when the providers change: a check of an older generation is stale.
        self._generation = 0
        self._checked_generation = -1

    def invalidate(self) -> None:
        """The providers changed: the next get() checks again."""
        self._generation += 1

    def _stale(self) -> bool:
        return (
            time.monotonic() - self._checked_at > self.max_age_s
            or self._checked_generation != self._generation
            or self._health.keys() != self.providers.keys()
        )

    async def get(self) -> dict[str, bool]:
        """Each provider's health; probes hitting /health often never load the providers."""
        # Twice at most: a reload landing during the first check leaves it stale.
        for _ in range(2):
            if not self._stale():
                break
            if self._check is None:
                self._check = asyncio.ensure_future(self._run())
            await asyncio.shield(self._check)
        # A provider added during the last check (a third reload in a row) reads as not yet healthy.
        return {pid: self._health.get(pid, False) for pid in self.providers}

    async def _run(self) -> None:
        providers, generation = dict(self.providers), self._generation
        try:
            results = await asyncio.gather(*(p.health() for p in providers.values()))
            self._health = dict(zip(providers, results, strict=True))
            self._checked_at = time.monotonic()
            self._checked_generation = generation
        finally:
            self._check = None
