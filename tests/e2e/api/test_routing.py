"""Routing through a real stack (issue 10): a retry on the same deployment, failover to the
next deployment, a fallback model (the answer names it), the x-ghostllm-deployment header, the
usage_logs row's deployment and attempts, a 400 not retried, no retry once a stream began, and
the openai SDK (max_retries=0) seeing the success. No timing assertions.

Upstreams: the development upstream (its error-500, error-429 with retry-after 7, hang and
cut-stream scenarios), reached through two provider ids; a dead port; and a flaky front of the
dev upstream in this process, which fails its next N requests with a chosen status (and
retry-after) and forwards the rest."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ghostllm.store import make_store
from tests.support.accounts import stack_store
from tests.support.auth import ADMIN_KEY
from tests.support.http import check_error, request
from tests.support.procs import Stack, Upstream, dev_upstream, free_port, running_stack, server_config

HELLO = [{"role": "user", "content": "Hello there"}]
HEADER = "x-ghostllm-deployment"


@dataclass
class Flaky:
    """What the flaky front does next (set by the tests, read by its handler thread)."""

    target: str
    port: int = 0
    fail: int = 0
    status: int = 503
    retry_after: str | None = None
    seen: list[int] = field(default_factory=list)  # the status it answered each request with

    def arm(self, fail: int, status: int = 503, retry_after: str | None = None) -> None:
        self.fail, self.status, self.retry_after, self.seen = fail, status, retry_after, []


def flaky_handler(state: Flaky) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if state.fail > 0:
                state.fail -= 1
                state.seen.append(state.status)
                error = b'{"error":{"message":"flaky","type":"server_error","param":null,"code":null}}'
                self.send_response(state.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(error)))
                if state.retry_after is not None:
                    self.send_header("retry-after", state.retry_after)
                self.end_headers()
                self.wfile.write(error)
                return
            up = httpx.post(state.target + self.path, content=body, headers={"content-type": "application/json"})
            state.seen.append(up.status_code)
            self.send_response(up.status_code)
            self.send_header("content-type", up.headers.get("content-type", "application/json"))
            self.send_header("content-length", str(len(up.content)))
            self.end_headers()
            self.wfile.write(up.content)

    return Handler


@pytest.fixture(scope="module")
def flaky(upstream: Upstream) -> Iterator[Flaky]:
    state = Flaky(upstream.url)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), flaky_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="flaky-upstream", daemon=True)
    thread.start()
    state.port = int(server.server_address[1])
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with dev_upstream(tmp_path_factory.mktemp("routing-upstream")) as up:
        yield up


def routing_config(upstream_port: int, flaky_port: int, tmp: Path) -> dict[str, Any]:
    dev = f"http://127.0.0.1:{upstream_port}/v1"
    caps = ["chat", "streaming", "completions"]

    def two(first: str) -> list[dict[str, Any]]:
        return [{"provider": "dev", "upstream_model": first}, {"provider": "dev2", "upstream_model": "dev-echo"}]

    return {
        "server": server_config(tmp, 2, shutdown_grace_s=10),
        "routing": {"backoff_base_s": 0.05, "backoff_max_s": 0.1},
        "providers": [
            {"id": "dev", "type": "openai", "base_url": dev},
            {"id": "dev2", "type": "openai", "base_url": dev},
            {"id": "dev-short", "type": "openai", "base_url": dev, "timeout_s": 1.0},
            {"id": "flaky", "type": "openai", "base_url": f"http://127.0.0.1:{flaky_port}/v1"},
            {"id": "dead", "type": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "connect_timeout_s": 1},
        ],
        "models": [
            {"id": "flaky-echo", "provider": "flaky", "upstream_model": "dev-echo", "capabilities": caps},
            {"id": "dead-first", "deployments": [{"provider": "dead", "upstream_model": "dev-echo"}, two("x")[1]],
             "capabilities": caps},
            {"id": "five-hundred-first", "deployments": two("error-500"), "capabilities": caps},
            {"id": "rate-limited-first", "deployments": two("error-429"), "capabilities": caps},
            {"id": "hang-first", "deployments": [{"provider": "dev-short", "upstream_model": "hang"}, two("x")[1]],
             "capabilities": caps},
            {"id": "cut-first", "deployments": two("cut-stream"), "capabilities": caps},
            {"id": "unavailable", "provider": "dev", "upstream_model": "error-503", "fallbacks": ["backup"],
             "capabilities": caps, "input_price_per_1m": 100.0},
            {"id": "backup", "provider": "dev2", "upstream_model": "dev-echo", "capabilities": caps,
             "input_price_per_1m": 1.0, "output_price_per_1m": 2.0},
            {"id": "bad-request", "provider": "dev", "upstream_model": "error-400", "fallbacks": ["backup"],
             "capabilities": caps},
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def stack(upstream: Upstream, flaky: Flaky, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("routing-stack")
    with running_stack(routing_config(upstream.port, flaky.port, tmp), upstream, tmp) as s:
        yield s


def post(stack: Stack, model: str, **extra: Any) -> Any:
    return request(stack.base_url + "/chat/completions", {"model": model, "messages": HELLO, **extra}, timeout=60)


def dev_requests(stack: Stack) -> int:
    return int(httpx.get(stack.upstream_url + "/_dev/stats").json()["requests"])


def reset(stack: Stack) -> None:
    httpx.post(stack.upstream_url + "/_dev/reset").raise_for_status()


def usage_row(stack: Stack, request_id: str) -> dict[str, Any]:
    """The request's usage_logs row, once the ledger has written it."""
    names = ("model_id", "provider_id", "upstream_model", "status", "deployment", "attempts", "deployments_tried",
             "prompt_tokens", "cost_nano_usd")  # fmt: skip

    async def go() -> list[Any]:
        async with make_store(stack_store(stack.config)) as store:
            return await store.fetch_all(
                f"SELECT {', '.join(names)} FROM usage_logs WHERE request_id = ?", (request_id,)
            )

    deadline = time.monotonic() + 15
    while True:
        found = asyncio.run(go())
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(found) == 1, f"expected one row for {request_id}, found {found}"
    return dict(zip(names, found[0], strict=True))


@pytest.mark.parametrize("stream", [False, True])
def test_a_retry_on_the_same_deployment_succeeds(stack: Stack, flaky: Flaky, stream: bool) -> None:
    flaky.arm(1, 503)
    reply = post(stack, "flaky-echo", stream=stream)
    assert reply.status == 200 and flaky.seen == [503, 200]
    assert reply.headers[HEADER] == "flaky/dev-echo"
    row = usage_row(stack, reply.headers["x-request-id"])
    assert (row["status"], row["deployment"], row["attempts"]) == (200, "flaky/dev-echo", 2)
    assert row["deployments_tried"] == "flaky/dev-echo,flaky/dev-echo"


def test_a_429_retry_after_under_the_cap_is_waited_for(stack: Stack, flaky: Flaky) -> None:
    flaky.arm(1, 429, retry_after="1")
    reply = post(stack, "flaky-echo")
    assert reply.status == 200 and flaky.seen == [429, 200]


def test_retries_run_out_and_the_error_is_the_upstreams(stack: Stack, flaky: Flaky) -> None:
    flaky.arm(5, 503)
    check_error(post(stack, "flaky-echo"), 503)
    assert flaky.seen == [503, 503]  # the first attempt and routing.retries (1)
    flaky.arm(0)


@pytest.mark.parametrize(
    ("model", "first", "first_tries"),
    [
        ("dead-first", "dead/dev-echo", 2),  # connect refused, retried once
        ("five-hundred-first", "dev/error-500", 2),  # an upstream 500, retried once
        ("rate-limited-first", "dev/error-429", 1),  # retry-after 7 is over the 5 s cap: next at once
        ("hang-first", "dev-short/hang", 2),  # no answer within timeout_s
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_failover_to_the_second_deployment(
    stack: Stack, model: str, first: str, first_tries: int, stream: bool
) -> None:
    reply = post(stack, model, stream=stream)
    assert reply.status == 200
    assert reply.headers[HEADER] == "dev2/dev-echo"
    if stream:
        assert reply.events()[-1] == "[DONE]"
    else:
        assert reply.json()["model"] == model and reply.json()["choices"][0]["message"]["content"]
    row = usage_row(stack, reply.headers["x-request-id"])
    assert (row["deployment"], row["provider_id"], row["attempts"]) == ("dev2/dev-echo", "dev2", first_tries + 1)
    assert row["deployments_tried"] == ",".join([first] * first_tries + ["dev2/dev-echo"])


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_to_another_model_names_it(stack: Stack, stream: bool) -> None:
    reply = post(stack, "unavailable", stream=stream)
    assert reply.status == 200 and reply.headers[HEADER] == "dev2/dev-echo"
    if stream:
        models = {json.loads(e)["model"] for e in reply.events() if e != "[DONE]"}
        assert models == {"backup"}
    else:
        assert reply.json()["model"] == "backup"
    row = usage_row(stack, reply.headers["x-request-id"])
    assert (row["model_id"], row["deployment"], row["attempts"]) == ("unavailable", "dev2/dev-echo", 3)
    # Priced as the fallback that served it (1 $/1M input), not the model asked for (100 $/1M).
    assert row["prompt_tokens"] > 0 and row["cost_nano_usd"] < row["prompt_tokens"] * 100_000


def test_a_400_is_not_retried_nor_falls_back(stack: Stack) -> None:
    reset(stack)
    reply = post(stack, "bad-request")
    check_error(reply, 400, "invalid_request_error")
    assert dev_requests(stack) == 1
    row = usage_row(stack, reply.headers["x-request-id"])
    assert (row["status"], row["attempts"], row["deployment"]) == (400, 1, "dev/error-400")


def test_no_retry_once_the_stream_has_begun(stack: Stack) -> None:
    reset(stack)
    reply = post(stack, "cut-first", stream=True)
    assert reply.status == 200 and reply.headers[HEADER] == "dev/cut-stream"
    events = reply.events()
    assert "[DONE]" not in events and '"error"' in events[-1]
    assert dev_requests(stack) == 1
    row = usage_row(stack, reply.headers["x-request-id"])
    assert (row["attempts"], row["deployment"], row["status"]) == (1, "dev/cut-stream", 502)


def test_the_openai_sdk_sees_the_success(stack: Stack, flaky: Flaky) -> None:
    with openai.OpenAI(base_url=stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=60) as client:
        flaky.arm(1, 502)
        raw = client.chat.completions.with_raw_response.create(model="flaky-echo", messages=HELLO)
        assert raw.headers[HEADER] == "flaky/dev-echo" and raw.parse().choices[0].message.content
        answer = client.chat.completions.create(model="unavailable", messages=HELLO)
        assert answer.model == "backup"
        flaky.arm(1, 500)
        chunks = list(client.chat.completions.create(model="flaky-echo", messages=HELLO, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="five-hundred-first", messages=HELLO, stream=True)
            if c.choices
        )
        assert text
