"""The account store goes away under a running stack (PostgreSQL behind a proxy the
test cuts): keys the workers had checked keep working, a key never seen gets 503 (it
cannot be checked), never 401; when the store is back, so is everything."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ghostllm.config import StoreConfig
from ghostllm.store import make_store
from ghostllm.v1 import models_pb2, models_pb2_grpc
from tests.e2e.api.test_auth import SPREAD, chat, eventually
from tests.support.accounts import Accounts
from tests.support.http import check_error, request
from tests.support.procs import Stack, stack_config, start_stack, stop
from tests.support.tcpproxy import TcpProxy, tcp_proxy

TTL_S = 1.0


def on_each_worker(stack: Stack, key: str) -> list[grpc.StatusCode]:
    """ListModels on every worker directly (not through Envoy, which may favour one), as `key`."""
    codes = []
    base = int(stack.config["server"]["worker_base_port"])
    for i in range(int(stack.config["server"]["workers"])):
        with grpc.insecure_channel(f"127.0.0.1:{base + i}") as ch:
            try:
                models_pb2_grpc.ModelServiceStub(ch).ListModels(
                    models_pb2.ListModelsRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=30
                )
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())
    return codes


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with tcp_proxy(5432) as p:
        yield p


@pytest.fixture
def pg_stack(postgres_url: str, proxy: TcpProxy, upstream_port: int, tmp_path: Path) -> Iterator[Stack]:
    async def migrate() -> None:
        async with make_store(StoreConfig(url=postgres_url, pool_min_size=0)) as store:
            await store.migrate()

    asyncio.run(migrate())
    config = stack_config(upstream_port, tmp_path)
    config["store"] = {"url": postgres_url.replace(":5432/", f":{proxy.port}/"), "connect_timeout_s": 2}
    config["auth"] = {"key_cache_ttl_s": TTL_S, "store_timeout_s": 1}
    s = start_stack(config, upstream_port, tmp_path)
    try:
        yield s
    finally:
        stop(s.proc)


def test_cached_keys_survive_a_store_outage(pg_stack: Stack, proxy: TcpProxy, postgres_url: str) -> None:
    accounts = Accounts(StoreConfig(url=postgres_url, pool_min_size=0, pool_max_size=1))
    _, seen = accounts.key()
    _, unseen = accounts.key()
    assert on_each_worker(pg_stack, seen) == [grpc.StatusCode.OK] * 2  # now cached by both workers

    proxy.cut()
    time.sleep(TTL_S + 0.5)  # past the TTL: the workers try the store, and fall back to what they knew
    assert on_each_worker(pg_stack, seen) == [grpc.StatusCode.OK] * 2
    assert [chat(pg_stack, seen) for _ in range(SPREAD)] == [200] * SPREAD
    assert on_each_worker(pg_stack, unseen) == [grpc.StatusCode.UNAVAILABLE] * 2
    reply = request(pg_stack.base_url + "/models", key=unseen)
    check_error(reply, 503, "server_error", "auth_unavailable")
    assert reply.headers.get("retry-after") == "1"
    assert "gk-" not in reply.body.decode()

    proxy.restore()
    eventually(lambda: chat(pg_stack, unseen) == 200, within=30)
    assert chat(pg_stack, seen) == 200
