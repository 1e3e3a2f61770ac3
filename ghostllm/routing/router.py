"""Which deployments a request tries, in which order, and what each worker learns from them.

`Router.plan(model)` is the request's list of (model, deployment): the model's deployments
ordered by its strategy (routing/strategies.py) with open circuits left out (when every one
is open, the one whose cooldown ends first is still tried), then each fallback model's, by
the same rules. The exchange (gateway/exchange.py) walks it: `begin` an attempt, then
`first_output`, and `succeeded`, `failed` (a retryable failure: counted by the circuit) or
`released` (anything else: a 400, a cancel). `delay` says how long to wait before retrying
on the same deployment, or that it should not be retried there.

State is per worker and keyed by the deployment's key ("<provider>/<upstream model>"), so
it survives catalogue reloads. Nothing here awaits; a plan for a model with two weighted
deployments costs a few microseconds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ghostllm.config import Capability, RoutingConfig
from ghostllm.errors import GhostError, ProviderError, RateLimited, ServiceUnavailable, UpstreamTimeout
from ghostllm.routing.catalogue import Catalogue, Deployment, Model
from ghostllm.routing.circuit import Circuit, CircuitState
from ghostllm.routing.strategies import order

# What the upstream may not do again on the next attempt: connect errors and resets, answers
# we cannot use (502), its 5xx, timeouts before the first byte, its 429 (QuotaExceeded, our own
# budget refusal, is another class). Everything else (its 400s, our own checks) is final.
RETRYABLE = (ProviderError, ServiceUnavailable, UpstreamTimeout, RateLimited)

Plan = list[tuple[Model, Deployment]]


def retryable(err: BaseException) -> bool:
    return isinstance(err, RETRYABLE)


def retry_after_s(value: str | None) -> float | None:
    """A retry-after in seconds (an HTTP date, or nothing usable: None)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class DeploymentState:
    """What one worker knows about one deployment."""

    __slots__ = ("circuit", "failures", "in_flight", "key", "latency_ms", "successes", "ttft_at", "ttft_ms")

    def __init__(self, key: str, circuit: Circuit) -> None:
        self.key = key
        self.circuit = circuit
        self.in_flight = 0
        # Moving averages (EWMA) of the time to the first output and to the end, in ms.
        self.ttft_ms: float | None = None
        # When ttft_ms last took a sample (the router's clock).
        self.ttft_at = 0.0
        self.latency_ms: float | None = None
        self.successes = 0
        self.failures = 0


@dataclass(frozen=True, slots=True)
class DeploymentStats:
    """One deployment in Router.snapshot() (for GET /status and /health)."""

    key: str
    provider: str
    upstream_model: str
    # The public models it serves in this worker's catalogue.
    models: tuple[str, ...]
    in_flight: int
    ttft_ms: float | None
    latency_ms: float | None
    circuit: CircuitState
    # Seconds until an open circuit lets a probe through (0 when not open).
    open_for_s: float
    consecutive_failures: int
    successes: int
    failures: int


def _ewma(old: float | None, sample: float, alpha: float) -> float:
    return sample if old is None else old + alpha * (sample - old)


class Router:
    def __init__(
        self,
        catalogue: Catalogue,
        config: RoutingConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.config = config or RoutingConfig()
        self.clock = clock
        self.rng = rng or random.Random()
        self._states: dict[str, DeploymentState] = {}

    # ------------------------------------------------------------------ state

    def state(self, d: Deployment) -> DeploymentState:
        st = self._states.get(d.key)
        if st is None:
            c = self.config
            circuit = Circuit(
                c.circuit_failures,
                c.circuit_failure_rate,
                c.circuit_min_requests,
                c.circuit_window_s,
                c.circuit_cooldown_s,
            )
            st = self._states[d.key] = DeploymentState(d.key, circuit)
        return st

    def _stats(self, d: Deployment) -> DeploymentState | None:
        return self._states.get(d.key)

    # ------------------------------------------------------------------ the plan

    def plan(self, model: Model, capability: Capability | None = None) -> Plan:
        now = self.clock()
        out: Plan = []
        seen: set[str] = set()
        self._add(model, now, seen, out)
        for fid in model.config.fallbacks:
            fallback = self.catalogue.get(fid)
            if fallback is not None and (capability is None or capability in fallback.capabilities):
                self._add(fallback, now, seen, out)
        return out

    def _add(self, model: Model, now: float, seen: set[str], out: Plan) -> None:
        states = self._states
        deployments = model.deployments
        ordered = (
            order(model.config.strategy, deployments, self._stats, self.rng, now, self.config.latency_stale_s)
            if len(deployments) > 1
            else deployments
        )
        soonest: Deployment | None = None
        soonest_at = 0.0
        added = False
        for d in ordered:
            key = d.key
            if key in seen:
                continue
            st = states.get(key)
            if st is None or st.circuit.available(now):
                out.append((model, d))
                seen.add(key)
                added = True
            elif soonest is None or st.circuit.open_until < soonest_at:
                soonest, soonest_at = d, st.circuit.open_until
        if not added and soonest is not None:
            out.append((model, soonest))
            seen.add(soonest.key)

    # ------------------------------------------------------------------ attempts

    def retries(self, model: Model) -> int:
        """Retries on one deployment of `model` after its first attempt."""
        own = model.config.retries
        return self.config.retries if own is None else own

    def delay(self, retry: int, err: GhostError, remaining_s: float) -> float | None:
        """Seconds to wait before retry number `retry` (0: the first) on the deployment that
        failed with `err`, or None: do not retry there (its retry-after is over the cap, or
        the wait would outlast the request's remaining retry budget)."""
        c = self.config
        wait = min(c.backoff_max_s, c.backoff_base_s * (2**retry)) * (0.5 + 0.5 * self.rng.random())
        after = retry_after_s(err.retry_after)
        if after is not None:
            if after > c.retry_after_cap_s:
                return None
            wait = max(wait, after)
        return wait if wait < remaining_s else None

    def begin(self, d: Deployment) -> DeploymentState:
        st = self.state(d)
        st.in_flight += 1
        st.circuit.begin(self.clock())
        return st

    def first_output(self, st: DeploymentState, elapsed_s: float) -> None:
        now = self.clock()
        # A stale average says nothing about now: the new sample replaces it.
        old = st.ttft_ms if now - st.ttft_at < self.config.latency_stale_s else None
        st.ttft_ms = _ewma(old, elapsed_s * 1000, self.config.latency_alpha)
        st.ttft_at = now

    def succeeded(self, st: DeploymentState, elapsed_s: float) -> None:
        st.in_flight -= 1
        st.successes += 1
        st.latency_ms = _ewma(st.latency_ms, elapsed_s * 1000, self.config.latency_alpha)
        st.circuit.success(self.clock())

    def failed(self, st: DeploymentState) -> None:
        st.in_flight -= 1
        st.failures += 1
        st.circuit.failure(self.clock())

    def released(self, st: DeploymentState) -> None:
        st.in_flight -= 1
        st.circuit.release()

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> dict[str, DeploymentStats]:
        """Every deployment of the current catalogue, by key, as this worker sees it."""
        now = self.clock()
        served: dict[str, tuple[Deployment, list[str]]] = {}
        for m in self.catalogue.models:
            for d in m.deployments:
                served.setdefault(d.key, (d, []))[1].append(m.id)
        out: dict[str, DeploymentStats] = {}
        for key, (d, models) in served.items():
            st = self._states.get(key)
            if st is None:
                out[key] = DeploymentStats(
                    key,
                    d.provider.id,
                    d.upstream_model,
                    tuple(models),
                    0,
                    None,
                    None,
                    CircuitState.CLOSED,
                    0.0,
                    0,
                    0,
                    0,
                )
                continue
            c = st.circuit
            state = c.current(now)
            out[key] = DeploymentStats(
                key,
                d.provider.id,
                d.upstream_model,
                tuple(models),
                st.in_flight,
                st.ttft_ms,
                st.latency_ms,
                state,
                max(0.0, c.open_until - now) if state is CircuitState.OPEN else 0.0,
                c.consecutive,
                st.successes,
                st.failures,
            )
        return out

    def serving(self, model: Model) -> bool:
        """Has `model` a deployment whose circuit is not open (a half-open one counts)?"""
        now = self.clock()
        for d in model.deployments:
            st = self._states.get(d.key)
            if st is None or st.circuit.current(now) is not CircuitState.OPEN:
                return True
        return False
