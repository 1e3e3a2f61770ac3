"""The usage API over REST and native gRPC, against a real stack (Envoy + 2 workers) on
each store: GET /admin/usage (admins and viewers, every filter and grouping) and GET
/v1/usage (strictly the caller's own). Known rows are written into the stack's ledger at
dates months back, so the stack's own rows (every call here makes one) never fall in the
reports' period; one test reads back a real request's row."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from ghostllm.gateway.usage import UsageRecord
from ghostllm.ledger import rows
from ghostllm.store import make_store
from ghostllm.v1 import usage_pb2, usage_pb2_grpc
from tests.support.accounts import Accounts, stack_store
from tests.support.auth import ADMIN_KEY
from tests.support.http import Reply, check_error, request
from tests.support.postgres import require_postgres, schema
from tests.support.procs import Stack, stack_config, start_stack, stop
from tests.support.records import usage_record

PASSWORD = "correct horse battery"
PERIOD = {"start_date": "2026-03-01", "end_date": "2026-03-03"}
NANO = 1_000_000_000


@dataclass
class Env:
    stack: Stack
    # Users u1 (keys k1a, k1b; also a login token), u2 (key k2), both in team t1;
    # ks: a service key of team t2 (no user); viewer and plain: keys of such users.
    ids: dict[str, str]
    keys: dict[str, str]
    u1_email: str


@contextlib.contextmanager
def _pg_schema() -> Iterator[str]:
    with schema(require_postgres()) as url:
        yield url


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def record(when: str, user: str | None, key: str | None, team: str | None, model: str, provider: str,
           prompt: int, completion: int, cost: int, endpoint: str = "chat.completions") -> UsageRecord:  # fmt: skip
    return usage_record(
        request_id=f"seed-{uuid.uuid4().hex[:8]}", started_at=at(when), endpoint=endpoint, model=model,
        provider=provider or None, upstream_model=model or None, prompt_tokens=prompt, completion_tokens=completion,
        latency_ms=12.5, client_ip="10.0.0.9", user_agent="t", request_bytes=0, api_key_id=key, user_id=user,
        team_id=team, cost_nano_usd=cost,
    )  # fmt: skip


def seed(config: dict[str, Any], ids: dict[str, str]) -> None:
    u1, u2, t1, t2 = ids["u1"], ids["u2"], ids["t1"], ids["t2"]
    k1a, k1b, k2, ks = ids["k1a"], ids["k1b"], ids["k2"], ids["ks"]
    batch = [
        record("2026-03-01T10:00:00", u1, k1a, t1, "gpt-a", "p1", 100, 50, 1000),
        record("2026-03-01T23:59:59.999", u1, k1b, t1, "gpt-b", "p2", 10, 5, 2 * NANO),
        record("2026-03-02T00:00:00", u2, k2, t1, "gpt-a", "p1", 7, 3, 333),
        record("2026-03-02T12:00:00", u1, None, t1, "gpt-a", "p1", 1, 1, 1),  # u1's login token
        record("2026-03-03T08:00:00", None, ks, t2, "gpt-b", "p2", 20, 0, 123_456_789),  # the service key
        record("2026-03-03T09:00:00", None, None, None, "", "", 0, 0, 0, "admin.read"),  # the master key
        # Just outside the period, on both sides.
        record("2026-02-28T23:59:59.999", u1, k1a, t1, "gpt-a", "p1", 1000, 1000, 5),
        record("2026-03-04T00:00:00", u2, k2, t1, "gpt-a", "p1", 1000, 1000, 5),
    ]

    async def go() -> None:
        async with make_store(stack_store(config)) as store:
            await store.execute_many(rows.INSERT, [rows.row(r) for r in batch])

    asyncio.run(go())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, upstream_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp(f"usage-{request.param}")
    config = stack_config(upstream_port, tmp)
    with contextlib.ExitStack() as cleanup:
        if request.param == "postgresql":
            config["store"] = {"url": cleanup.enter_context(_pg_schema())}
        yield _start(config, upstream_port, tmp, cleanup)


def _start(config: dict[str, Any], upstream_port: int, tmp: Path, cleanup: contextlib.ExitStack) -> Env:
    """Migrate, make the accounts, seed the ledger, then start the stack (stopped by `cleanup`)."""

    async def migrate() -> None:
        async with make_store(stack_store(config)) as store:
            await store.migrate()

    asyncio.run(migrate())
    email = f"u1-{uuid.uuid4().hex[:8]}@example.com"

    async def people(r: Any) -> tuple[dict[str, str], dict[str, str]]:
        t1 = (await r.create_team(f"t1-{uuid.uuid4().hex[:8]}")).id
        t2 = (await r.create_team(f"t2-{uuid.uuid4().hex[:8]}")).id
        u1 = (await r.create_user(email, team=t1, password=PASSWORD)).id
        u2 = (await r.create_user(f"u2-{uuid.uuid4().hex[:8]}@example.com", team=t1)).id
        viewer = (await r.create_user(f"v-{uuid.uuid4().hex[:8]}@example.com", role="viewer")).id
        plain = (await r.create_user(f"p-{uuid.uuid4().hex[:8]}@example.com")).id
        made = {
            "k1a": await r.create_key("k1a", user=u1),
            "k1b": await r.create_key("k1b", user=u1),
            "k2": await r.create_key("k2", user=u2),
            "ks": await r.create_key("ks", team=t2),
            "viewer": await r.create_key("viewer", user=viewer),
            "plain": await r.create_key("plain", user=plain),
        }
        ids = {"u1": u1, "u2": u2, "t1": t1, "t2": t2, **{name: k.key.id for name, k in made.items()}}
        return ids, {name: k.secret for name, k in made.items()}

    ids, keys = Accounts(stack_store(config)).run(people)
    seed(config, ids)
    stack = start_stack(config, upstream_port, tmp)
    cleanup.callback(stop, stack.proc)
    return Env(stack, ids, keys, email)


def get(env: Env, path: str, key: str | None = ADMIN_KEY, **params: str) -> Reply:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    return request(f"http://localhost:{env.stack.rest_port}{path}{query}", key=key)


def report(env: Env, path: str = "/admin/usage", key: str | None = ADMIN_KEY, **params: str) -> dict[str, Any]:
    reply = get(env, path, key, **params)
    assert reply.status == 200, reply.body[:1000]
    assert reply.headers["content-type"] == "application/json"
    body: dict[str, Any] = reply.json()
    return body


def entry(value: tuple[str, str] | None, requests: int, prompt: int, completion: int, nano: int) -> dict[str, Any]:
    out: dict[str, Any] = {"requests": requests, "tokens": prompt + completion, "cost": nano / NANO,
                           "prompt_tokens": prompt, "completion_tokens": completion}  # fmt: skip
    if value is not None:
        out[value[0]] = value[1]
    return out


def test_the_whole_report(env: Env) -> None:
    i = env.ids
    body = report(env, **PERIOD)
    assert list(body) == ["period", "summary", "by_model", "by_provider", "daily_breakdown", "by_user", "by_key"]
    assert body["period"] == {"start": "2026-03-01T00:00:00Z", "end": "2026-03-03T23:59:59.999Z"}
    cost = 1000 + 2 * NANO + 333 + 1 + 123_456_789
    assert body["summary"] == {"requests": 6, "tokens": 197, "cost": cost / NANO, "unique_users": 2,
                               "prompt_tokens": 138, "completion_tokens": 59}  # fmt: skip
    # Counts are JSON integers (doubles in the proto, printed without a fraction).
    assert isinstance(body["summary"]["requests"], int) and isinstance(body["summary"]["tokens"], int)
    assert body["by_model"] == [
        entry(("model", "gpt-b"), 2, 30, 5, 2 * NANO + 123_456_789),
        entry(("model", "gpt-a"), 3, 108, 54, 1334),
        entry(("model", ""), 1, 0, 0, 0),
    ]
    assert body["by_provider"] == [
        entry(("provider", "p2"), 2, 30, 5, 2 * NANO + 123_456_789),
        entry(("provider", "p1"), 3, 108, 54, 1334),
        entry(("provider", ""), 1, 0, 0, 0),
    ]
    assert body["daily_breakdown"] == [
        entry(("date", "2026-03-01"), 2, 110, 55, 2 * NANO + 1000),
        entry(("date", "2026-03-02"), 2, 8, 4, 334),
        entry(("date", "2026-03-03"), 2, 20, 0, 123_456_789),
    ]
    assert body["by_user"] == [
        entry(("user_id", i["u1"]), 3, 111, 56, 2 * NANO + 1001),
        entry(None, 2, 20, 0, 123_456_789),  # the service key's and the master key's rows
        entry(("user_id", i["u2"]), 1, 7, 3, 333),
    ]
    assert body["by_key"] == [
        entry(("key_id", i["k1b"]), 1, 10, 5, 2 * NANO),
        entry(("key_id", i["ks"]), 1, 20, 0, 123_456_789),
        entry(("key_id", i["k1a"]), 1, 100, 50, 1000),
        entry(("key_id", i["k2"]), 1, 7, 3, 333),
        entry(None, 2, 1, 1, 1),  # the login token's and the master key's rows
    ]


def summary(body: dict[str, Any]) -> tuple[int, int, int, int]:
    s = body["summary"]
    return s["requests"], s["tokens"], round(s["cost"] * NANO), s["unique_users"]


def test_each_filter(env: Env) -> None:
    i = env.ids
    cases: list[tuple[dict[str, str], tuple[int, int, int, int]]] = [
        ({"user_id": i["u1"]}, (3, 167, 2 * NANO + 1001, 1)),
        ({"key_id": i["k1a"]}, (1, 150, 1000, 1)),
        ({"key_id": i["ks"]}, (1, 20, 123_456_789, 0)),
        ({"team_id": i["t1"]}, (4, 177, 2 * NANO + 1334, 2)),
        ({"team_id": i["t2"]}, (1, 20, 123_456_789, 0)),
        ({"model": "gpt-a"}, (3, 162, 1334, 2)),
        ({"provider": "p2"}, (2, 35, 2 * NANO + 123_456_789, 1)),
        ({"team_id": i["t1"], "model": "gpt-b"}, (1, 15, 2 * NANO, 1)),
        ({"model": "nothing-like-it"}, (0, 0, 0, 0)),
        ({"user_id": str(uuid.uuid4())}, (0, 0, 0, 0)),
    ]
    for params, expected in cases:
        assert summary(report(env, **PERIOD, **params)) == expected, params
    one = report(env, **PERIOD, key_id=i["k1a"])
    assert [m["model"] for m in one["by_model"]] == ["gpt-a"] and [d["date"] for d in one["daily_breakdown"]] == [
        "2026-03-01"
    ]
    assert one["by_user"] == [entry(("user_id", i["u1"]), 1, 100, 50, 1000)]
    # An id in upper case or braces is the same id.
    assert summary(report(env, **PERIOD, user_id=i["u1"].upper())) == (3, 167, 2 * NANO + 1001, 1)
    empty = report(env, **PERIOD, model="nothing-like-it")
    assert [empty[k] for k in ("by_model", "by_provider", "daily_breakdown", "by_user", "by_key")] == [[]] * 5


def test_period_ends_are_included(env: Env) -> None:
    edges = report(env, start_date="2026-03-01T23:59:59.999Z", end_date="2026-03-02T00:00:00Z")
    assert summary(edges)[:3] == (2, 25, 2 * NANO + 333)
    assert edges["period"] == {"start": "2026-03-01T23:59:59.999Z", "end": "2026-03-02T00:00:00Z"}
    # An offset is honoured: 01:00+02:00 is 23:00 UTC the day before.
    shifted = report(env, start_date="2026-03-02T01:00:00+02:00", end_date="2026-03-03T09:30:00+02:00")
    assert shifted["period"] == {"start": "2026-03-01T23:00:00Z", "end": "2026-03-03T07:30:00Z"}
    assert summary(shifted)[0] == 3
    # No dates: the 30 days up to now; only end_date: the 30 days before it.
    before = datetime.now(UTC)
    default = report(env)["period"]
    end = datetime.fromisoformat(default["end"])
    assert before - timedelta(seconds=1) <= end <= datetime.now(UTC) + timedelta(seconds=1)
    assert datetime.fromisoformat(default["start"]) == end - timedelta(days=30)
    assert report(env, end_date="2026-03-31")["period"] == {
        "start": "2026-03-01T23:59:59.999Z",
        "end": "2026-03-31T23:59:59.999Z",
    }


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"start_date": "yesterday"}, "start_date"),
        ({"end_date": "2026-13-01"}, "end_date"),
        ({"start_date": ""}, "start_date"),
        ({"start_date": "2026-03-05", "end_date": "2026-03-04"}, "end_date"),
        ({"user_id": "alice@example.com"}, "user_id"),
        ({"key_id": "x'; DROP TABLE usage_logs;--"}, "key_id"),
        ({"team_id": "12345"}, "team_id"),
        ({"model": "m" * 300}, "model"),
        ({"provider": "p\u0001"}, "provider"),
        ({"start_date": "0001-01-01T00:00:00+05:00"}, "start_date"),
    ],
)
def test_bad_parameters_are_400_naming_them(env: Env, params: dict[str, str], param: str) -> None:
    for path, key in (("/admin/usage", ADMIN_KEY), ("/v1/usage", env.keys["k1a"])):
        err = check_error(get(env, path, key, **params), 400, "invalid_request_error")
        assert err["param"] == param, (path, err)
        assert err["message"].startswith(f"{param}:"), err


def test_who_may_read_admin_usage(env: Env) -> None:
    assert summary(report(env, key=env.keys["viewer"], **PERIOD))[0] == 6
    for key in (env.keys["plain"], env.keys["ks"]):  # a user-role key; a service key (no role)
        check_error(get(env, "/admin/usage", key, **PERIOD), 403, "permission_error", "permission_denied")
    check_error(get(env, "/admin/usage", None, **PERIOD), 401, code="invalid_api_key")
    reply = request(f"http://localhost:{env.stack.rest_port}/admin/usage", {}, method="POST")
    check_error(reply, 405, code="method_not_allowed")
    assert reply.headers["allow"] == "GET"


def test_own_usage_is_strictly_ones_own(env: Env) -> None:
    i, k = env.ids, env.keys
    u1 = (3, 167, 2 * NANO + 1001, 1)
    # A user's key acts for the user: every key of theirs, and their login token's rows.
    assert summary(report(env, "/v1/usage", k["k1a"], **PERIOD)) == u1
    login = request(
        f"http://localhost:{env.stack.rest_port}/v1/auth/login", {"email": env.u1_email, "password": PASSWORD}, key=None
    )
    assert login.status == 200, login.body
    token = login.json()["access_token"]
    own = report(env, "/v1/usage", token, **PERIOD)
    assert summary(own) == u1
    assert own["by_user"] == [entry(("user_id", i["u1"]), 3, 111, 56, 2 * NANO + 1001)]
    assert {e.get("key_id") for e in own["by_key"]} == {i["k1a"], i["k1b"], None}
    # Filters narrow within it, never out of it.
    assert summary(report(env, "/v1/usage", k["k1a"], **PERIOD, key_id=i["k1b"])) == (1, 15, 2 * NANO, 1)
    assert summary(report(env, "/v1/usage", k["k1a"], **PERIOD, model="gpt-a")) == (2, 152, 1001, 1)
    assert summary(report(env, "/v1/usage", k["k1a"], **PERIOD, key_id=i["k2"])) == (0, 0, 0, 0)
    assert summary(report(env, "/v1/usage", k["k2"], **PERIOD)) == (1, 10, 333, 1)
    # A service key: its own key's rows.
    assert summary(report(env, "/v1/usage", k["ks"], **PERIOD)) == (1, 20, 123_456_789, 0)
    assert summary(report(env, "/v1/usage", k["ks"], **PERIOD, key_id=i["k1a"])) == (0, 0, 0, 0)
    # Someone else's user or team: refused, not answered with one's own.
    for name, value in (("user_id", i["u2"]), ("user_id", i["u1"]), ("team_id", i["t1"])):
        err = check_error(get(env, "/v1/usage", k["k1a"], **PERIOD, **{name: value}), 400, "invalid_request_error")
        assert err["param"] == name and "/admin/usage" in err["message"]
    # The master key belongs to nobody: it has no usage of its own.
    err = check_error(get(env, "/v1/usage", ADMIN_KEY, **PERIOD), 403, "permission_error", "permission_denied")
    assert "/admin/usage" in err["message"]


def test_a_real_request_shows_in_own_usage(env: Env) -> None:
    async def new_key(r: Any) -> tuple[str, str]:
        user = await r.create_user(f"real-{uuid.uuid4().hex[:8]}@example.com")
        made = await r.create_key("real", user=user.id)
        return made.key.id, made.secret

    key_id, key = Accounts(stack_store(env.stack.config)).run(new_key)
    chat = request(
        f"http://localhost:{env.stack.rest_port}/v1/chat/completions",
        {"model": "dev-echo", "messages": [{"role": "user", "content": "count me"}]},
        key=key,
    )
    assert chat.status == 200, chat.body
    usage = chat.json()["usage"]
    deadline = time.monotonic() + 15
    while True:  # the ledger writes every 0.5 s, off the request path
        body = report(env, "/v1/usage", key, model="dev-echo")
        if body["summary"]["requests"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # dev-echo costs 1.5 $/1M in and 2.0 $/1M out: 1500 and 2000 nano-USD a token.
    nano = usage["prompt_tokens"] * 1500 + usage["completion_tokens"] * 2000
    assert summary(body) == (1, usage["total_tokens"], nano, 1)
    assert body["by_key"] == [entry(("key_id", key_id), 1, usage["prompt_tokens"], usage["completion_tokens"], nano)]


def test_grpc(env: Env) -> None:
    i = env.ids
    with grpc.insecure_channel(f"127.0.0.1:{env.stack.grpc_port}") as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
        got = stub.GetUsage(usage_pb2.UsageRequest(**PERIOD), metadata=admin, timeout=30)
        assert (got.summary.requests, got.summary.tokens, got.summary.unique_users) == (6, 197, 2)
        assert got.summary.cost == (1000 + 2 * NANO + 333 + 1 + 123_456_789) / NANO
        assert [m.model for m in got.by_model] == ["gpt-b", "gpt-a", ""]
        assert [(u.HasField("user_id"), u.user_id) for u in got.by_user] == [
            (True, i["u1"]),
            (False, ""),
            (True, i["u2"]),
        ]
        team = stub.GetUsage(usage_pb2.UsageRequest(**PERIOD, team_id=i["t1"]), metadata=admin, timeout=30)
        assert team.summary.requests == 4
        own = stub.GetOwnUsage(
            usage_pb2.UsageRequest(**PERIOD), metadata=(("authorization", f"Bearer {env.keys['k2']}"),), timeout=30
        )
        assert (own.summary.requests, [k.key_id for k in own.by_key]) == (1, [i["k2"]])
        bad, denied = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED
        calls: list[tuple[Any, usage_pb2.UsageRequest, str, grpc.StatusCode]] = [
            (stub.GetUsage, usage_pb2.UsageRequest(start_date="soon"), ADMIN_KEY, bad),
            (stub.GetUsage, usage_pb2.UsageRequest(user_id="x"), ADMIN_KEY, bad),
            (stub.GetUsage, usage_pb2.UsageRequest(), env.keys["plain"], denied),
            (stub.GetOwnUsage, usage_pb2.UsageRequest(), ADMIN_KEY, denied),
            (stub.GetOwnUsage, usage_pb2.UsageRequest(team_id=i["t1"]), env.keys["k2"], bad),
            (stub.GetUsage, usage_pb2.UsageRequest(), "gk-" + "Z" * 43, grpc.StatusCode.UNAUTHENTICATED),
        ]  # fmt: skip
        for method, req, key, code in calls:
            with pytest.raises(grpc.RpcError) as caught:
                method(req, metadata=(("authorization", f"Bearer {key}"),), timeout=30)
            assert caught.value.code() is code, (req, caught.value.details())


def test_migrations_made_the_report_indexes(env: Env) -> None:
    """The indexes 0005_usage_indexes.sql gives the queries, on this backend."""

    async def names() -> tuple[str, set[str]]:
        async with make_store(stack_store(env.stack.config)) as store:
            if store.dialect == "sqlite":
                found = await store.fetch_all("SELECT name FROM sqlite_master WHERE tbl_name = 'usage_logs'")
            else:
                found = await store.fetch_all(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'usage_logs'"
                )
            return store.dialect, {str(n) for (n,) in found}

    dialect, indexes = asyncio.run(names())
    assert {"idx_usage_logs_user_created", "idx_usage_logs_key_created", "idx_usage_logs_team_created",
            "idx_usage_logs_model_created"} <= indexes  # fmt: skip
    if dialect == "postgresql":
        assert "idx_usage_logs_period" in indexes and "idx_usage_logs_created" not in indexes
    else:
        assert {"idx_usage_logs_created", "idx_usage_logs_provider_created"} <= indexes
