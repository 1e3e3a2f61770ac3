"""A worker's metrics, wired: the sink and stage the pipeline gets, and the loop that pushes
what they counted, and the worker's state, into the families once a second and once more
when the worker stops. So a scrape lags by at most about a second; a worker killed outright
(SIGKILL) loses at most its last second of counts, and what it had pushed stays counted."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry

from ghostllm.auth.authenticator import Authenticator
from ghostllm.background import stop_task
from ghostllm.ledger.writer import Ledger
from ghostllm.limits.limiter import Limiter
from ghostllm.metrics.families import Families, add_observations
from ghostllm.metrics.state import WorkerState
from ghostllm.metrics.streams import ActiveStreams
from ghostllm.metrics.tally import Tally, Totals
from ghostllm.protocol.usage import NANO_PER_USD
from ghostllm.routing.catalogue import Catalogue
from ghostllm.routing.health import ProviderHealth
from ghostllm.routing.router import Router

log = logging.getLogger(__name__)

FLUSH_S = 1.0
STOP_S = 1.0
TOKEN_TYPES = ("prompt", "completion", "cached", "reasoning")


class Publisher:
    def __init__(
        self,
        catalogue: Catalogue,
        *,
        router: Router | None = None,
        health: ProviderHealth | None = None,
        ledger: Ledger | None = None,
        limiter: Limiter | None = None,
        authenticator: Authenticator | None = None,
        registry: CollectorRegistry | None = None,
        interval_s: float = FLUSH_S,
    ) -> None:
        self.families = Families(registry)
        # The pipeline's sinks and last admit stage.
        self.tally = Tally(catalogue.get)
        self.streams = ActiveStreams()
        self.state = WorkerState(self.streams, router, health, ledger, limiter, authenticator)
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.flush()
            except Exception:  # a bug here must not stop the counting; the next round tries again
                log.exception("metrics could not be published")

    async def close(self) -> None:
        """After the last request settled: the loop stops, and what it had not pushed is pushed."""
        await stop_task(self._task, STOP_S)
        self._task = None
        self.flush()

    def flush(self) -> None:
        push(self.families, self.tally.take())
        self.state.publish(self.families)


def push(f: Families, t: Totals) -> None:
    """Totals counted since the last push into the families (one update per label set)."""
    for key, n in t.requests.items():
        f.requests.labels(*key).inc(n)
    for table, family in (
        (t.durations, f.request_duration),
        (t.ttft, f.ttft),
        (t.upstream, f.upstream_duration),
        (t.overhead, f.overhead),
    ):
        for key, b in table.items():
            add_observations(family.labels(*key), b.counts, b.total)
    for (model, provider), sums in t.tokens.items():
        for kind, n in zip(TOKEN_TYPES, sums, strict=False):
            f.tokens.labels(model, provider, kind).inc(n)
        f.cost.labels(model, provider).inc(sums[4] / NANO_PER_USD)
    for model, n in t.retries.items():
        f.retries.labels(model).inc(n)
    for model, n in t.fallbacks.items():
        f.fallbacks.labels(model).inc(n)
