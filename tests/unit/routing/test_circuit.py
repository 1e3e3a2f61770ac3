"""ghostllm.routing.circuit: open after N failures in a row or a failure rate, half-open after
the cooldown with one probe, closed by the probe's success; an injected clock, no sleeping."""

from __future__ import annotations

from ghostllm.routing.circuit import Circuit, CircuitState


def state(c: Circuit) -> CircuitState:
    return c.state  # read fresh each time (a bare attribute would be narrowed by the type checker)


def test_consecutive_failures_open_then_half_open_probe_closes() -> None:
    c = Circuit(failures=3, cooldown_s=30.0)
    for t in range(2):
        c.failure(float(t))
    assert state(c) is CircuitState.CLOSED and c.available(2.0)
    c.failure(2.0)
    assert state(c) is CircuitState.OPEN and not c.available(2.0) and not c.available(31.9)
    assert c.current(31.9) is CircuitState.OPEN and c.current(32.0) is CircuitState.HALF_OPEN
    assert c.available(32.0)
    c.begin(32.0)  # the probe
    assert state(c) is CircuitState.HALF_OPEN and not c.available(32.1)  # only one at a time
    c.success(33.0)
    assert state(c) is CircuitState.CLOSED and c.available(33.0) and c.consecutive == 0


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    c = Circuit(failures=1, cooldown_s=10.0)
    c.failure(0.0)
    c.begin(10.0)
    c.failure(10.5)
    assert state(c) is CircuitState.OPEN and c.open_until == 20.5 and not c.available(20.0)


def test_a_probe_that_ends_in_neither_frees_the_slot() -> None:
    c = Circuit(failures=1, cooldown_s=1.0)
    c.failure(0.0)
    c.begin(1.0)
    assert not c.available(1.0)
    c.release()  # cancelled, or an upstream 400
    assert c.available(1.0) and state(c) is CircuitState.HALF_OPEN


def test_a_success_resets_the_run_of_failures() -> None:
    c = Circuit(failures=3, min_requests=1000)
    for t in range(10):
        c.failure(float(t))
        c.failure(float(t))
        c.success(float(t))
    assert state(c) is CircuitState.CLOSED


def test_failure_rate_over_the_window_opens_it() -> None:
    c = Circuit(failures=100, failure_rate=0.5, min_requests=10, window_s=60.0)
    for t in range(9):  # alternating: never two failures in a row
        (c.failure if t % 2 else c.success)(float(t))
    assert state(c) is CircuitState.CLOSED  # 9 attempts: under min_requests
    c.failure(9.0)  # 10 attempts, 5 failed: 50 %
    assert state(c) is CircuitState.OPEN


def test_the_window_starts_over() -> None:
    c = Circuit(failures=100, failure_rate=0.5, min_requests=4, window_s=10.0)
    c.failure(0.0)
    c.success(1.0)
    c.failure(2.0)
    c.success(11.0)  # a new window: the old failures are gone
    c.success(12.0)
    c.failure(13.0)
    assert state(c) is CircuitState.CLOSED and c.window_total == 3
