"""Reading the ledger: totals over a period, grouped by one dimension (the CLI's
`ghostllm usage`; the admin API's usage queries build on the same SQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ghostllm.errors import InvalidRequest
from ghostllm.gateway.cost import NANO_PER_USD
from ghostllm.ledger.rows import stamp
from ghostllm.store import Store

# Dimension -> its column (day: per dialect, below). Names only from this table reach the SQL.
DIMENSIONS = {
    "model": "model_id",
    "provider": "provider_id",
    "user": "user_id",
    "key": "api_key_id",
    "team": "team_id",
    "endpoint": "endpoint",
    "status": "status",
}
_DAY = {"sqlite": "substr(created_at, 1, 10)", "postgresql": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"}


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


async def usage(store: Store, since: datetime, by: str | None = None) -> list[UsageRow]:
    """Totals since `since`; one row per value of `by` (None: one row for everything)."""
    if by is not None and by != "day" and by not in DIMENSIONS:
        known = ", ".join([*DIMENSIONS, "day"])
        raise InvalidRequest(f"by: unknown {by!r}; known: {known}", param="by")
    group = "''" if by is None else _DAY[store.dialect] if by == "day" else DIMENSIONS[by]
    sql = (
        f"SELECT {group} AS g, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
        f" COALESCE(SUM(total_tokens), 0), COALESCE(SUM(cost_nano_usd), 0) FROM usage_logs"
        f" WHERE created_at >= ? GROUP BY g ORDER BY {'g' if by == 'day' else '6 DESC, g'}"
    )
    found = await store.fetch_all(sql, (stamp(since.timestamp()),))
    return [
        UsageRow("" if g is None else str(g), int(n), int(p), int(c), int(t), int(cost))
        for g, n, p, c, t, cost in found
    ]
