"""Fault injection through a real stack (issue 10, retries and timeouts).

For each upstream fault (a 500; a 429 with retry-after, waited for under
routing.retry_after_cap_s and moved on from over it; accepts then never answers; a reset
before or in the middle of the body; garbage SSE; a stall mid-stream; slow but in time):
a model whose failing deployment has a healthy second one gets the answer by retry or
failover, and a model with only the failing deployment gets the documented error (status,
OpenAI code, the openai SDK's exception class), both well before the client's 30 s timeout.
A stream that stalls or breaks after it began ends with the in-band error event, and its
usage row is written (estimated tokens, since the upstream never reported any). A client
that leaves during a backoff wait ends the request there: no further attempt. N consecutive
failures open a deployment's circuit (GET /status), and after the cooldown a successful probe
closes it. Afterwards every worker's connections to the upstreams and its asyncio tasks are
back to their baseline.

The limits are the deployments' own (`ttft_timeout_s`, `idle_timeout_s` on deployment entries
and on the single-deployment form); the faults are the development upstream's scenarios
(ghostllm/devupstream); the circuit's deployment is reached through a TCP proxy the test cuts
and restores. No timing assertions: every wait polls a state, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import openai
import psutil
import pytest

from ghostllm.store import make_store
from ghostllm.v1 import gateway_pb2, gateway_pb2_grpc
from tests.support.accounts import stack_store
from tests.support.auth import ADMIN_KEY, METADATA
from tests.support.http import Reply, check_error, request, upstream_stats
from tests.support.procs import Stack, Upstream, dev_upstream, running_stack, server_config
from tests.support.tcpproxy import TcpProxy

HELLO = [{"role": "user", "content": "Tell me about faults"}]
HEADER = "x-ghostllm-deployment"
CLIENT_TIMEOUT_S = 30.0
# routing.retry_after_cap_s: error-429-after-1 is waited for, error-429 (retry-after 7) is not.
RETRY_AFTER_CAP_S = 4
# Over what any fault below costs one deployment in one worker (at most 3 requests of 2
# attempts), so only the circuit test's deployment (8 attempts a request) opens its circuit.
CIRCUIT_FAILURES = 8
COOLDOWN_S = 2.0
HEALTHY = "up2/dev-echo"
CAPS = ["chat", "streaming", "completions"]
# Waits for a state (not assertions on time): generous, since the machine may be busy.
DEADLINE_S = 60.0


@dataclass(frozen=True)
class Pair:
    """A fault on the first of two deployments (the second is healthy): the attempts it gets
    before the next deployment serves, per mode; None: the stream had begun, so it ends with
    the in-band error instead (no failover once output was relayed)."""

    upstream: str
    json_tries: int
    sse_tries: int | None
    limits: dict[str, float] = field(default_factory=dict)


PAIRS = {
    "error-500": Pair("error-500", 2, 2),
    # Waited for (retry-after 1 is under the cap), retried once, then the next deployment.
    "rate-limited": Pair("error-429-after-1", 2, 2),
    # Retry-after 7 is over the cap: the next deployment at once.
    "rate-limited-long": Pair("error-429", 1, 1),
    "hang": Pair("hang", 2, 2, {"ttft_timeout_s": 1}),
    "reset": Pair("reset", 2, 2),
    "reset-mid-body": Pair("reset-after-3", 2, None),
    # Not JSON: an unusable answer is not asked for again; a bad first event is a broken stream.
    "garbage": Pair("garbage-sse", 1, 2),
    # A whole answer that stalls half-way is over its ttft (its whole time); a stream idles out.
    "stall": Pair("stall-after-3", 2, None, {"ttft_timeout_s": 1, "idle_timeout_s": 1}),
}


@dataclass(frozen=True)
class Solo:
    """A fault on a model's only deployment: the documented error, as a status before any
    output; `sse_in_band`: streamed, it comes after the first chunks, as the in-band error."""

    upstream: str
    status: int
    code: str
    sdk_error: type[openai.APIStatusError]
    sse_in_band: bool = False
    limits: dict[str, float] = field(default_factory=dict)


SOLOS = {
    "error-500": Solo("error-500", 502, "provider_error", openai.InternalServerError),
    "rate-limited": Solo("error-429", 429, "rate_limit_exceeded", openai.RateLimitError),
    "hang": Solo("hang", 504, "timeout", openai.InternalServerError, limits={"ttft_timeout_s": 1}),
    "reset": Solo("reset", 502, "provider_error", openai.InternalServerError),
    "reset-mid-body": Solo("reset-after-3", 502, "provider_error", openai.InternalServerError, True),
    "garbage": Solo("garbage-sse", 502, "provider_error", openai.InternalServerError),
    "stall": Solo(
        "stall-after-3", 504, "timeout", openai.InternalServerError, True, {"ttft_timeout_s": 1, "idle_timeout_s": 1}
    ),
}

# Slow but in time: one attempt, served by the first deployment. slow-1500 is silent for 1.5 s
# before anything, more than its idle limit, less than its time to first output.
SLOW: dict[str, tuple[str, dict[str, float]]] = {
    "slow-start": ("slow-1500", {"ttft_timeout_s": 10, "idle_timeout_s": 0.5}),
    "slow-chunks": ("slow-chunks-100", {"ttft_timeout_s": 10, "idle_timeout_s": 2}),
}


def faults_config(upstream_port: int, proxy_port: int, tmp: Path) -> dict[str, Any]:
    dev = f"http://127.0.0.1:{upstream_port}/v1"
    healthy = {"provider": "up2", "upstream_model": "dev-echo"}
    models: list[dict[str, Any]] = []
    for name, p in PAIRS.items():
        first = {"provider": "up", "upstream_model": p.upstream, **p.limits}
        models.append({"id": f"{name}-pair", "deployments": [first, healthy], "capabilities": CAPS})
    for name, (upstream_model, limits) in SLOW.items():
        first = {"provider": "up", "upstream_model": upstream_model, **limits}
        models.append({"id": f"{name}-pair", "deployments": [first, healthy], "capabilities": CAPS})
    for name, s in SOLOS.items():
        # The single-deployment form, its limits on the model entry.
        models.append({"id": f"{name}-solo", "provider": "solo", "upstream_model": s.upstream, **s.limits,
                       "capabilities": CAPS})  # fmt: skip
    models += [
        # A stall after the first bytes is the idle limit's, however long the first-output one is.
        {"id": "stall-tight-solo", "provider": "solo", "upstream_model": "stall-after-3", "ttft_timeout_s": 10,
         "idle_timeout_s": 0.5, "capabilities": CAPS},
        # Three seconds of backoff (its retry-after) for a client to leave during.
        {"id": "backoff-solo", "provider": "solo", "upstream_model": "error-429-after-3", "capabilities": CAPS},
        # Every request tries the proxied deployment CIRCUIT_FAILURES times before the next one.
        {"id": "flapping", "deployments": [{"provider": "flap", "upstream_model": "dev-echo"}, healthy],
         "retries": CIRCUIT_FAILURES - 1, "capabilities": CAPS},
        {"id": "echo", "provider": "up2", "upstream_model": "dev-echo", "capabilities": CAPS},
    ]  # fmt: skip
    return {
        "server": server_config(tmp, 2, shutdown_grace_s=10),
        "routing": {
            "health_check_interval_s": 3600,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.1,
            "retry_after_cap_s": RETRY_AFTER_CAP_S,
            "circuit_failures": CIRCUIT_FAILURES,
            "circuit_cooldown_s": COOLDOWN_S,
        },
        "providers": [
            {"id": "up", "type": "openai", "base_url": dev},
            {"id": "up2", "type": "openai", "base_url": dev},
            {"id": "solo", "type": "openai", "base_url": dev},
            {"id": "flap", "type": "openai", "base_url": f"http://127.0.0.1:{proxy_port}/v1"},
        ],
        "models": models,
    }


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with dev_upstream(tmp_path_factory.mktemp("faults-upstream")) as up:
        yield up


@pytest.fixture(scope="module")
def proxy(upstream: Upstream) -> Iterator[TcpProxy]:
    p = TcpProxy(upstream.port)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def stack(upstream: Upstream, proxy: TcpProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("faults-stack")
    with running_stack(faults_config(upstream.port, proxy.port, tmp), upstream, tmp) as s:
        yield s


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=CLIENT_TIMEOUT_S) as c:
        yield c


# ---------------------------------------------------------------------- helpers


def post(stack: Stack, model: str, **extra: Any) -> Reply:
    body = {"model": model, "messages": HELLO, **extra}
    return request(stack.base_url + "/chat/completions", body, timeout=CLIENT_TIMEOUT_S)


def wait_for(what: str | Callable[[], str], check: Callable[[], bool], deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"still not {what if isinstance(what, str) else what()} after {deadline_s:g}s")
        time.sleep(0.1)


ROW = ("status", "error_code", "deployment", "attempts", "deployments_tried", "estimated", "completion_tokens")


def usage_row(stack: Stack, request_id: str) -> dict[str, Any]:
    """The request's usage_logs row, once the ledger has written it."""

    async def go() -> list[Any]:
        async with make_store(stack_store(stack.config)) as store:
            return await store.fetch_all(f"SELECT {', '.join(ROW)} FROM usage_logs WHERE request_id = ?", (request_id,))

    found: list[Any] = []

    def written() -> bool:
        found[:] = asyncio.run(go())
        return bool(found)

    wait_for(f"written: the usage row of {request_id}", written, 15)
    assert len(found) == 1, found
    return dict(zip(ROW, found[0], strict=True))


def tried(*keys: str) -> str:
    return ",".join(keys)


def in_band_error(reply: Reply) -> dict[str, Any]:
    """The error event a stream that had begun ends with (no [DONE])."""
    assert reply.status == 200, reply.body[:300]
    events = reply.events()
    assert "[DONE]" not in events
    assert any(json.loads(e).get("choices") for e in events[:-1]), "it had not begun"
    err: dict[str, Any] = json.loads(events[-1])["error"]
    return err


def worker_status(stack: Stack, index: int) -> dict[str, Any]:
    """GET /status asked of one worker itself (Envoy would pick one)."""
    port = int(stack.config["server"]["worker_base_port"]) + index
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = gateway_pb2_grpc.GatewayServiceStub(channel).Status(
            gateway_pb2.StatusRequest(), metadata=METADATA, timeout=10
        )
    body: dict[str, Any] = json.loads(reply.data)
    return body


def workers(stack: Stack) -> range:
    return range(int(stack.config["server"]["workers"]))


def circuits(stack: Stack, key: str) -> list[str]:
    return [worker_status(stack, i)["routing"][key]["circuit"] for i in workers(stack)]


def upstream_connections(pid: int, ports: set[int]) -> int:
    """The process's TCP connections to any of `ports` (ESTABLISHED, or waiting for it to close)."""
    return sum(1 for c in psutil.Process(pid).net_connections(kind="tcp") if c.raddr and c.raddr.port in ports)


def resources(stack: Stack, proxy: TcpProxy) -> list[tuple[int, int]]:
    """Per worker: its connections to the upstreams, its asyncio tasks."""
    ports = {stack.upstream_port, proxy.port}
    return [
        (upstream_connections(stack.worker_pid(i), ports), worker_status(stack, i)["worker"]["asyncio_tasks"])
        for i in workers(stack)
    ]


@pytest.fixture(scope="module", autouse=True)
def baseline(stack: Stack, proxy: TcpProxy) -> list[tuple[int, int]]:
    """Each worker's connections and tasks before the faults, once it has served a request or
    two of every kind (a pool or task made on first use is not a leak)."""
    for _ in range(2 * len(workers(stack))):
        for stream in (False, True):
            assert post(stack, "echo", stream=stream).status == 200
            assert post(stack, "flapping", stream=stream).status == 200
    return resources(stack, proxy)


# ---------------------------------------------------------------------- retry and failover


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("fault", list(PAIRS))
def test_a_healthy_second_deployment_serves(stack: Stack, fault: str, stream: bool) -> None:
    pair = PAIRS[fault]
    first = f"up/{pair.upstream}"
    reply = post(stack, f"{fault}-pair", stream=stream)
    row = usage_row(stack, reply.headers["x-request-id"])
    tries = pair.sse_tries if stream else pair.json_tries
    if tries is None:
        # Its first chunks had gone to the client: the stream ends with the error, not elsewhere.
        err = in_band_error(reply)
        assert reply.headers[HEADER] == first
        status = 504 if fault == "stall" else 502
        assert (row["attempts"], row["deployments_tried"], row["status"]) == (1, first, status)
        assert err["code"] == row["error_code"] and row["estimated"] and row["completion_tokens"] > 0
        return
    assert reply.status == 200, reply.body[:300]
    assert reply.headers[HEADER] == HEALTHY
    if stream:
        assert reply.events()[-1] == "[DONE]"
    else:
        assert reply.json()["choices"][0]["message"]["content"]
    assert (row["status"], row["deployment"], row["attempts"]) == (200, HEALTHY, tries + 1)
    assert row["deployments_tried"] == tried(*[first] * tries, HEALTHY)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("name", list(SLOW))
def test_a_slow_upstream_in_time_is_not_retried(stack: Stack, name: str, stream: bool) -> None:
    first = f"up/{SLOW[name][0]}"
    reply = post(stack, f"{name}-pair", stream=stream)
    assert reply.status == 200 and reply.headers[HEADER] == first
    if stream:
        assert reply.events()[-1] == "[DONE]"
    row = usage_row(stack, reply.headers["x-request-id"])
    assert (row["status"], row["attempts"], row["deployments_tried"]) == (200, 1, first)


# ---------------------------------------------------------------------- the documented errors


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("fault", list(SOLOS))
def test_a_lone_failing_deployment_gives_the_documented_error(
    stack: Stack, client: openai.OpenAI, fault: str, stream: bool
) -> None:
    solo = SOLOS[fault]
    model = f"{fault}-solo"
    if stream and solo.sse_in_band:
        answer = client.chat.completions.create(model=model, messages=HELLO, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError) as exc:
            for _ in answer:
                pass
        assert type(exc.value) is openai.APIError  # raised from the stream's error event
        request_id = answer.response.headers["x-request-id"]
        row = usage_row(stack, request_id)
        assert (row["status"], row["error_code"], row["attempts"]) == (solo.status, solo.code, 1)
        assert exc.value.code == solo.code and row["estimated"] and row["completion_tokens"] > 0
        return
    with pytest.raises(openai.APIStatusError) as status_exc:
        answer = client.chat.completions.create(model=model, messages=HELLO, stream=stream)  # type: ignore[arg-type]
        for _ in answer if stream else ():
            pass
    err = status_exc.value
    assert type(err) is solo.sdk_error and (err.status_code, err.code) == (solo.status, solo.code)
    if solo.status == 429:
        assert err.response.headers["retry-after"] == "7"  # the provider's, passed on
    row = usage_row(stack, err.response.headers["x-request-id"])
    assert (row["status"], row["error_code"]) == (solo.status, solo.code)


def test_the_raw_error_shapes(stack: Stack) -> None:
    """The same errors as OpenAI-shaped JSON with their types, for clients without the SDK."""
    check_error(post(stack, "hang-solo"), 504, "timeout_error", "timeout")
    check_error(post(stack, "error-500-solo", stream=True), 502, "provider_error", "provider_error")
    reply = post(stack, "rate-limited-solo")
    check_error(reply, 429, "rate_limit_error", "rate_limit_exceeded")
    assert reply.headers["retry-after"] == "7"


def test_a_stall_after_the_first_bytes_is_the_idle_limits(stack: Stack) -> None:
    """Its first-output limit is 10 s, its idle one 0.5 s: the stall is ended at the latter."""
    reply = post(stack, "stall-tight-solo", stream=True)
    err = in_band_error(reply)
    assert (err["type"], err["code"]) == ("timeout_error", "timeout")
    assert "sent nothing for 0.5s" in err["message"]
    row = usage_row(stack, reply.headers["x-request-id"])
    assert (row["status"], row["estimated"]) == (504, True)


# ---------------------------------------------------------------------- cancellation


def _raw_post(stack: Stack, body: dict[str, Any], request_id: str) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", stack.rest_port), timeout=CLIENT_TIMEOUT_S)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
        f"Content-Type: application/json\r\nx-request-id: {request_id}\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_client_leaving_during_the_backoff_ends_the_request(stack: Stack, stream: bool) -> None:
    """The first attempt's 429 says retry after 3 s; the client leaves during that wait. Had
    the wait gone on, the row would show a second attempt; and the upstream saw only one."""
    assert request(stack.upstream_url + "/_dev/reset", b"").status == 200
    request_id = f"backoff-{uuid.uuid4().hex}"
    with _raw_post(stack, {"model": "backoff-solo", "messages": HELLO, "stream": stream}, request_id):
        wait_for("asked upstream", lambda: upstream_stats(stack.upstream_url)["requests"] >= 1)
    row = usage_row(stack, request_id)
    assert (row["status"], row["error_code"], row["attempts"]) == (499, "client_closed", 1)
    assert row["deployments_tried"] == "solo/error-429-after-3"
    assert upstream_stats(stack.upstream_url)["requests"] == 1


# ---------------------------------------------------------------------- the circuit


def test_failures_open_the_circuit_and_a_probe_closes_it(stack: Stack, proxy: TcpProxy) -> None:
    key = "flap/dev-echo"
    assert circuits(stack, key) == ["closed"] * len(workers(stack))
    proxy.cut()
    try:
        # Each request lands on some worker and fails there CIRCUIT_FAILURES times in a row
        # (then the healthy deployment answers); a worker whose circuit is open skips it.
        for _ in range(10 * len(workers(stack))):
            reply = post(stack, "flapping")
            assert reply.status == 200 and reply.headers[HEADER] == HEALTHY
            if all(c == "open" for c in circuits(stack, key)):
                break
        assert circuits(stack, key) == ["open"] * len(workers(stack))
        reply = post(stack, "flapping")
        assert usage_row(stack, reply.headers["x-request-id"])["deployments_tried"] == HEALTHY  # skipped
    finally:
        proxy.restore()
    # After the cooldown a probe goes through; its success closes the circuit.
    wait_for("half-open", lambda: circuits(stack, key) == ["half_open"] * len(workers(stack)))
    for _ in range(10 * len(workers(stack))):
        reply = post(stack, "flapping")
        assert reply.status == 200
        if all(c == "closed" for c in circuits(stack, key)):
            break
    assert circuits(stack, key) == ["closed"] * len(workers(stack))
    reply = post(stack, "flapping")
    assert reply.headers[HEADER] == key
    assert usage_row(stack, reply.headers["x-request-id"])["attempts"] == 1


# ---------------------------------------------------------------------- nothing left behind


def test_connections_and_tasks_return_to_their_baseline(
    stack: Stack, proxy: TcpProxy, baseline: list[tuple[int, int]]
) -> None:
    """Every hung, stalled or reset attempt was closed, and no task outlived its request. A
    worker's connections go back to none: the pools' idle ones close after aiohttp's keep-alive
    time (15 s), a leaked one never would; the upstream then has only the connection asking."""
    now: list[tuple[int, int]] = []
    tasks = [t for _, t in baseline]

    def back() -> bool:
        now[:] = resources(stack, proxy)
        stats = upstream_stats(stack.upstream_url)
        upstream_idle = (stats["open_connections"], stats["active_streams"], stats["waiting_requests"]) == (1, 0, 0)
        return upstream_idle and all(c == 0 and t <= bt for (c, t), bt in zip(now, tasks, strict=True))

    wait_for(lambda: f"back to the baseline {[(0, t) for t in tasks]} (now {now})", back)
    print(f"per worker (upstream connections, asyncio tasks): before the faults {baseline}, after {now}")
