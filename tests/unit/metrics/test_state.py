"""Worker state read into the families: gauges as they are, others' totals as increases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ghostllm.accounts.permissions import Permissions
from ghostllm.auth.principal import Budget, Principal, Via
from ghostllm.config import LimitsConfig, StoreConfig
from ghostllm.errors import QuotaExceeded, RateLimited
from ghostllm.ledger.writer import Ledger
from ghostllm.limits.limiter import Limiter
from ghostllm.limits.memory import MemoryBackend
from ghostllm.metrics.families import Families
from ghostllm.metrics.state import Increase, WorkerState
from ghostllm.metrics.streams import ActiveStreams
from ghostllm.store import make_store
from tests.unit.metrics.test_tally import BASE


def principal(**fields: object) -> Principal:
    base: dict[str, object] = {"via": Via.KEY, "user_id": "u", "team_id": None, "key_id": "k", "role": None}
    return Principal(permissions=Permissions(), **{**base, **fields})  # type: ignore[arg-type]


def test_increase_is_what_grew_since_the_last_look() -> None:
    seen = Increase()
    assert [seen("a", 3), seen("a", 3), seen("a", 5), seen("b", 1)] == [3, 0, 2, 1]


def test_refusals_by_limit_and_level_counted_once_each() -> None:
    limiter = Limiter(LimitsConfig(user_parallel=1), MemoryBackend(60_000))
    registry = CollectorRegistry()
    families = Families(registry)
    state = WorkerState(ActiveStreams(), limiter=limiter)

    async def go() -> None:
        await limiter.admit(principal(rate_limit=1), ("r1", 1.0), lambda: 0)
        with pytest.raises(RateLimited):  # the key's requests per minute
            await limiter.admit(principal(rate_limit=1), ("r2", 2.0), lambda: 0)
        with pytest.raises(RateLimited):  # the user's parallel requests (r1 is in flight)
            await limiter.admit(principal(key_id="k2"), ("r3", 3.0), lambda: 0)

    asyncio.run(go())
    state.publish(families)
    state.publish(families)  # nothing new: nothing added
    got = {
        (s.labels["limit"], s.labels["level"]): s.value
        for m in registry.collect()
        if m.name == "ghostllm_ratelimit_rejections"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert got == {("requests", "key"): 1, ("parallel", "user"): 1}


def test_budget_refusals_by_level() -> None:
    limiter = Limiter(LimitsConfig(), MemoryBackend(60_000))
    registry = CollectorRegistry()
    families = Families(registry)

    async def go() -> None:
        with pytest.raises(QuotaExceeded):
            await limiter.admit(principal(key_budget=Budget(0)), ("r1", 1.0), lambda: 0)

    asyncio.run(go())
    WorkerState(ActiveStreams(), limiter=limiter).publish(families)
    assert registry.get_sample_value("ghostllm_budget_rejections_total", {"level": "key"}) == 1


def test_the_ledger_queue_and_rows(tmp_path: Path) -> None:
    ledger = Ledger(make_store(StoreConfig(url=f"sqlite:///{tmp_path / 'g.db'}")), tmp_path / "spool")
    ledger(BASE)
    ledger(BASE)
    registry = CollectorRegistry()
    families = Families(registry)
    WorkerState(ActiveStreams(), ledger=ledger).publish(families)
    assert registry.get_sample_value("ghostllm_ledger_queue_rows") == 2
    assert registry.get_sample_value("ghostllm_ledger_spool_files") == 0
    assert registry.get_sample_value("ghostllm_ledger_rows_total", {"outcome": "written"}) == 0
