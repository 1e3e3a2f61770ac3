"""Budgets without Redis: periods and their counters, the exact boundary (spend below,
at and over the limit), where a counter starts (the ledger), and what an unreadable
ledger means under open and closed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from ghostllm.accounts.permissions import Permissions
from ghostllm.auth.principal import Budget, Principal, Via, nano_usd
from ghostllm.config import LimitsConfig
from ghostllm.errors import QuotaExceeded, RateLimited, ServiceUnavailable
from ghostllm.limits.core import usd
from ghostllm.limits.limiter import Limiter
from ghostllm.limits.memory import MemoryBackend
from ghostllm.limits.periods import period_at

COST = 1_234  # nano-USD, one request


def principal(**fields: object) -> Principal:
    base: dict[str, object] = {"via": Via.KEY, "user_id": "u", "team_id": "t", "key_id": "k", "role": None}
    return Principal(permissions=Permissions(), **{**base, **fields})  # type: ignore[arg-type]


class Ledger:
    """What the ledger holds per (level, id), and how often it was read."""

    def __init__(self, spent: dict[tuple[str, str], int] | None = None, fail: bool = False) -> None:
        self.spent = spent or {}
        self.reads: list[tuple[str, str, datetime | None]] = []
        self.fail = fail

    async def __call__(self, kind: str, id_: str, since: datetime | None) -> int:
        self.reads.append((kind, id_, since))
        if self.fail:
            raise OSError("the store is away")
        return self.spent.get((kind, id_), 0)


def run(limiter: Limiter, p: Principal, n: int, cost: int = COST) -> list[str]:
    """n requests one after another, each settling `cost`; what each got."""

    async def go() -> list[str]:
        got: list[str] = []
        for i in range(n):
            try:
                await limiter.admit(p, (f"r{i}", float(i)), lambda: 0)
            except QuotaExceeded:
                got.append("quota")
                continue
            got.append("ok")
            limiter.settle((f"r{i}", float(i)), 10, cost)
        return got

    return asyncio.run(go())


@pytest.mark.parametrize("level", ["key", "user", "team"])
@pytest.mark.parametrize(
    ("spent", "expected"),
    [
        (1_000_000 - COST, ["ok", "quota"]),  # one request's cost below: that one, then no more
        (1_000_000, ["quota"]),  # at the limit
        (1_000_000 + 1, ["quota"]),  # a nano-dollar over
        (0, ["ok"] * 3),  # far below
    ],
)
def test_the_boundary_is_exact_at_every_level(level: str, spent: int, expected: list[str]) -> None:
    kind, id_ = {"key": ("API key", "k"), "user": ("user", "u"), "team": ("team", "t")}[level]
    budget = Budget(1_000_000)  # $0.001
    p = principal(**{f"{level}_budget": budget})
    ledger = Ledger({(kind, id_): spent})
    assert run(Limiter(LimitsConfig(), MemoryBackend(60_000), ledger), p, len(expected)) == expected
    # The ledger is read once, when the counter starts; after that the counter is kept here.
    assert ledger.reads == [(kind, id_, None)]


def test_a_zero_budget_admits_nothing_and_no_budget_admits_all() -> None:
    limiter = Limiter(LimitsConfig(), MemoryBackend(60_000), Ledger())
    assert run(limiter, principal(key_budget=Budget(0)), 2) == ["quota", "quota"]
    assert run(limiter, principal(), 3) == ["ok"] * 3


def test_the_refusal_reads_like_openai_and_says_which_budget() -> None:
    limiter = Limiter(LimitsConfig(), MemoryBackend(60_000), Ledger({("team", "t"): 2_500_000_000}))
    p = principal(team_budget=Budget(nano_usd(2.5) or 0, "monthly"), key_budget=Budget(10**12))

    async def go() -> QuotaExceeded:
        with pytest.raises(QuotaExceeded) as err:
            await limiter.admit(p, ("r", 1.0), lambda: 0)
        return err.value

    err = asyncio.run(go())
    assert err.http_status == 429 and err.code == "insufficient_quota" and err.error_type == "insufficient_quota"
    assert err.message.startswith("You exceeded your current quota: team t has spent $2.50 of its monthly budget")
    assert "It resets at " in err.message and err.message.endswith("-01T00:00:00Z.")
    # The OpenAI SDKs retry a 429 unless told not to; waiting does not bring a budget back.
    assert ("x-should-retry", "false") in err.headers


def test_a_budget_refusal_counts_no_request() -> None:
    limiter = Limiter(LimitsConfig(), MemoryBackend(60_000), Ledger({("API key", "k"): 5}))
    p = principal(key_budget=Budget(5), rate_limit=1)
    assert run(limiter, p, 3) == ["quota"] * 3
    # The budget goes up (an admin raised it): the one request a minute is still there.
    raised = principal(key_budget=Budget(10**9), rate_limit=1)

    async def go() -> None:
        await limiter.admit(raised, ("a", 1.0), lambda: 0)
        with pytest.raises(RateLimited):
            await limiter.admit(raised, ("b", 2.0), lambda: 0)

    asyncio.run(go())


def test_each_period_has_its_own_counter_read_from_its_start() -> None:
    ledger = Ledger({("API key", "k"): 999})
    limiter = Limiter(LimitsConfig(), MemoryBackend(60_000), ledger)
    run(limiter, principal(key_budget=Budget(1000, "daily")), 1)
    run(limiter, principal(key_budget=Budget(1000, "monthly")), 1)
    (_, _, day), (_, _, month) = ledger.reads
    assert day is not None and month is not None
    assert (day.hour, day.minute, day.tzinfo) == (0, 0, UTC) and month.day == 1 and month <= day


def test_periods_start_in_utc_and_roll_over() -> None:
    at = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)  # a Thursday
    d, w, m, a = (period_at(p, at) for p in ("daily", "weekly", "monthly", None))
    assert (d.tag, w.tag, m.tag, a.tag) == ("d2026-12-31", "w2026-12-28", "m2026-12", "all")
    assert d.ends_at == "2027-01-01T00:00:00Z" and m.ends_at == "2027-01-01T00:00:00Z"
    assert w.ends_at == "2027-01-04T00:00:00Z" and a.since is None and a.ends_at == ""
    nxt = datetime(2027, 1, 1, tzinfo=UTC)
    assert period_at("daily", nxt).tag == "d2027-01-01" and period_at("monthly", nxt).tag == "m2027-01"
    with pytest.raises(ValueError, match="yearly"):
        period_at("yearly", at)


def test_an_unreadable_ledger_is_the_backend_policy() -> None:
    p = principal(key_budget=Budget(10**9))
    opened = Limiter(LimitsConfig(on_redis_error="open"), MemoryBackend(60_000), Ledger(fail=True))
    closed = Limiter(LimitsConfig(on_redis_error="closed"), MemoryBackend(60_000), Ledger(fail=True))
    assert run(opened, p, 2) == ["ok", "ok"]

    async def go() -> None:
        with pytest.raises(ServiceUnavailable):
            await closed.admit(p, ("r", 1.0), lambda: 0)

    asyncio.run(go())


@pytest.mark.parametrize(
    ("nano", "text"),
    [(0, "$0.00"), (2_500_000_000, "$2.50"), (1_234, "$0.000001234"), (10**9 * 12 + 340_000_000, "$12.34")],
)
def test_dollars_are_exact(nano: int, text: str) -> None:
    assert usd(nano) == text


def test_budgets_in_dollars_become_exact_nano_dollars() -> None:
    assert nano_usd(0.1) == 100_000_000 and nano_usd(25.0) == 25_000_000_000 and nano_usd(None) is None
    assert nano_usd(0.000000001) == 1


def test_a_principal_is_planned_once_and_again_when_its_period_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = Limiter(LimitsConfig(), MemoryBackend(60_000))
    p = principal(key_budget=Budget(10**9, "daily"), rate_limit=5)
    first = limiter._plan(p)
    assert limiter._plan(p) is first  # the same principal: its levels are not worked out again
    assert limiter._plan(principal(key_budget=Budget(10**9, "daily"), rate_limit=6)) is not first
    (level,) = first.levels
    assert level.period is not None and first.until == level.period.until
    # Past the day's end the plan, and the spend counter it names, are the next day's.
    later = level.period.until + 1

    class Clock(datetime):
        @classmethod
        def now(cls, tz: object = None) -> Clock:
            return cls.fromtimestamp(later, UTC)

    monkeypatch.setattr("time.time", lambda: later)
    monkeypatch.setattr("ghostllm.limits.periods.datetime", Clock)
    again = limiter._plan(p)
    assert again is not first and again.levels[0].spend_key != level.spend_key
