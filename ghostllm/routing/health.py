"""Provider health: checked in the background by each worker, read without waiting.

A worker's loop (`start`/`stop`, from server/worker.py) checks every provider every
`interval_s` (with a little jitter, so the workers do not probe in step) with its
`Provider.health()` (for the HTTP adapters: the model listing, never a paid completion),
each check cut off after `timeout_s`. GET /health and /status read the last results
(`checks`, `get`) and never wait on a provider.

The providers mapping is the worker's live one (routing/live.py changes it in place when
the catalogue reloads, then calls `invalidate`): a result counts only for the provider
object it was taken of, so a new or rebuilt provider reads as not checked yet ("unknown",
not healthy) until its check, which `invalidate` starts at once. A worker serves before its
first round is over (a bound port that does not answer would take Envoy's traffic); a
/health asked meanwhile waits for that round (`settled`), so its answers are real.

Without the loop (unit tests, tools) `get()` checks, once, each provider that has no
result yet: the old lazy behaviour.

`verdict` is the rule /health answers by, per model: a model is available when any of its
deployments' providers is healthy.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ghostllm.background import pause, stop_task
from ghostllm.providers.base import Provider
from ghostllm.routing.catalogue import Model

log = logging.getLogger(__name__)
# How long stopping waits for a round in flight.
STOP_S = 2.0

HealthStatus = Literal["healthy", "degraded", "unhealthy"]
DEFAULT_INTERVAL_S = 15.0
DEFAULT_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Check:
    """One provider's last check."""

    healthy: bool
    # Wall clock (for display), when the check ended.
    at: float
    # How long the check took (up to the timeout).
    latency_s: float
    # Why it failed, in a few words ("" when healthy).
    error: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What /health answers: its status, and which models can be served now."""

    status: HealthStatus
    available: tuple[str, ...]
    unavailable: tuple[str, ...]


def model_providers(model: Model) -> tuple[Provider, ...]:
    """The providers that can serve `model`: one per deployment."""
    return tuple(d.provider for d in model.deployments)


def verdict(models: Iterable[Model], healthy: Mapping[str, bool]) -> Verdict:
    """The gateway's status from its catalogue and its providers' health (`healthy`: by
    provider id; a provider missing from it is not healthy).

    healthy: every model has a healthy provider; degraded: some have none (still serving,
    so 200); unhealthy: no model can be served (503). An empty catalogue is degraded, not
    unhealthy: there is nothing to serve, but a 503 would take every replica out of the
    load balancer, and with it the admin API that adds models."""
    available: list[str] = []
    unavailable: list[str] = []
    for m in models:
        up = any(healthy.get(p.id, False) for p in model_providers(m))
        (available if up else unavailable).append(m.id)
    if not available:
        status: HealthStatus = "degraded" if not unavailable else "unhealthy"
    else:
        status = "degraded" if unavailable else "healthy"
    return Verdict(status, tuple(available), tuple(unavailable))


class ProviderHealth:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.providers = providers
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        # By provider id: the provider object checked and its result.
        self._checks: dict[str, tuple[Provider, Check]] = {}
        self._wake = asyncio.Event()
        # Notified after every round (settled() waits on it).
        self._round = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        # The lazy checks of get() without the loop: one at a time.
        self._lazy: asyncio.Future[None] | None = None

    # What readers see

    def check_of(self, provider_id: str) -> Check | None:
        """The last check of the provider there is now under `provider_id` (None: not checked yet)."""
        found = self._checks.get(provider_id)
        provider = self.providers.get(provider_id)
        if found is None or provider is None or found[0] is not provider:
            return None
        return found[1]

    def checks(self) -> dict[str, Check | None]:
        """Every provider there is now, with its last check (None: not checked yet)."""
        return {pid: self.check_of(pid) for pid in self.providers}

    def healthy(self) -> dict[str, bool]:
        """Every provider there is now: healthy at its last check (not checked yet: False)."""
        return {pid: c is not None and c.healthy for pid, c in self.checks().items()}

    async def get(self) -> dict[str, bool]:
        """`healthy()`; without the background loop, first checks what has no result yet."""
        if self._task is None:
            for _ in range(2):  # a reload during the check may add a provider to check
                missing = {pid: p for pid, p in self.providers.items() if self.check_of(pid) is None}
                if not missing:
                    break
                if self._lazy is None:
                    self._lazy = asyncio.ensure_future(self._check_lazily(missing))
                await asyncio.shield(self._lazy)
        elif any(self.check_of(pid) is None for pid in self.providers):
            # A worker that just started (or reloaded) serves at once; only a /health asked
            # before its first round is over waits for it (at most the check timeout).
            await self.settled(self.timeout_s + 1.0)
        return self.healthy()

    async def _check_lazily(self, providers: Mapping[str, Provider]) -> None:
        try:
            await self._check(providers)
        finally:
            self._lazy = None

    # The loop

    def invalidate(self) -> None:
        """The providers changed: check the new ones now (the others keep their results)."""
        self._wake.set()

    def start(self, interval_s: float | None = None, timeout_s: float | None = None) -> None:
        """Start checking in the background (inside the worker's event loop, providers started)."""
        if interval_s is not None:
            self.interval_s = interval_s
        if timeout_s is not None:
            self.timeout_s = timeout_s
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="provider-health")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task, STOP_S)

    async def settled(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until every provider there is now has a result."""
        if self._task is None:
            return False

        def done() -> bool:
            return all(c is not None for c in self.checks().values())

        async with self._round:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._round.wait_for(done)
            except TimeoutError:
                return False
        return True

    async def _run(self) -> None:
        next_full = 0.0
        while True:
            self._wake.clear()
            now = time.monotonic()
            if now >= next_full:
                due = dict(self.providers)
                # Up to 10 % early, so the workers drift apart instead of probing in step.
                next_full = now + self.interval_s * random.uniform(0.9, 1.0)
            else:  # woken by a reload: only the providers it added or rebuilt
                due = {pid: p for pid, p in self.providers.items() if self.check_of(pid) is None}
            try:
                await self._check(due)
            except Exception:  # never expected (each check catches its own); the loop must live on
                log.exception("provider health check round failed")
            async with self._round:
                self._round.notify_all()
            await pause(self._wake, max(0.0, next_full - time.monotonic()))

    async def _check(self, providers: Mapping[str, Provider]) -> None:
        if not providers:
            return
        results = await asyncio.gather(*(self._check_one(p) for p in providers.values()))
        for (pid, provider), check in zip(providers.items(), results, strict=True):
            if self.providers.get(pid) is not provider:
                continue  # replaced or removed while it was checked: nobody asks about it any more
            previous = self.check_of(pid)
            self._checks[pid] = (provider, check)
            if previous is not None and previous.healthy != check.healthy:
                if check.healthy:
                    log.info("provider %s is healthy again", pid)
                else:
                    log.warning("provider %s is unhealthy: %s", pid, check.error)
            elif previous is None and not check.healthy:
                log.warning("provider %s is unhealthy: %s", pid, check.error)
        # Results of providers gone since.
        for pid in [pid for pid in self._checks if pid not in self.providers]:
            del self._checks[pid]

    async def _check_one(self, provider: Provider) -> Check:
        started = time.monotonic()
        error = ""
        try:
            async with asyncio.timeout(self.timeout_s):
                healthy = await provider.health()
            if not healthy:
                error = "the health check failed"
        except TimeoutError:
            healthy, error = False, f"no answer within {self.timeout_s:g} s"
        except Exception as exc:  # an adapter's health() is meant to answer False, not raise
            healthy, error = False, f"{type(exc).__name__}: {exc}"[:200]
        return Check(healthy, time.time(), time.monotonic() - started, error)
