"""ghostllm.routing.strategies: priority, weighted (distribution within a stated tolerance,
seeded), least-busy, least-latency, lowest-cost; ties keep the configured order."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from ghostllm.config import ModelConfig, ProviderConfig
from ghostllm.providers.factory import make_provider
from ghostllm.routing.catalogue import Deployment
from ghostllm.routing.strategies import order, weighted

PROVIDER = make_provider(ProviderConfig(id="p", base_url="http://127.0.0.1:1/v1"))


def dep(name: str, weight: float = 1.0, cost: float = 0.0) -> Deployment:
    return Deployment(PROVIDER, name, f"p/{name}", weight, ModelConfig("m", "p"), cost)


@dataclass
class S:
    in_flight: int = 0
    ttft_ms: float | None = None
    ttft_at: float = 0.0


def test_priority_is_the_configured_order() -> None:
    ds = [dep("a"), dep("b"), dep("c")]
    assert order("priority", ds, lambda d: None, random.Random(1)) == ds


def test_weighted_distribution_within_two_percent_over_10000_picks() -> None:
    """Weights 3:1 put the first deployment first 75 % of the time (±2 points over 10,000
    seeded picks: the standard deviation is about 0.43 points)."""
    a, b = dep("a", 3), dep("b", 1)
    rng = random.Random(42)
    firsts = Counter(weighted([a, b], rng)[0].key for _ in range(10_000))
    assert abs(firsts["p/a"] / 10_000 - 0.75) < 0.02
    # Without replacement: both are always in the plan, once.
    assert all(sorted(d.key for d in weighted([a, b], rng)) == ["p/a", "p/b"] for _ in range(100))


def test_weighted_with_three_and_a_zero_weight() -> None:
    ds = [dep("a", 2), dep("b", 1), dep("c", 1), dep("z", 0)]
    rng = random.Random(7)
    firsts: Counter[str] = Counter()
    for _ in range(10_000):
        picked = weighted(ds, rng)
        assert sorted(d.key for d in picked) == sorted(d.key for d in ds)
        assert picked[-1].key == "p/z"  # weight 0: only after every weighted one
        firsts[picked[0].key] += 1
    assert abs(firsts["p/a"] / 10_000 - 0.5) < 0.02
    assert abs(firsts["p/b"] / 10_000 - 0.25) < 0.02


def test_weighted_all_zero_keeps_the_order() -> None:
    ds = [dep("a", 0), dep("b", 0)]
    assert weighted(ds, random.Random(1)) == ds


def test_least_busy_prefers_the_idle_one() -> None:
    ds = [dep("a"), dep("b"), dep("c")]
    stats = {"p/a": S(in_flight=4), "p/b": S(in_flight=0), "p/c": S(in_flight=1)}
    assert [d.key for d in order("least-busy", ds, lambda d: stats.get(d.key), random.Random())] == [
        "p/b", "p/c", "p/a",
    ]  # fmt: skip


def test_least_latency_prefers_the_fast_one_and_tries_the_unmeasured_first() -> None:
    ds = [dep("slow"), dep("fast"), dep("new")]
    stats = {"p/slow": S(ttft_ms=900.0), "p/fast": S(ttft_ms=40.0)}
    assert [d.key for d in order("least-latency", ds, lambda d: stats.get(d.key), random.Random())] == [
        "p/new", "p/fast", "p/slow",
    ]  # fmt: skip


def test_lowest_cost_and_stable_ties() -> None:
    ds = [dep("dear", cost=12.5), dep("cheap", cost=0.6), dep("cheap-too", cost=0.6)]
    assert [d.key for d in order("lowest-cost", ds, lambda d: None, random.Random())] == [
        "p/cheap", "p/cheap-too", "p/dear",
    ]  # fmt: skip
