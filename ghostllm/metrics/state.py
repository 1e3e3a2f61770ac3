"""What a worker's components know, read once a second into the families: gauges set from
their current state (streams, provider health, circuits, the ledger's queue and spool) and
counters from the totals they keep (rows written, requests refused, cache hits), pushed as
the increase since the last read."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import Counter

from ghostllm.auth.authenticator import Authenticator
from ghostllm.ledger.writer import Ledger
from ghostllm.limits.core import BUDGET, PARALLEL, REQUESTS, TOKENS
from ghostllm.limits.limiter import Limiter
from ghostllm.metrics.families import Families
from ghostllm.metrics.streams import ActiveStreams
from ghostllm.routing.circuit import CircuitState
from ghostllm.routing.health import ProviderHealth
from ghostllm.routing.router import Router

CIRCUIT_VALUES = {CircuitState.CLOSED: 0.0, CircuitState.HALF_OPEN: 1.0, CircuitState.OPEN: 2.0}
LIMITS = {REQUESTS: "requests", TOKENS: "tokens", PARALLEL: "parallel"}
LEVELS = {"API key": "key", "user": "user", "team": "team"}
# Counting the spool's files lists a directory that grows while the store is away: not every second.
SPOOL_EVERY_S = 5.0


class Increase:
    """The increase of totals someone else keeps, since the last look."""

    def __init__(self) -> None:
        self._seen: dict[object, float] = {}

    def __call__(self, key: object, total: float) -> float:
        before = self._seen.get(key, 0.0)
        self._seen[key] = total
        return total - before if total > before else 0.0


@dataclass
class WorkerState:
    streams: ActiveStreams
    router: Router | None = None
    health: ProviderHealth | None = None
    ledger: Ledger | None = None
    limiter: Limiter | None = None
    authenticator: Authenticator | None = None

    def __post_init__(self) -> None:
        self._increase = Increase()
        self._spool_at = -SPOOL_EVERY_S

    def _inc(self, child: Counter, key: object, total: float) -> None:
        n = self._increase(key, total)
        if n:
            child.inc(n)

    def publish(self, f: Families) -> None:
        f.active_streams.set(self.streams.count)
        if self.health is not None:
            for provider, check in self.health.checks().items():
                if check is not None:  # not checked yet: no opinion
                    f.provider_up.labels(provider).set(1.0 if check.healthy else 0.0)
        if self.router is not None:
            for key, d in self.router.snapshot().items():
                f.circuit_state.labels(key, d.provider).set(CIRCUIT_VALUES[d.circuit])
                f.deployment_in_flight.labels(key, d.provider).set(d.in_flight)
        if self.ledger is not None:
            self._ledger(f, self.ledger)
        if self.limiter is not None:
            self._limiter(f, self.limiter)
        if self.authenticator is not None:
            for name, cache in (("key", self.authenticator.keys), ("user", self.authenticator.users)):
                self._inc(f.auth_cache_hits.labels(name), ("hits", name), cache.hits)
                self._inc(f.auth_cache_misses.labels(name), ("misses", name), cache.misses)

    def _ledger(self, f: Families, ledger: Ledger) -> None:
        f.ledger_queue.set(ledger.queued)
        now = time.monotonic()
        if now - self._spool_at >= SPOOL_EVERY_S:
            self._spool_at = now
            f.ledger_spool.set(ledger.spool.count())
        for outcome, total in (
            ("written", ledger.written),
            ("spooled", ledger.spooled_rows),
            ("rejected", ledger.rejected_rows),
        ):
            self._inc(f.ledger_rows.labels(outcome), ("ledger", outcome), total)

    def _limiter(self, f: Families, limiter: Limiter) -> None:
        self._inc(f.ratelimit_backend_errors, "backend_errors", limiter.backend_errors)
        for (kind, level_kind), total in list(limiter.refused.items()):
            level = LEVELS.get(level_kind, level_kind)
            if kind == BUDGET:
                self._inc(f.budget_rejections.labels(level), ("refused", kind, level), total)
            elif kind in LIMITS:
                self._inc(f.ratelimit_rejections.labels(LIMITS[kind], level), ("refused", kind, level), total)
