"""Rate limits on a two-worker stack sharing the real Redis: N concurrent requests against
a limit of L admit exactly L whichever worker serves them (requests, tokens, parallel
slots; key and team), the 429s carry OpenAI's headers and message, and a Redis that goes
away gives the configured behaviour without a hang. No timing is asserted."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
from google.protobuf import struct_pb2

from ghostllm.v1 import chat_pb2, chat_pb2_grpc, openai_pb2
from tests.e2e.api.test_auth import HELLO, eventually, sdk
from tests.support.accounts import Accounts, stack_store
from tests.support.http import Reply, check_error, request
from tests.support.procs import Stack, stack_config, start_stack, stop
from tests.support.redis import REDIS_URL, require_redis, unique_prefix
from tests.support.tcpproxy import TcpProxy, tcp_proxy

RATE_HEADERS = ("limit", "remaining", "reset")


def limited_stack(upstream_port: int, tmp: Path, redis_url: str, **limits: Any) -> Stack:
    require_redis()
    config = stack_config(upstream_port, tmp)
    config["redis"] = {"url": redis_url, "prefix": unique_prefix()}
    config["limits"] = limits
    return start_stack(config, upstream_port, tmp)


@pytest.fixture(scope="module")
def rstack(upstream_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = limited_stack(upstream_port, tmp_path_factory.mktemp("limits"), REDIS_URL)
    try:
        yield s
    finally:
        stop(s.proc)


@pytest.fixture(scope="module")
def accounts(rstack: Stack) -> Accounts:
    return Accounts(stack_store(rstack.config))


def chat(stack: Stack, key: str, **body: Any) -> Reply:
    return request(stack.base_url + "/chat/completions", {"model": "dev-echo", "messages": HELLO, **body}, key=key)


def together(n: int, call: Callable[[], Reply]) -> list[Reply]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: call(), range(n)))


def check_429(reply: Reply, kind: str) -> dict[str, Any]:
    err = check_error(reply, 429, "rate_limit_error", "rate_limit_exceeded")
    assert kind in err["message"], err
    assert int(reply.headers["retry-after"]) >= 1
    return err


def test_requests_per_minute_are_exact_across_workers(rstack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key(rate_limit=5)
    replies = together(16, lambda: chat(rstack, key))
    ok = [r for r in replies if r.status == 200]
    refused = [r for r in replies if r.status != 200]
    assert len(ok) == 5 and len(refused) == 11
    for r in ok:
        assert r.headers["x-ratelimit-limit-requests"] == "5"
        assert 0 <= int(r.headers["x-ratelimit-remaining-requests"]) < 5
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == [0, 1, 2, 3, 4]
    for r in refused:
        err = check_429(r, "requests per minute (RPM)")
        assert "Limit 5, Used 5, Requested 1" in err["message"]
        assert r.headers["x-ratelimit-limit-requests"] == "5" and r.headers["x-ratelimit-remaining-requests"] == "0"
        assert all(f"x-ratelimit-{h}-requests" in r.headers for h in RATE_HEADERS)
    with sdk(rstack, key) as client, pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="dev-echo", messages=HELLO)
    assert raised.value.status_code == 429 and raised.value.code == "rate_limit_exceeded"
    assert "Rate limit reached for requests per minute (RPM) on API key" in raised.value.message
    assert raised.value.response.headers["x-ratelimit-limit-requests"] == "5"


def test_streams_are_limited_too(rstack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key(rate_limit=2)
    replies = together(6, lambda: chat(rstack, key, stream=True))
    assert sorted(r.status for r in replies) == [200, 200, 429, 429, 429, 429]
    for r in replies:
        if r.status == 200:
            assert r.events()[-1] == "[DONE]" and r.headers["x-ratelimit-limit-requests"] == "2"
        else:
            check_429(r, "RPM")


def test_a_team_limit_covers_all_its_keys(rstack: Stack, accounts: Accounts) -> None:
    team = accounts.run(lambda r: r.create_team(f"team-{uuid.uuid4().hex[:8]}", rate_limit=4)).id
    keys = [accounts.key(team=team)[1] for _ in range(3)]
    replies = together(12, lambda: chat(rstack, keys[uuid.uuid4().int % 3]))
    assert sum(r.status == 200 for r in replies) == 4
    for r in replies:
        if r.status != 200:
            assert f"on team {team}" in check_429(r, "RPM")["message"]


def test_tokens_per_minute_reserve_then_settle(rstack: Stack, accounts: Accounts) -> None:
    # Each request reserves its prompt (~10 tokens) plus max_tokens 300: three fit in 1000, a fourth does not.
    # Slow streams, so no request has settled (and given back) before the last one is checked.
    _, key = accounts.key(tpm_limit=1000)
    replies = together(8, lambda: chat(rstack, key, model="slow-chunks-100", stream=True, max_tokens=300))
    assert sum(r.status == 200 for r in replies) == 3
    for r in replies:
        if r.status == 200:
            assert r.headers["x-ratelimit-limit-tokens"] == "1000"
        else:
            err = check_429(r, "tokens per minute (TPM)")
            assert "Limit 1000" in err["message"] and r.headers["x-ratelimit-limit-tokens"] == "1000"
    # They used far less than reserved (about 40 tokens each): the settle gave the rest back, so
    # another fits now, long before the window (a minute) is over.
    eventually(lambda: chat(rstack, key, max_tokens=300).status == 200)
    # One request larger than the whole limit is told so.
    err = check_429(chat(rstack, key, max_tokens=5000), "TPM")
    assert err["message"].startswith("Request too large for tokens per minute (TPM)")


def test_max_parallel_with_slow_streams(rstack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key(max_parallel=2)
    replies = together(6, lambda: chat(rstack, key, model="slow-chunks-300", stream=True))
    assert sorted(r.status for r in replies) == [200, 200, 429, 429, 429, 429]
    for r in replies:
        if r.status == 200:
            assert r.events()[-1] == "[DONE]"
        else:
            assert "Too many parallel requests" in check_429(r, "parallel")["message"]
    # Every slot was released when its stream ended.
    assert sorted(r.status for r in together(2, lambda: chat(rstack, key))) == [200, 200]


def test_grpc_gets_resource_exhausted_with_the_headers(rstack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key(rate_limit=1)
    metadata = (("authorization", f"Bearer {key}"),)
    message = chat_pb2.ChatCompletionRequest(
        model="dev-echo", messages=[openai_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value="Hi"))]
    )
    with grpc.insecure_channel(f"localhost:{rstack.grpc_port}") as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        _, call = stub.CreateChatCompletion.with_call(message, metadata=metadata, timeout=30)
        assert dict(call.initial_metadata())["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateChatCompletion(message, metadata=metadata, timeout=30)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers: dict[str, str] = dict(err.value.trailing_metadata())
    assert trailers["x-ratelimit-limit-requests"] == "1" and trailers["x-ratelimit-remaining-requests"] == "0"
    assert int(trailers["retry-after"]) >= 1 and "x-ratelimit-reset-requests" in trailers


@pytest.fixture
def proxied(upstream_port: int, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Stack, TcpProxy]]:
    require_redis()
    with tcp_proxy(6379) as proxy:
        s = limited_stack(
            upstream_port, tmp_path, f"redis://127.0.0.1:{proxy.port}/0", default_rpm=1000, on_redis_error=request.param
        )
        try:
            yield s, proxy
        finally:
            stop(s.proc)


@pytest.mark.parametrize("proxied", ["open"], indirect=True)
def test_redis_unreachable_open_serves(proxied: tuple[Stack, TcpProxy]) -> None:
    stack, proxy = proxied
    _, key = Accounts(stack_store(stack.config)).key()
    assert chat(stack, key).headers["x-ratelimit-limit-requests"] == "1000"
    proxy.cut()
    # The request timeout is the hang detector: every one is answered, unchecked.
    assert all(r.status == 200 for r in together(8, lambda: request_quick(stack, key)))
    proxy.restore()
    eventually(lambda: "x-ratelimit-limit-requests" in chat(stack, key).headers)
    assert "rate limits unavailable" in stack.log.read_text()


@pytest.mark.parametrize("proxied", ["closed"], indirect=True)
def test_redis_unreachable_closed_is_503(proxied: tuple[Stack, TcpProxy]) -> None:
    stack, proxy = proxied
    _, key = Accounts(stack_store(stack.config)).key()
    assert chat(stack, key).status == 200
    proxy.cut()
    for r in together(8, lambda: request_quick(stack, key)):
        err = check_error(r, 503, "server_error", "rate_limits_unavailable")
        assert "Rate limits and budgets cannot be checked" in err["message"] and r.headers["retry-after"] == "1"
    proxy.restore()
    eventually(lambda: chat(stack, key).status == 200)


def request_quick(stack: Stack, key: str) -> Reply:
    # A short client timeout: a hang fails the test instead of waiting it out.
    body = {"model": "dev-echo", "messages": HELLO}
    return request(stack.base_url + "/chat/completions", body, key=key, timeout=10)
