"""The metrics sink: settle hands it each usage record, which it adds to plain per-worker
totals (counts by label values, histogram bucket counts, token sums); the publisher takes
them once a second and pushes them into prometheus-client's objects.

Why not update those objects here: in multiprocess mode every update is a locked write to
an mmap'd file, about 1-2 us each, and a request makes a dozen of them; added up here it
costs a few dict updates, and the writes happen once a second per label set, however
many requests there were.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

from ghostllm.config import AUTO_MODEL
from ghostllm.gateway.usage import UsageRecord
from ghostllm.metrics.families import DURATION_BUCKETS, OVERHEAD_BUCKETS, TTFT_BUCKETS

# Label values for what has none, and for a model name the catalogue does not know (what a
# client sends must not become a label value).
NONE = "none"
UNKNOWN = "unknown"
_STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")


class Buckets:
    """One labelled histogram's observations since the last push: per bucket (the last one
    +Inf), and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.total = 0.0


def _observe(table: dict[tuple[str, ...], Buckets], key: tuple[str, ...], bounds: tuple[float, ...], v: float) -> None:
    b = table.get(key)
    if b is None:
        b = table[key] = Buckets(len(bounds) + 1)
    # bisect_left: a value equal to a bound belongs to that bucket (le, as Prometheus counts).
    b.counts[bisect_left(bounds, v)] += 1
    b.total += v


@dataclass
class Totals:
    """What was counted since the last push, by label values (in the families' label order)."""

    requests: dict[tuple[str, ...], int] = field(default_factory=dict)
    durations: dict[tuple[str, ...], Buckets] = field(default_factory=dict)
    ttft: dict[tuple[str, ...], Buckets] = field(default_factory=dict)
    upstream: dict[tuple[str, ...], Buckets] = field(default_factory=dict)
    overhead: dict[tuple[str, ...], Buckets] = field(default_factory=dict)
    # (model, provider) -> [prompt, completion, cached, reasoning tokens, cost in nano-USD]
    tokens: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)


class Tally:
    def __init__(self, known_model: Callable[[str], object | None]) -> None:
        # The catalogue's lookup (None: not a model it has), read at each request: models the
        # catalogue gains later are labelled by name from then on.
        self._known = known_model
        self._totals = Totals()

    def model_label(self, model: str) -> str:
        if not model:
            return NONE
        return model if model == AUTO_MODEL or self._known(model) is not None else UNKNOWN

    def __call__(self, r: UsageRecord) -> None:
        t = self._totals
        model = self.model_label(r.model)
        provider = r.provider or NONE
        endpoint = r.endpoint
        status = r.status
        status_class = _STATUS_CLASSES[status // 100] if 0 <= status < 600 else "other"
        key = (endpoint, model, provider, status_class, r.error_code or "")
        requests = t.requests
        requests[key] = requests.get(key, 0) + 1
        stream = "true" if r.stream else "false"
        seconds = r.latency_ms / 1000
        _observe(t.durations, (endpoint, model, provider, stream), DURATION_BUCKETS, seconds)
        if r.ttft_ms is not None:
            _observe(t.ttft, (model, provider), TTFT_BUCKETS, r.ttft_ms / 1000)
        if r.upstream_ms is not None:
            upstream = r.upstream_ms / 1000
            _observe(t.upstream, (model, provider, stream), DURATION_BUCKETS, upstream)
            _observe(t.overhead, (endpoint, stream), OVERHEAD_BUCKETS, max(seconds - upstream, 0.0))
        if r.prompt_tokens or r.completion_tokens or r.cost_nano_usd:
            sums = t.tokens.get((model, provider))
            if sums is None:
                sums = t.tokens[(model, provider)] = [0, 0, 0, 0, 0]
            sums[0] += r.prompt_tokens
            sums[1] += r.completion_tokens
            sums[2] += r.cached_tokens or 0
            sums[3] += r.reasoning_tokens or 0
            sums[4] += r.cost_nano_usd
        if r.attempts > 1:
            self._moves(t, model, r.deployments_tried)

    @staticmethod
    def _moves(t: Totals, model: str, tried: tuple[str, ...]) -> None:
        """Each attempt after the first: a retry when it tried the same deployment again, else a fallback."""
        retries = sum(1 for before, after in pairwise(tried) if before == after)
        moved = len(tried) - 1 - retries
        if retries:
            t.retries[model] = t.retries.get(model, 0) + retries
        if moved:
            t.fallbacks[model] = t.fallbacks.get(model, 0) + moved

    def take(self) -> Totals:
        """What was counted since the last call; counting starts afresh."""
        taken, self._totals = self._totals, Totals()
        return taken
