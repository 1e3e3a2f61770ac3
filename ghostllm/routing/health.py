"""Provider health for GET /health: checked at most every few seconds per worker, once at a time."""

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

    async def get(self) -> dict[str, bool]:
        """Each provider's health; probes hitting /health often never load the providers."""
        if time.monotonic() - self._checked_at > self.max_age_s:
            if self._check is None:
                self._check = asyncio.ensure_future(self._run())
            await asyncio.shield(self._check)
        return self._health

    async def _run(self) -> None:
        try:
            results = await asyncio.gather(*(p.health() for p in self.providers.values()))
            self._health = dict(zip(self.providers, results, strict=True))
            self._checked_at = time.monotonic()
        finally:
            self._check = None
