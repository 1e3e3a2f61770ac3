"""Budgets on a real stack: spend at a key, user and team level is checked before the
provider is called, exactly at the boundary (one request's cost below the limit, at it,
a nano-dollar over), with OpenAI's insufficient_quota 429 that its SDK does not retry.
Spend counters start from the ledger and live in Redis (shared by the workers) or, without
Redis, in the one worker. Rows are put in the ledger as the gateway writes them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import openai
import pytest
from google.protobuf import struct_pb2

from ghostllm.ledger import rows
from ghostllm.store import make_store
from ghostllm.v1 import chat_pb2, chat_pb2_grpc, openai_pb2
from tests.e2e.api.test_auth import HELLO, eventually
from tests.support.accounts import Accounts, stack_store
from tests.support.auth import ADMIN_KEY
from tests.support.http import Reply, check_error, request
from tests.support.postgres import migrated_schema
from tests.support.procs import Stack, stack_config, start_stack, stop
from tests.support.records import usage_record
from tests.support.redis import REDIS_URL, require_redis, unique_prefix

BUDGET = 0.01  # USD
BUDGET_NANO = 10_000_000
# dev-echo's prices (tests/support/procs.py): nano-USD a token.
PROMPT_NANO, COMPLETION_NANO = 1500, 2000


@pytest.fixture(scope="module", params=["redis+postgresql", "memory+sqlite"])
def stack(
    request: pytest.FixtureRequest, upstream_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("budgets")
    with contextlib.ExitStack() as cleanup:
        if request.param == "redis+postgresql":
            require_redis()
            config = stack_config(upstream_port, tmp)
            config["redis"] = {"url": REDIS_URL, "prefix": unique_prefix()}
            config["store"] = {"url": cleanup.enter_context(migrated_schema())}
        else:
            # Without Redis each worker keeps its own counters: one worker makes them exact.
            config = stack_config(upstream_port, tmp, workers=1)
        config["ledger"] = {"flush_interval_s": 0.1}
        s = start_stack(config, upstream_port, tmp)
        cleanup.callback(stop, s.proc)
        yield s


@pytest.fixture(scope="module")
def accounts(stack: Stack) -> Accounts:
    return Accounts(stack_store(stack.config))


def chat(stack: Stack, key: str) -> Reply:
    return request(stack.base_url + "/chat/completions", {"model": "dev-echo", "messages": HELLO}, key=key)


def cost_of(reply: Reply) -> int:
    usage = reply.json()["usage"]
    return int(usage["prompt_tokens"]) * PROMPT_NANO + int(usage["completion_tokens"]) * COMPLETION_NANO


def ledger_rows(stack: Stack, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async def go() -> list[tuple[Any, ...]]:
        async with make_store(stack_store(stack.config)) as store:
            return await store.fetch_all(sql, params)

    return asyncio.run(go())


def spent_before(stack: Stack, nano: int, *, key: str | None = None, user: str | None = None,
                 team: str | None = None, at: float | None = None) -> None:  # fmt: skip
    """A row in the ledger as an earlier request would have left it."""
    record = usage_record(
        request_id=f"earlier-{uuid.uuid4().hex}", started_at=at or time.time(), endpoint="chat", model="dev-echo",
        provider="dev", upstream_model="dev-echo", latency_ms=1.0, user_agent="test", api_key_id=key, user_id=user,
        team_id=team, cost_nano_usd=nano,
    )  # fmt: skip

    async def go() -> None:
        async with make_store(stack_store(stack.config)) as store:
            await store.execute_many(rows.INSERT, [rows.row(record)])

    asyncio.run(go())


def settled(stack: Stack, reply: Reply) -> None:
    """Until the request's row is in the ledger: its spend was counted before the row was written."""
    rid = reply.headers["x-request-id"]
    eventually(lambda: bool(ledger_rows(stack, "SELECT 1 FROM usage_logs WHERE request_id = ?", (rid,))))


@pytest.fixture(scope="module")
def one_cost(stack: Stack, accounts: Accounts) -> int:
    """What one HELLO to dev-echo costs (the same every time: the upstream echoes)."""
    _, key = accounts.key()
    first, second = chat(stack, key), chat(stack, key)
    assert first.status == second.status == 200 and cost_of(first) == cost_of(second) > 0
    return cost_of(first)


def check_quota(reply: Reply, level: str) -> dict[str, Any]:
    err = check_error(reply, 429, "insufficient_quota", "insufficient_quota")
    assert err["message"].startswith(f"You exceeded your current quota: {level} "), err
    assert reply.headers["x-should-retry"] == "false"
    return err


def budgeted(accounts: Accounts, level: str) -> tuple[str, str, dict[str, str]]:
    """A key whose `level` (key, user or team) has the budget: (clear key, level's id, ledger filter)."""
    if level == "key":
        key_id, key = accounts.key(budget_limit=BUDGET)
        return key, key_id, {"key": key_id}
    if level == "user":
        user = accounts.user(budget_limit=BUDGET)
        return accounts.key(user)[1], user, {"user": user}
    team = accounts.team(budget_limit=BUDGET)
    user = accounts.user(team=team)
    return accounts.key(user)[1], team, {"team": team}


NAMES = {"key": "API key", "user": "user", "team": "team"}


@pytest.mark.parametrize("level", ["key", "user", "team"])
def test_one_request_below_the_limit_is_the_last_admitted(
    stack: Stack, accounts: Accounts, one_cost: int, level: str
) -> None:
    key, level_id, where = budgeted(accounts, level)
    spent_before(stack, BUDGET_NANO - one_cost, **where)
    last = chat(stack, key)
    assert last.status == 200
    settled(stack, last)
    # Spend is now exactly the budget: refused, and before the provider was called.
    err = check_quota(chat(stack, key), NAMES[level])
    assert f"{NAMES[level]} {level_id} has spent $0.01 of its budget of $0.01." in err["message"]


@pytest.mark.parametrize("level", ["key", "user", "team"])
@pytest.mark.parametrize("over", [0, 1])
def test_at_or_over_the_limit_nothing_is_admitted(stack: Stack, accounts: Accounts, level: str, over: int) -> None:
    key, _, where = budgeted(accounts, level)
    spent_before(stack, BUDGET_NANO + over, **where)
    check_quota(chat(stack, key), NAMES[level])


def test_spend_adds_up_request_by_request(stack: Stack, accounts: Accounts, one_cost: int) -> None:
    # Room for two and a half requests: three are admitted (spend is below before each), then none.
    key_id, key = accounts.key(budget_limit=2.5 * one_cost / 1e9)
    for _ in range(3):
        reply = chat(stack, key)
        assert reply.status == 200
        settled(stack, reply)
    check_quota(chat(stack, key), "API key")
    total = ledger_rows(stack, "SELECT SUM(cost_nano_usd) FROM usage_logs WHERE api_key_id = ?", (key_id,))
    assert int(total[0][0]) == 3 * one_cost


def test_the_sdk_raises_rate_limit_error_and_does_not_retry(stack: Stack, accounts: Accounts) -> None:
    key_id, key = accounts.key(budget_limit=0.0)
    # The SDK's default retries: x-should-retry keeps it to one attempt.
    client = openai.OpenAI(base_url=stack.base_url, api_key=key, timeout=30)
    with client, pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="dev-echo", messages=HELLO)  # type: ignore[arg-type]
    assert raised.value.code == "insufficient_quota" and raised.value.type == "insufficient_quota"
    assert "You exceeded your current quota" in raised.value.message
    rid = raised.value.response.headers["x-request-id"]
    eventually(lambda: bool(ledger_rows(stack, "SELECT 1 FROM usage_logs WHERE request_id = ?", (rid,))))
    refused = ledger_rows(stack, "SELECT status, error_code FROM usage_logs WHERE api_key_id = ?", (key_id,))
    assert refused == [(429, "insufficient_quota")]


def test_a_period_counts_only_its_own_spend(stack: Stack, accounts: Accounts) -> None:
    yesterday = time.time() - 2 * 86400
    daily_id, daily = accounts.key(budget_limit=BUDGET, budget_period="daily")
    forever_id, forever = accounts.key(budget_limit=BUDGET)
    for key_id in (daily_id, forever_id):
        spent_before(stack, 2 * BUDGET_NANO, key=key_id, at=yesterday)
    assert chat(stack, daily).status == 200  # yesterday's spend is another day's
    err = check_quota(chat(stack, forever), "API key")
    assert "resets" not in err["message"]
    spent_before(stack, BUDGET_NANO, key=daily_id)
    # The counter is already started (from the ledger, at the first request): a row written
    # behind the gateway's back is seen when the counter is next read, not now.
    assert chat(stack, daily).status == 200


def test_raising_a_budget_admits_again(stack: Stack, accounts: Accounts) -> None:
    key_id, key = accounts.key(budget_limit=0.0)
    check_quota(chat(stack, key), "API key")
    root = stack.base_url.removesuffix("/v1")
    changed = request(f"{root}/admin/keys/{key_id}", {"budget_limit": 1.0}, key=ADMIN_KEY, method="PATCH")
    assert changed.status == 200, changed.body
    eventually(lambda: chat(stack, key).status == 200)


def test_a_model_that_does_not_exist_spends_nothing(stack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key(budget_limit=BUDGET)
    missing = request(stack.base_url + "/chat/completions", {"model": "nope", "messages": HELLO}, key=key)
    assert missing.status == 404
    assert chat(stack, key).status == 200


def test_grpc_gets_resource_exhausted(stack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key(budget_limit=0.0)
    message = chat_pb2.ChatCompletionRequest(
        model="dev-echo", messages=[openai_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value="Hi"))]
    )
    with grpc.insecure_channel(f"localhost:{stack.grpc_port}") as channel, pytest.raises(grpc.RpcError) as err:
        chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(
            message, metadata=(("authorization", f"Bearer {key}"),), timeout=30
        )
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "You exceeded your current quota" in str(err.value.details())
    body = json.loads(dict(err.value.trailing_metadata())["ghostllm-error"])
    assert body["error"]["code"] == "insufficient_quota"


def test_current_spend_is_the_ledgers_for_the_period(stack: Stack, accounts: Accounts, one_cost: int) -> None:
    team = accounts.team(budget_limit=BUDGET, budget_period="monthly")
    user = accounts.user(budget_limit=BUDGET, team=team)
    key_id, key = accounts.key(user, budget_limit=BUDGET, budget_period="daily")
    spent_before(stack, 5 * one_cost, key=key_id, user=user, team=team, at=time.time() - 40 * 86400)
    reply = chat(stack, key)
    assert reply.status == 200
    settled(stack, reply)
    root = stack.base_url.removesuffix("/v1")
    keys = request(f"{root}/admin/keys?user_id={user}", key=ADMIN_KEY).json()["keys"]
    assert [(k["id"], k["current_spend"], k["budget_period"]) for k in keys] == [(key_id, one_cost / 1e9, "daily")]
    # The user's budget never resets: the old spend counts too; the team's month does not hold it.
    assert request(f"{root}/admin/users/{user}", key=ADMIN_KEY).json()["current_spend"] == 6 * one_cost / 1e9
    teams = request(f"{root}/admin/teams", key=ADMIN_KEY).json()["teams"]
    assert [t["current_spend"] for t in teams if t["id"] == team] == [one_cost / 1e9]
    own = request(stack.base_url + "/keys", key=key).json()["keys"]
    assert [k["current_spend"] for k in own] == [one_cost / 1e9]
