"""Every metric GhostLLM exports: name, help, labels, buckets, and how the worker processes'
values combine (prometheus-client's multiprocess mode: counters and histograms add up, also
those of workers that have exited; a gauge says per family).

Label values are bounded: endpoints are ours, models the catalogue's ids ("unknown" for a
name the client made up, "none" when the request named none), providers and deployments the
catalogue's, error codes ours. No user, key or request id is ever a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"

# Seconds. A whole request or upstream call: from a cached refusal to a 10-minute generation.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
# What the gateway adds: well under a millisecond when all is well; retry backoffs count too.
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# How a gauge's per-worker values combine; the "live" modes leave out workers that exited.
GaugeMode = Literal["all", "livesum", "livemin", "livemax"]


@dataclass(frozen=True)
class Family:
    # As exposed (a counter's ends in _total; a histogram's samples add _bucket, _sum, _count).
    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    mode: GaugeMode = "all"


REQUESTS = Family(
    "ghostllm_requests_total",
    COUNTER,
    "Requests answered, by endpoint, model, provider, HTTP status class and error code.",
    ("endpoint", "model", "provider", "status_class", "error_code"),
)
REQUEST_DURATION = Family(
    "ghostllm_request_duration_seconds",
    HISTOGRAM,
    "Time from a request's arrival to its end (a stream's: its last chunk).",
    ("endpoint", "model", "provider", "stream"),
    DURATION_BUCKETS,
)
TTFT = Family(
    "ghostllm_time_to_first_token_seconds",
    HISTOGRAM,
    "Streams: time from the request's arrival to the first chunk with output.",
    ("model", "provider"),
    TTFT_BUCKETS,
)
UPSTREAM_DURATION = Family(
    "ghostllm_upstream_duration_seconds",
    HISTOGRAM,
    "Time waiting on the upstream, its attempts added up (retries and fallbacks too; backoff waits, and a"
    " stream's time relaying its chunks, left out).",
    ("model", "provider", "stream"),
    DURATION_BUCKETS,
)
OVERHEAD = Family(
    "ghostllm_gateway_overhead_seconds",
    HISTOGRAM,
    "The gateway's own share of a request that called an upstream: its duration minus the upstream time"
    " (admission, relaying, retry backoff).",
    ("endpoint", "stream"),
    OVERHEAD_BUCKETS,
)
TOKENS = Family(
    "ghostllm_tokens_total",
    COUNTER,
    "Tokens, as the upstream reported them (estimated when it did not), by type: prompt, completion,"
    " cached (of the prompt), reasoning (of the completion).",
    ("model", "provider", "type"),
)
COST = Family("ghostllm_cost_usd_total", COUNTER, "What the requests cost, in USD.", ("model", "provider"))
ACTIVE_STREAMS = Family(
    "ghostllm_active_streams", GAUGE, "Streaming requests admitted and not yet ended.", mode="livesum"
)
RATELIMIT_REJECTIONS = Family(
    "ghostllm_ratelimit_rejections_total",
    COUNTER,
    "Requests refused by a rate limit (429 rate_limit_exceeded), by limit (requests, tokens, parallel)"
    " and level (key, user, team).",
    ("limit", "level"),
)
BUDGET_REJECTIONS = Family(
    "ghostllm_budget_rejections_total",
    COUNTER,
    "Requests refused because a budget is spent (429 insufficient_quota), by level (key, user, team).",
    ("level",),
)
RATELIMIT_BACKEND_ERRORS = Family(
    "ghostllm_ratelimit_backend_errors_total",
    COUNTER,
    "Rate-limit checks that could not reach their backend (Redis).",
)
PROVIDER_UP = Family(
    "ghostllm_provider_up",
    GAUGE,
    "1 when the provider's last health check passed in every worker, else 0.",
    ("provider",),
    mode="livemin",
)
CIRCUIT_STATE = Family(
    "ghostllm_circuit_state",
    GAUGE,
    "A deployment's circuit breaker, the worst over the workers: 0 closed, 1 half-open, 2 open.",
    ("deployment", "provider"),
    mode="livemax",
)
DEPLOYMENT_IN_FLIGHT = Family(
    "ghostllm_deployment_in_flight",
    GAUGE,
    "Upstream attempts in flight per deployment.",
    ("deployment", "provider"),
    mode="livesum",
)
RETRIES = Family(
    "ghostllm_retries_total", COUNTER, "Upstream attempts that retried the deployment tried before.", ("model",)
)
FALLBACKS = Family(
    "ghostllm_fallbacks_total",
    COUNTER,
    "Upstream attempts that moved on to another deployment (the model's next one, or a fallback model's).",
    ("model",),
)
LEDGER_QUEUE = Family(
    "ghostllm_ledger_queue_rows", GAUGE, "Usage rows in memory, not yet written to the store.", mode="livesum"
)
LEDGER_SPOOL = Family(
    "ghostllm_ledger_spool_files",
    GAUGE,
    "Files of usage rows waiting in the spool for the store to take them.",
    mode="livemax",
)
LEDGER_ROWS = Family(
    "ghostllm_ledger_rows_total",
    COUNTER,
    "Usage rows by outcome: written to the store, spooled to disk, or rejected (set aside).",
    ("outcome",),
)
AUTH_CACHE_HITS = Family(
    "ghostllm_auth_cache_hits_total",
    COUNTER,
    "Credential checks answered from the worker's cache (cache: key, user).",
    ("cache",),
)
AUTH_CACHE_MISSES = Family(
    "ghostllm_auth_cache_misses_total",
    COUNTER,
    "Credential checks that had to ask the store (cache: key, user).",
    ("cache",),
)
# Made by the exporter at each scrape, not by the workers.
ENVOY_UP = Family("ghostllm_envoy_up", GAUGE, "1 when Envoy's admin answered with its stats for this scrape.")

WORKER_FAMILIES = (
    REQUESTS,
    REQUEST_DURATION,
    TTFT,
    UPSTREAM_DURATION,
    OVERHEAD,
    TOKENS,
    COST,
    ACTIVE_STREAMS,
    RATELIMIT_REJECTIONS,
    BUDGET_REJECTIONS,
    RATELIMIT_BACKEND_ERRORS,
    PROVIDER_UP,
    CIRCUIT_STATE,
    DEPLOYMENT_IN_FLIGHT,
    RETRIES,
    FALLBACKS,
    LEDGER_QUEUE,
    LEDGER_SPOOL,
    LEDGER_ROWS,
    AUTH_CACHE_HITS,
    AUTH_CACHE_MISSES,
)


def metric_names() -> tuple[str, ...]:
    """Every metric name GhostLLM exports (besides Envoy's own `envoy_*`), as a query names it."""
    return (*(f.name for f in WORKER_FAMILIES), ENVOY_UP.name)


def _counter(f: Family, registry: CollectorRegistry | None) -> Counter:
    return Counter(f.name, f.help, f.labels, registry=registry)


def _gauge(f: Family, registry: CollectorRegistry | None) -> Gauge:
    return Gauge(f.name, f.help, f.labels, registry=registry, multiprocess_mode=f.mode)


def _histogram(f: Family, registry: CollectorRegistry | None) -> Histogram:
    return Histogram(f.name, f.help, f.labels, registry=registry, buckets=f.buckets)


class Families:
    """The prometheus-client objects of one worker. With no registry (a worker): registered
    nowhere, their values go to the multiprocess directory, which the exporter reads; tests
    pass a registry of their own to read them back."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry
        self.requests = _counter(REQUESTS, r)
        self.request_duration = _histogram(REQUEST_DURATION, r)
        self.ttft = _histogram(TTFT, r)
        self.upstream_duration = _histogram(UPSTREAM_DURATION, r)
        self.overhead = _histogram(OVERHEAD, r)
        self.tokens = _counter(TOKENS, r)
        self.cost = _counter(COST, r)
        self.active_streams = _gauge(ACTIVE_STREAMS, r)
        self.ratelimit_rejections = _counter(RATELIMIT_REJECTIONS, r)
        self.budget_rejections = _counter(BUDGET_REJECTIONS, r)
        self.ratelimit_backend_errors = _counter(RATELIMIT_BACKEND_ERRORS, r)
        self.provider_up = _gauge(PROVIDER_UP, r)
        self.circuit_state = _gauge(CIRCUIT_STATE, r)
        self.deployment_in_flight = _gauge(DEPLOYMENT_IN_FLIGHT, r)
        self.retries = _counter(RETRIES, r)
        self.fallbacks = _counter(FALLBACKS, r)
        self.ledger_queue = _gauge(LEDGER_QUEUE, r)
        self.ledger_spool = _gauge(LEDGER_SPOOL, r)
        self.ledger_rows = _counter(LEDGER_ROWS, r)
        self.auth_cache_hits = _counter(AUTH_CACHE_HITS, r)
        self.auth_cache_misses = _counter(AUTH_CACHE_MISSES, r)


def add_observations(h: Histogram, counts: list[int], total: float) -> None:
    """Many observations at once into one labelled histogram: `counts[i]` of them in bucket i
    (the last: +Inf), summing to `total`. What `observe` does one value at a time, which
    costs about 2 us each in multiprocess mode (a locked mmap write per bucket and sum)."""
    buckets = h._buckets  # one value per bucket, not cumulative (prometheus-client's layout)
    if len(buckets) != len(counts):
        raise ValueError(f"{len(counts)} bucket counts for a histogram of {len(buckets)} buckets")
    h._sum.inc(total)
    for value, n in zip(buckets, counts, strict=True):
        if n:
            value.inc(n)
