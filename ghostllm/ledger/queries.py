"""Reading the ledger: totals over a period, filtered, grouped by one or more dimensions.

One query builder (`grouped`) serves the CLI's `ghostllm usage` (`usage`: one dimension)
and the usage API's reports (`report`: every grouping of GET /admin/usage and /v1/usage
from two statements). Column names reach the SQL only from the fixed tables below; every
value is a bound parameter.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple

from ghostllm.accounts import validation
from ghostllm.errors import InvalidRequest
from ghostllm.gateway.cost import NANO_PER_USD
from ghostllm.store import Executor, Store

# Dimension -> its column (day: per dialect, below).
DIMENSIONS = {
    "model": "model_id",
    "provider": "provider_id",
    "user": "user_id",
    "key": "api_key_id",
    "team": "team_id",
    "endpoint": "endpoint",
    "status": "status",
}
# Cheap per-row expressions (to_char costs more than the rest of the aggregation). PostgreSQL's
# must stay the expression of the statistics in 0005_usage_indexes.sql, which the planner matches.
_DAY = {"sqlite": "substr(created_at, 1, 10)", "postgresql": "(created_at AT TIME ZONE 'UTC')::date"}
# UsageFilter field -> its column.
_FILTERS = {
    "user_id": "user_id",
    "key_id": "api_key_id",
    "team_id": "team_id",
    "model": "model_id",
    "provider": "provider_id",
}
_SUMS = (
    "COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
    " COALESCE(SUM(total_tokens), 0), COALESCE(SUM(cost_nano_usd), 0)"
)
DEFAULT_DAYS = 30
# A filter value longer than this names nothing (model and provider ids are far shorter).
MAX_NAME = 256


@dataclass(frozen=True)
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_nano_usd: int = 0

    @property
    def cost_usd(self) -> float:
        return self.cost_nano_usd / NANO_PER_USD


@dataclass(frozen=True)
class UsageRow:
    group: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_nano_usd: int

    @property
    def cost_usd(self) -> float:
        return self.cost_nano_usd / NANO_PER_USD

    def to_dict(self) -> dict[str, object]:
        return {**self.__dict__, "cost_usd": self.cost_usd}


@dataclass(frozen=True)
class UsageFilter:
    """The rows of a period, both ends included, and of each id or name given."""

    start: datetime
    end: datetime
    user_id: str | None = None
    key_id: str | None = None
    team_id: str | None = None
    model: str | None = None
    provider: str | None = None


class Group(NamedTuple):
    """One group's key (None where the column is NULL) and its sums, in Totals' order (a
    tuple: a report adds up thousands of them)."""

    key: tuple[Any, ...]
    sums: tuple[int, int, int, int, int]

    @property
    def totals(self) -> Totals:
        return Totals(*self.sums)


@dataclass(frozen=True)
class UsageReport:
    """Each `by_*` list is (value, totals), by cost then requests, highest first; `daily`
    oldest first. A None value is rows without one (no user, no key)."""

    period: UsageFilter
    summary: Totals
    unique_users: int
    by_model: list[tuple[str, Totals]] = field(default_factory=list)
    by_provider: list[tuple[str, Totals]] = field(default_factory=list)
    by_user: list[tuple[str | None, Totals]] = field(default_factory=list)
    by_key: list[tuple[str | None, Totals]] = field(default_factory=list)
    daily: list[tuple[str, Totals]] = field(default_factory=list)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`30d`, `12h`, `90m`, or an ISO 8601 date/time."""
    now = now or datetime.now(UTC)
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text[:-1].isdigit() and text[-1:] in units:
        return now - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"since: expected 30d, 12h, 90m or an ISO 8601 time, got {text!r}", param="since"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _moment(param: str, text: str, *, end: bool) -> datetime:
    """A date alone covers the whole day: its first millisecond as a start, its last as an end
    (the ledger keeps milliseconds), so end_date=2026-01-15 includes the 15th."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime.combine(day, time(23, 59, 59, 999_000) if end else time(0), UTC)
    try:
        moment = validation.timestamp(param, text)
    except OverflowError:  # a time zone that moves it out of datetime's years 1 to 9999
        raise _out_of_range(param) from None
    assert moment is not None
    return moment


def _out_of_range(param: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: out of range", param=param, code="invalid_value")


def parse_filter(
    *,
    start_date: str | None = None,
    end_date: str | None = None,
    user_id: str | None = None,
    key_id: str | None = None,
    team_id: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    now: datetime | None = None,
) -> UsageFilter:
    """A filter from request text: every failure an InvalidRequest naming its parameter.
    Default period: the `DEFAULT_DAYS` days up to `end_date`, which defaults to now."""
    end = _moment("end_date", end_date, end=True) if end_date is not None else now or datetime.now(UTC)
    if start_date is not None:
        start = _moment("start_date", start_date, end=False)
    else:
        try:
            start = end - timedelta(days=DEFAULT_DAYS)
        except OverflowError:
            raise _out_of_range("end_date") from None
    if end < start:
        raise InvalidRequest(
            f"end_date: {_iso(end)} is before start_date {_iso(start)}", param="end_date", code="invalid_value"
        )
    return UsageFilter(
        start=start,
        end=end,
        user_id=None if user_id is None else validation.record_id("user_id", user_id),
        key_id=None if key_id is None else validation.record_id("key_id", key_id),
        team_id=None if team_id is None else validation.record_id("team_id", team_id),
        model=None if model is None else validation.text("model", model, max_length=MAX_NAME),
        provider=None if provider is None else validation.text("provider", provider, max_length=MAX_NAME),
    )


def _iso(moment: datetime) -> str:
    """As the ledger writes created_at (ledger/rows.py), so SQLite compares it as text:
    UTC, milliseconds (truncated, like the rows')."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rfc3339(moment: datetime) -> str:
    """For people: milliseconds only when there are any (2026-01-15T00:00:00Z)."""
    text = _iso(moment)
    return text.replace(".000Z", "Z")


def _where(f: UsageFilter) -> tuple[str, list[Any]]:
    clauses = ["created_at >= ?", "created_at <= ?"]
    params: list[Any] = [_iso(f.start), _iso(f.end)]
    for name, column in _FILTERS.items():
        value = getattr(f, name)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return " AND ".join(clauses), params


def _column(dialect: str, dimension: str) -> str:
    if dimension == "day":
        return _DAY[dialect]
    if dimension not in DIMENSIONS:
        known = ", ".join([*DIMENSIONS, "day"])
        raise InvalidRequest(f"by: unknown {dimension!r}; known: {known}", param="by")
    return DIMENSIONS[dimension]


def grouped_sql(dialect: str, f: UsageFilter, dims: Sequence[str]) -> tuple[str, list[Any]]:
    """One statement: the filter's rows grouped by `dims` (none: one row of totals)."""
    columns = [_column(dialect, d) for d in dims]
    where, params = _where(f)
    select = ", ".join([*columns, _SUMS])
    group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(columns)))}" if columns else ""
    return f"SELECT {select} FROM usage_logs WHERE {where}{group}", params


async def grouped(db: Store | Executor, dialect: str, f: UsageFilter, dims: Sequence[str]) -> list[Group]:
    sql, params = grouped_sql(dialect, f, dims)
    n = len(dims)
    out = []
    for found in await db.fetch_all(sql, params):
        # Days and ids are text on SQLite, a date and UUIDs on PostgreSQL: one form for every reader.
        key = tuple(str(v) if isinstance(v, date | uuid.UUID) else v for v in found[:n])
        r, p, c, t, cost = found[n:]
        out.append(Group(key, (int(r), int(p), int(c), int(t), int(cost))))
    return out


def _rollup(groups: Iterable[Group], index: int) -> dict[Any, Totals]:
    sums: dict[Any, list[int]] = {}
    for key, (r, p, c, t, cost) in groups:
        acc = sums.get(key[index])
        if acc is None:
            sums[key[index]] = [r, p, c, t, cost]
        else:
            acc[0] += r
            acc[1] += p
            acc[2] += c
            acc[3] += t
            acc[4] += cost
    return {k: Totals(*v) for k, v in sums.items()}


def _ranked(totals: dict[Any, Totals]) -> list[tuple[Any, Totals]]:
    return sorted(totals.items(), key=lambda kv: (-kv[1].cost_nano_usd, -kv[1].requests, str(kv[0] or "")))


async def report(store: Store, f: UsageFilter) -> UsageReport:
    """Every grouping of a report from two statements, each one scan of the period (the
    index that covers them: 0005_usage_indexes.sql): (model, provider, day) gives the
    summary, by_model, by_provider and the days; (key, user) gives by_key and by_user (a
    key has one user, so that grouping has about as many rows as keys). Python adds the
    groups up: exact integers, as few rows as the answer needs.

    On PostgreSQL both run in one read-only REPEATABLE READ transaction, so the lists add
    up to the summary even while rows arrive. SQLite's transactions take the write lock,
    so there the two are separate reads."""
    if store.dialect == "postgresql":
        async with store.transaction() as tx:
            await tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            mpd = await grouped(tx, store.dialect, f, ("model", "provider", "day"))
            ku = await grouped(tx, store.dialect, f, ("key", "user"))
    else:
        mpd = await grouped(store, store.dialect, f, ("model", "provider", "day"))
        ku = await grouped(store, store.dialect, f, ("key", "user"))
    by_user = _rollup(ku, 1)
    return UsageReport(
        period=f,
        summary=Totals(*(sum(g.sums[i] for g in mpd) for i in range(5))),
        unique_users=sum(1 for u in by_user if u is not None),
        by_model=_ranked(_rollup(mpd, 0)),
        by_provider=_ranked(_rollup(mpd, 1)),
        by_user=_ranked(by_user),
        by_key=_ranked(_rollup(ku, 0)),
        daily=sorted(_rollup(mpd, 2).items()),
    )


async def usage(store: Store, since: datetime, by: str | None = None) -> list[UsageRow]:
    """Totals since `since`; one row per value of `by` (None: one row for everything),
    by cost, highest first (days: oldest first)."""
    f = UsageFilter(start=since, end=datetime.now(UTC))
    found = await grouped(store, store.dialect, f, () if by is None else (by,))
    rows = [UsageRow("" if not g.key or g.key[0] is None else str(g.key[0]), *_fields(g.totals)) for g in found]
    if by == "day":
        return sorted(rows, key=lambda r: r.group)
    return sorted(rows, key=lambda r: (-r.cost_nano_usd, r.group))


def _fields(t: Totals) -> tuple[int, int, int, int, int]:
    return t.requests, t.prompt_tokens, t.completion_tokens, t.total_tokens, t.cost_nano_usd
