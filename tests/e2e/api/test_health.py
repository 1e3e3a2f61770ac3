"""GET /health (open, per model, from the workers' background checks) and GET /status (the
admin or viewer role) through a real stack; the health loop notices providers that come and go."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from ghostllm.v1 import gateway_pb2, gateway_pb2_grpc
from tests.support.accounts import Accounts, stack_store
from tests.support.auth import ADMIN_KEY, METADATA
from tests.support.http import Reply, check_error, request
from tests.support.procs import Stack, Upstream, free_port, server_config, start, start_stack, stop, wait_port

ISO = "%Y-%m-%dT%H:%M:%SZ"


def health(stack: Stack) -> Reply:
    return request(f"http://127.0.0.1:{stack.rest_port}/health", key=None)


def status(stack: Stack, key: str | None) -> Reply:
    return request(f"http://127.0.0.1:{stack.rest_port}/status", key=key)


def eventually(what: Callable[[], Any], deadline_s: float = 60.0) -> Any:
    """`what()` once it is truthy; a generous deadline, no timing asserted."""
    end = time.monotonic() + deadline_s
    while True:
        found = what()
        if found:
            return found
        assert time.monotonic() < end, "not within the deadline"
        time.sleep(0.1)


@contextmanager
def upstream_on(port: int, tmp: Path) -> Iterator[Upstream]:
    """The development upstream on `port` (where a provider already points)."""
    proc = start([sys.executable, "-m", "ghostllm.devupstream", "--port", str(port)], tmp / f"upstream-{port}.log")
    try:
        wait_port(port, proc)
        yield Upstream(port, proc)
    finally:
        stop(proc)


def test_health_is_per_model_with_the_seed_fields(stack: Stack) -> None:
    reply = health(stack)
    body = reply.json()
    # The shared stack's "unreachable" model has only the dead provider: some models cannot be served.
    assert reply.status == 200 and body["status"] == "degraded"
    assert {"status", "version", "service", "timestamp", "providers", "models_count", "models_available"} <= set(body)
    assert 0 < body["models_available"] < body["models_count"] and int(body["timestamp"]) > 0
    providers = {p["id"]: p for p in body["providers"]}
    # The shared stack: other tests may have added providers through the admin API.
    assert {"dev", "dev-short", "dead"} <= set(providers)
    dev, dead = providers["dev"], providers["dead"]
    assert set(dev) == {"id", "name", "type", "healthy", "status", "models_count", "last_check"}
    assert (dev["healthy"], dev["status"], dead["healthy"], dead["status"]) == (True, "healthy", False, "unhealthy")
    # Checked before the worker served its first call (both have a result), in the seed's format.
    for p in (dev, dead):
        time.strptime(p["last_check"], ISO)
    assert dead["models_count"] == 1 and dev["models_count"] > 1


def test_the_checks_follow_providers_that_come_and_go(upstream_port: int, tmp_path: Path) -> None:
    first, second = free_port(), free_port()
    config = {
        "server": server_config(tmp_path, 1),
        "routing": {"health_check_interval_s": 0.5, "health_check_timeout_s": 0.5},
        "providers": [
            {"id": "one", "base_url": f"http://127.0.0.1:{first}/v1", "connect_timeout_s": 0.5},
            {"id": "two", "base_url": f"http://127.0.0.1:{second}/v1", "connect_timeout_s": 0.5},
        ],
        "models": [{"id": "m-one", "provider": "one"}, {"id": "m-two", "provider": "two"}],
    }
    s = start_stack(config, upstream_port, tmp_path)
    try:
        # Nothing answers for any model: unavailable.
        reply = health(s)
        assert reply.status == 503 and reply.json()["status"] == "unhealthy"
        assert reply.json()["models_available"] == 0

        def state() -> tuple[int, str]:
            r = health(s)
            return r.status, r.json()["status"]

        with upstream_on(first, tmp_path):
            eventually(lambda: state() == (200, "degraded"))
            by_id = {p["id"]: p for p in health(s).json()["providers"]}
            assert by_id["one"]["healthy"] is True and by_id["two"]["healthy"] is False
            with upstream_on(second, tmp_path):
                eventually(lambda: state() == (200, "healthy"))
            # The second gone again: the next rounds see it.
            eventually(lambda: state() == (200, "degraded"))
        eventually(lambda: state() == (503, "unhealthy"))
    finally:
        stop(s.proc)


def test_status_shows_the_answering_workers_state(stack: Stack) -> None:
    reply = status(stack, ADMIN_KEY)
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["status"] == "running" and body["health"] == "degraded" and body["version"]
    assert body["uptime_seconds"] >= 0 and time.strptime(body["started_at"], ISO)
    assert body["worker"]["pid"] in {stack.worker_pid(0), stack.worker_pid(1)}
    interval = stack.config.get("routing", {}).get("health_check_interval_s", 15.0)
    assert body["health_check"] == {"interval_s": interval, "timeout_s": 3.0}
    assert body["providers_count"] == len(body["providers"]) >= 3 and body["models_count"] == len(body["models"])
    providers = {p["id"]: p for p in body["providers"]}
    dev, dead = providers["dev"], providers["dead"]
    assert dev["status"] == "healthy" and dev["error"] is None and dev["latency_ms"] >= 0
    assert dead["status"] == "unhealthy" and dead["error"] and dead["latency_ms"] >= 0
    assert "dev-echo" in dev["models"] and dead["models"] == ["unreachable"]
    time.strptime(dev["last_check"], ISO)
    models = {m["id"]: m for m in body["models"]}
    echo = models["dev-echo"]
    assert echo["available"] is True
    assert [(d["key"], d["provider"], d["upstream_model"], d["healthy"]) for d in echo["deployments"]] == [
        ("dev/dev-echo", "dev", "dev-echo", True)
    ]
    assert models["unreachable"]["available"] is False
    assert models["gpt-test"]["deployments"][0]["upstream_model"] == "dev-echo"
    # The router's per-deployment state, as this worker sees it.
    routing = body["routing"]["dev/dev-echo"]
    assert routing["circuit"] == "closed" and routing["in_flight"] == 0 and "dev-echo" in routing["models"]


def test_status_needs_the_admin_or_viewer_role(stack: Stack) -> None:
    check_error(status(stack, None), 401, code="invalid_api_key")
    accounts = Accounts(stack_store(stack.config))
    _, plain = accounts.key()
    check_error(status(stack, plain), 403, "permission_error", "permission_denied")
    _, viewer = accounts.key(accounts.user("viewer"))
    assert status(stack, viewer).status == 200
    # /health stays open, to anyone.
    assert health(stack).status == 200


def test_status_is_get_only(stack: Stack) -> None:
    reply = request(f"http://127.0.0.1:{stack.rest_port}/status", b"{}", method="POST")
    check_error(reply, 405, code="method_not_allowed")
    assert reply.headers["allow"] == "GET"


@pytest.fixture(scope="module")
def stub(stack: Stack) -> Iterator[gateway_pb2_grpc.GatewayServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as channel:
        yield gateway_pb2_grpc.GatewayServiceStub(channel)


def test_health_and_status_over_grpc(stub: gateway_pb2_grpc.GatewayServiceStub) -> None:
    found = stub.Health(gateway_pb2.HealthRequest())
    assert found.content_type == "application/json" and json.loads(found.data)["status"] == "degraded"
    answer = stub.Status(gateway_pb2.StatusRequest(), metadata=METADATA)
    body = json.loads(answer.data)
    assert body["status"] == "running" and {"dev", "dev-short", "dead"} <= {p["id"] for p in body["providers"]}
    with pytest.raises(grpc.RpcError) as err:
        stub.Status(gateway_pb2.StatusRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
