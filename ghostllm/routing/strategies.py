"""How a model's deployments are ordered for one request (the router then skips open circuits).

- priority: as configured (the first is the primary, the others fail over in order).
- weighted: weighted random without replacement (weight 0: only after every weighted one).
- least-latency: lowest moving average of time to first token first (untried ones first, so
  they get measured, and so are those whose average is older than routing.latency_stale_s:
  one that was slow once gets tried again).
- least-busy: fewest requests in flight in this worker first.
- lowest-cost: lowest input + output price per 1M tokens first.

Ties keep the configured order (the sorts are stable).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from ghostllm.routing.catalogue import Deployment


class Stats(Protocol):
    in_flight: int
    ttft_ms: float | None
    ttft_at: float


def fresh_ttft(s: Stats | None, now: float, stale_s: float) -> float | None:
    """The deployment's time-to-first-token average, or None: never measured, or too long ago."""
    if s is None or s.ttft_ms is None or now - s.ttft_at >= stale_s:
        return None
    return s.ttft_ms


def weighted(deployments: Sequence[Deployment], rng: random.Random) -> list[Deployment]:
    if len(deployments) == 2:  # the common case, without building a pool
        a, b = deployments
        total = a.weight + b.weight
        if total <= 0 or rng.random() * total < a.weight:
            return [a, b]
        return [b, a]
    pool = list(deployments)
    out: list[Deployment] = []
    while pool:
        total = sum(d.weight for d in pool)
        if total <= 0:
            out.extend(pool)
            break
        r = rng.random() * total
        i = 0
        for i, d in enumerate(pool):  # noqa: B007 (i is used after the loop)
            r -= d.weight
            if r < 0:
                break
        out.append(pool.pop(i))
    return out


def order(
    strategy: str,
    deployments: Sequence[Deployment],
    stats: Callable[[Deployment], Stats | None],
    rng: random.Random,
    now: float = 0.0,
    stale_s: float = float("inf"),
) -> list[Deployment]:
    if len(deployments) < 2 or strategy == "priority":
        return list(deployments)
    if strategy == "weighted":
        return weighted(deployments, rng)
    if strategy == "least-busy":
        return sorted(deployments, key=lambda d: s.in_flight if (s := stats(d)) is not None else 0)
    if strategy == "least-latency":
        return sorted(deployments, key=lambda d: fresh_ttft(stats(d), now, stale_s) or 0.0)
    if strategy == "lowest-cost":
        return sorted(deployments, key=lambda d: d.cost_rank)
    raise ValueError(f"unknown routing strategy {strategy!r}")
