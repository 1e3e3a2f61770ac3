"""The usage query builder (ledger/queries.py) and the usage API's scoping (api/usage.py),
without a store: parameters, the SQL it builds, how groups add up, who sees what."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from ghostllm.accounts.permissions import Permissions
from ghostllm.accounts.records import Role
from ghostllm.api.usage import own, to_proto
from ghostllm.auth.principal import MASTER, Principal, Via
from ghostllm.errors import InvalidRequest, PermissionDenied
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.exchange import Exchange
from ghostllm.gateway.stages import authorize
from ghostllm.ledger.queries import Totals, UsageFilter, grouped_sql, parse_filter, report, rfc3339, usage
from ghostllm.protocol.endpoints import Endpoint

NOW = datetime(2026, 12, 2, 5, 6, 7, 891_234, tzinfo=UTC)
U1, U2, K1, K2 = (f"0000000{i}-0000-4000-8000-000000000000" for i in range(1, 5))


def test_period_defaults_and_dates() -> None:
    f = parse_filter(now=NOW)
    assert (f.start, f.end) == (NOW - timedelta(days=30), NOW)
    f = parse_filter(start_date="2026-03-01", end_date="2026-03-03")
    assert rfc3339(f.start) == "2026-03-01T00:00:00Z"
    assert rfc3339(f.end) == "2026-03-03T23:59:59.999Z"  # a date alone: all of its day
    f = parse_filter(end_date="2026-03-31T12:00:00+02:00")
    assert f.end == datetime(2026, 3, 31, 10, tzinfo=UTC) and f.start == f.end - timedelta(days=30)
    f = parse_filter(start_date="2026-03-01T10:00:00")  # no offset: UTC
    assert f.start == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert parse_filter(start_date="2026-03-01", end_date="2026-03-01").end > f.start  # one whole day


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"start_date": "last week"}, "start_date"),
        ({"end_date": "2026-02-30"}, "end_date"),
        ({"start_date": "2026-03-02", "end_date": "2026-03-01"}, "end_date"),
        ({"end_date": "0001-01-10"}, "end_date"),  # its default start would be before year 1
        ({"start_date": "0001-01-01T00:00:00+01:00"}, "start_date"),
        ({"user_id": "not-an-id"}, "user_id"),
        ({"key_id": "1; DROP TABLE usage_logs"}, "key_id"),
        ({"team_id": ""}, "team_id"),
        ({"model": "x" * 257}, "model"),
        ({"provider": "tab\there"}, "provider"),
    ],
)
def test_bad_parameters_name_themselves(params: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_filter(**params)
    assert caught.value.param == param and caught.value.message.startswith(f"{param}:")


def test_ids_are_normalised() -> None:
    assert parse_filter(user_id="{" + U1.upper() + "}").user_id == U1


def test_sql_binds_every_value_and_names_only_known_columns() -> None:
    f = UsageFilter(start=NOW - timedelta(days=1), end=NOW, user_id=U1, model="m'; --", provider="p")
    sql, params = grouped_sql("postgresql", f, ("model", "day"))
    assert sql == (
        "SELECT model_id, (created_at AT TIME ZONE 'UTC')::date, COUNT(*), COALESCE(SUM(prompt_tokens), 0),"
        " COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(total_tokens), 0), COALESCE(SUM(cost_nano_usd), 0)"
        " FROM usage_logs WHERE created_at >= ? AND created_at <= ? AND user_id = ? AND model_id = ?"
        " AND provider_id = ? GROUP BY 1, 2"
    )
    assert params == ["2026-12-01T05:06:07.891Z", "2026-12-02T05:06:07.891Z", U1, "m'; --", "p"]
    sql, params = grouped_sql("sqlite", UsageFilter(start=NOW, end=NOW), ())
    assert "GROUP BY" not in sql and len(params) == 2
    assert "substr(created_at, 1, 10)" in grouped_sql("sqlite", f, ("day",))[0]
    with pytest.raises(InvalidRequest) as caught:
        grouped_sql("sqlite", f, ("model_id; DROP TABLE usage_logs",))
    assert caught.value.param == "by"


class FakeStore:
    """Answers each grouping with canned rows, as the backends return them."""

    dialect = "sqlite"

    def __init__(self, answers: dict[str, list[tuple[Any, ...]]]) -> None:
        self.answers = answers
        self.seen: list[str] = []

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.seen.append(sql)
        return next(rows for prefix, rows in self.answers.items() if sql.startswith(prefix))


MPD = [  # model, provider, day, requests, prompt, completion, total, cost
    ("a", "p1", "2026-03-01", 2, 10, 5, 15, 100),
    ("a", "p1", date(2026, 3, 2), 1, 1, 1, 2, 7),
    ("b", "p2", "2026-03-01", 1, 3, 0, 3, 1000),
    ("", "", "2026-03-02", 4, 0, 0, 0, 0),
]
KU = [  # key, user, sums
    (K1, U1, 2, 10, 5, 15, 100),
    (None, U1, 1, 1, 1, 2, 7),
    (K2, None, 1, 3, 0, 3, 1000),
    (None, None, 4, 0, 0, 0, 0),
]


def test_report_adds_groups_up_exactly() -> None:
    store = FakeStore({"SELECT model_id": MPD, "SELECT api_key_id": KU})
    r = asyncio.run(report(store, UsageFilter(start=NOW, end=NOW)))  # type: ignore[arg-type]
    assert len(store.seen) == 2  # two statements for every grouping
    assert r.summary == Totals(8, 14, 6, 20, 1107) and r.unique_users == 1
    assert r.by_model == [
        ("b", Totals(1, 3, 0, 3, 1000)),
        ("a", Totals(3, 11, 6, 17, 107)),
        ("", Totals(4, 0, 0, 0, 0)),
    ]
    assert [p for p, _ in r.by_provider] == ["p2", "p1", ""]
    assert r.daily == [("2026-03-01", Totals(3, 13, 5, 18, 1100)), ("2026-03-02", Totals(5, 1, 1, 2, 7))]
    assert r.by_user == [(None, Totals(5, 3, 0, 3, 1000)), (U1, Totals(3, 11, 6, 17, 107))]
    assert r.by_key == [(K2, Totals(1, 3, 0, 3, 1000)), (K1, Totals(2, 10, 5, 15, 100)), (None, Totals(5, 1, 1, 2, 7))]
    out = to_proto(r)
    assert out.summary.requests == 8 and out.summary.cost == 1107 / 1e9 and out.summary.unique_users == 1
    assert [(u.HasField("user_id"), u.user_id) for u in out.by_user] == [(False, ""), (True, U1)]


def test_cli_usage_keeps_its_rows() -> None:
    store = FakeStore({"SELECT model_id": [("a", 2, 1, 1, 2, 5), ("b", 1, 1, 1, 2, 50)]})
    found = asyncio.run(usage(store, NOW, "model"))  # type: ignore[arg-type]
    assert [(r.group, r.requests, r.cost_nano_usd) for r in found] == [("b", 1, 50), ("a", 2, 5)]
    totals = FakeStore({"SELECT COUNT": [(0, 0, 0, 0, 0)]})
    (everything,) = asyncio.run(usage(totals, NOW))  # type: ignore[arg-type]
    assert everything.group == "" and everything.requests == 0  # one row of totals, even of nothing


def key_principal(user: str | None, key: str | None, role: Role | None = Role.USER) -> Principal:
    return Principal(Via.KEY, user, None, key, role, Permissions())


def test_own_usage_scope() -> None:
    f = UsageFilter(start=NOW, end=NOW, key_id=K2, model="a")
    # A user's key, or a login token: the user's usage; the filters only narrow it.
    assert own(f, key_principal(U1, K1)) == UsageFilter(start=NOW, end=NOW, user_id=U1, key_id=K2, model="a")
    token = Principal(Via.TOKEN, U1, None, None, Role.USER, Permissions())
    assert own(UsageFilter(start=NOW, end=NOW), token) == UsageFilter(start=NOW, end=NOW, user_id=U1)
    # A service key: its own key's; another key's is nothing.
    assert own(UsageFilter(start=NOW, end=NOW), key_principal(None, K1, None)).key_id == K1  # type: ignore[union-attr]
    assert own(f, key_principal(None, K1, None)) is None
    with pytest.raises(RuntimeError):
        own(f, MASTER)


@pytest.mark.parametrize(
    ("who", "ok"),
    [
        (key_principal(U1, K1), True),
        (key_principal(None, K1, None), True),  # a service key: its own key's usage
        (Principal(Via.TOKEN, U1, None, None, Role.VIEWER, Permissions()), True),
        (key_principal(U1, K1, Role.ADMIN), True),  # an admin's key: their own, like anyone's
        (MASTER, False),  # nobody's: no usage of its own
        (Principal(Via.NONE, None, None, None, Role.ADMIN, Permissions()), False),  # auth off
    ],
)
def test_who_may_read_own_usage(who: Principal, ok: bool) -> None:
    ex = Exchange((), lambda _ex, _exc: None, RequestContext(), Endpoint.OWN_USAGE, dict, False)
    ex.principal = who
    ex.decode()
    try:
        asyncio.run(authorize(ex))
    except PermissionDenied as exc:
        assert not ok and "/admin/usage" in exc.message
    else:
        assert ok
