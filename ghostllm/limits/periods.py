"""Budget periods: which spend counter a request is checked against now.

A budget with a period (daily, weekly, monthly) starts over at the period's start in UTC
(midnight, Monday midnight, the 1st); one without never does. Every period has its own
counter, named by a tag (`d2026-12-02`, `w2026-11-30`, `m2026-12`, `all`), so a new
period needs no reset: its counter starts from what the ledger holds for it (nothing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

PERIODS = ("daily", "weekly", "monthly")
# A counter outlives its period's end by this much, for requests settling across the edge.
COUNTER_GRACE_S = 3600
# And lives at most this long: then it is read again from the ledger (the durable copy), which
# heals whatever spend a Redis outage kept from it.
COUNTER_REFRESH_S = 3600
INF = float("inf")


@dataclass(frozen=True, slots=True)
class Period:
    tag: str
    # "daily", "weekly", "monthly"; "" for all time.
    name: str
    # The period's start (None: all time), what the ledger sums from.
    since: datetime | None
    # When the period ends, epoch seconds (inf: never).
    until: float

    def expires_ms(self) -> int:
        """When a counter started now may go (epoch ms)."""
        return int(min(self.until + COUNTER_GRACE_S, time.time() + COUNTER_REFRESH_S) * 1000)

    @property
    def ends_at(self) -> str:
        return datetime.fromtimestamp(self.until, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if self.until != INF else ""


def period_at(period: str | None, now: datetime) -> Period:
    if period is None:
        return Period("all", "", None, INF)
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return Period(f"d{day:%Y-%m-%d}", period, day, (day + timedelta(days=1)).timestamp())
    if period == "weekly":
        start = day - timedelta(days=day.weekday())
        return Period(f"w{start:%Y-%m-%d}", period, start, (start + timedelta(days=7)).timestamp())
    if period == "monthly":
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return Period(f"m{start:%Y-%m}", period, start, end.timestamp())
    raise ValueError(f"unknown budget period {period!r}; known: {', '.join(PERIODS)}")


class Periods:
    """The current period of each kind, worked out again only when one ends (a request
    reads it without building a datetime)."""

    def __init__(self) -> None:
        self._current: dict[str | None, Period] = {}

    def current(self, period: str | None) -> Period:
        p = self._current.get(period)
        if p is None or time.time() >= p.until:
            p = self._current[period] = period_at(period, datetime.now(UTC))
        return p
