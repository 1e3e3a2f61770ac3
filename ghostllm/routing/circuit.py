"""A passive circuit breaker for one deployment, in one worker.

Closed: every attempt goes through. `failures` failures in a row, or a failure rate of at
least `failure_rate` over at least `min_requests` attempts in the current window of
`window_s`, open it for `cooldown_s`: the router skips it. When the cooldown is over it is
half-open: one attempt (the probe) goes through; its success closes the circuit, its
failure opens it for another cooldown. Only retryable failures count (an upstream 400 is
the request's fault, not the deployment's); an attempt that ends in neither (cancelled,
a 400) releases the probe for the next one.

The clock is the caller's (`now`, time.monotonic() seconds), so tests need no sleeping.
"""

from __future__ import annotations

from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Circuit:
    __slots__ = (
        "consecutive",
        "cooldown_s",
        "failure_rate",
        "failures",
        "min_requests",
        "open_until",
        "probing",
        "state",
        "window_failed",
        "window_s",
        "window_start",
        "window_total",
    )

    def __init__(
        self,
        failures: int = 5,
        failure_rate: float = 0.5,
        min_requests: int = 20,
        window_s: float = 60.0,
        cooldown_s: float = 30.0,
    ) -> None:
        self.failures = failures
        self.failure_rate = failure_rate
        self.min_requests = min_requests
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self.state = CircuitState.CLOSED
        self.consecutive = 0
        self.window_start = 0.0
        self.window_total = 0
        self.window_failed = 0
        self.open_until = 0.0
        self.probing = False

    def available(self, now: float) -> bool:
        """May an attempt go to this deployment now?"""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            return now >= self.open_until
        return not self.probing

    def current(self, now: float) -> CircuitState:
        """The state as of `now` (an open circuit whose cooldown is over reads half-open)."""
        if self.state is CircuitState.OPEN and now >= self.open_until:
            return CircuitState.HALF_OPEN
        return self.state

    def begin(self, now: float) -> None:
        """An attempt starts (the router planned it, available or as the last resort)."""
        if self.state is CircuitState.OPEN and now >= self.open_until:
            self.state = CircuitState.HALF_OPEN
            self.probing = False
        if self.state is CircuitState.HALF_OPEN:
            self.probing = True

    def success(self, now: float) -> None:
        if self.state is not CircuitState.CLOSED:
            self._close(now)
            return
        self.consecutive = 0
        self._count(now, failed=False)

    def failure(self, now: float) -> None:
        if self.state is CircuitState.HALF_OPEN:
            self._open(now)
            return
        if self.state is CircuitState.OPEN:
            return  # an attempt that started before the circuit opened
        self.consecutive += 1
        self._count(now, failed=True)
        if self.consecutive >= self.failures or (
            self.window_total >= self.min_requests and self.window_failed >= self.failure_rate * self.window_total
        ):
            self._open(now)

    def release(self) -> None:
        """The attempt ended in neither success nor a counted failure."""
        self.probing = False

    def _count(self, now: float, *, failed: bool) -> None:
        if now - self.window_start >= self.window_s:
            self.window_start, self.window_total, self.window_failed = now, 0, 0
        self.window_total += 1
        self.window_failed += failed

    def _open(self, now: float) -> None:
        self.state = CircuitState.OPEN
        self.open_until = now + self.cooldown_s
        self.probing = False

    def _close(self, now: float) -> None:
        self.state = CircuitState.CLOSED
        self.consecutive = 0
        self.probing = False
        self.window_start, self.window_total, self.window_failed = now, 0, 0
