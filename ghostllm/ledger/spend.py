"""What a key, user or team has spent, from the ledger: the durable copy of the spend
counters, read when a counter starts (a new period, a counter expired or lost) and never
per request. Each query is one index range scan (usage_logs(<column>, created_at))."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from ghostllm.ledger.rows import stamp
from ghostllm.limits.periods import period_at
from ghostllm.protocol.usage import NANO_PER_USD
from ghostllm.store import Store

# A level's kind (as the limiter names it) -> its column. Only these names reach the SQL.
COLUMNS = {"API key": "api_key_id", "user": "user_id", "team": "team_id"}


async def _spent(store: Store, column: str, ids: Sequence[str], since: datetime | None) -> dict[str, int]:
    """Nano-USD by id since `since` (None: ever): one query, one index range scan per id."""
    marks = ", ".join("?" * len(ids))
    sql = f"SELECT {column}, SUM(cost_nano_usd) FROM usage_logs WHERE {column} IN ({marks})"
    params: tuple[str, ...] = tuple(ids)
    if since is not None:
        sql += " AND created_at >= ?"
        params += (stamp(since.timestamp()),)
    return {str(id_): int(total or 0) for id_, total in await store.fetch_all(sql + f" GROUP BY {column}", params)}


def spent_reader(store: Store) -> Callable[[str, str, datetime | None], Awaitable[int]]:
    async def spent(kind: str, id_: str, since: datetime | None) -> int:
        return (await _spent(store, COLUMNS[kind], [id_], since)).get(id_, 0)

    return spent


class _Budgeted(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def budget_period(self) -> str | None: ...
    @property
    def current_spend(self) -> float: ...


R = TypeVar("R", bound=_Budgeted)


async def with_current_spend(store: Store, kind: str, records: Sequence[R]) -> list[R]:
    """The records with `current_spend` (USD) as the ledger has it for each one's current
    budget period: one query per period among them (at most four), not one per record."""
    column = COLUMNS[kind]
    now = datetime.now(UTC)
    by_period: dict[str | None, list[str]] = defaultdict(list)
    for r in records:
        by_period[r.budget_period].append(r.id)
    spent: dict[str, int] = {}
    for period, ids in by_period.items():
        spent |= await _spent(store, column, ids, period_at(period, now).since)
    return [dataclasses.replace(r, current_spend=spent.get(r.id, 0) / NANO_PER_USD) for r in records]  # type: ignore[type-var]
