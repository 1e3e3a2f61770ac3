"""The metrics sink and stage in a real pipeline (the scripted in-memory provider of the
gateway's tests): streams in flight, upstream time, every request counted once."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from ghostllm.errors import ModelNotFound
from ghostllm.gateway.exchange import Stage
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.gateway.stages import ResolveModel, decode_body
from ghostllm.gateway.usage import UsageRecord
from ghostllm.metrics.publisher import Publisher
from ghostllm.protocol.chat import check_chat_request
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.providers.base import StreamBatch
from ghostllm.routing.catalogue import Catalogue
from tests.unit.gateway.test_pipeline import CONFIG, USAGE, Scripted, body, chunk, ctx


def wired(provider: Scripted) -> tuple[Pipeline, Publisher, CollectorRegistry, list[UsageRecord]]:
    catalogue = Catalogue(CONFIG, {"up": provider})
    registry = CollectorRegistry()
    metrics = Publisher(catalogue, registry=registry)
    records: list[UsageRecord] = []
    stages: list[Stage] = [decode_body, ResolveModel(catalogue), metrics.streams]
    return Pipeline(stages, [records.append, metrics.tally, metrics.streams.settle]), metrics, registry, records


def test_a_stream_is_in_flight_until_it_settles_and_its_upstream_time_is_recorded() -> None:
    batches = [StreamBatch([chunk("Hel")], None, False), StreamBatch([chunk("lo")], USAGE, True)]
    p, metrics, registry, records = wired(Scripted(batches))
    seen: list[int] = []

    async def go() -> None:
        async with p.exchange(ctx(), Endpoint.CHAT, lambda: check_chat_request(body(stream=True))) as ex:
            await ex.admit()
            async for _ in ex.relay():
                seen.append(metrics.streams.count)

    asyncio.run(go())
    assert seen == [1, 1] and metrics.streams.count == 0
    [r] = records
    assert r.upstream_ms is not None and 0 <= r.upstream_ms <= r.latency_ms
    metrics.flush()
    assert registry.get_sample_value("ghostllm_active_streams") == 0
    labels = {"model": "pub", "provider": "up", "stream": "true"}
    assert registry.get_sample_value("ghostllm_upstream_duration_seconds_count", labels) == 1
    assert registry.get_sample_value("ghostllm_tokens_total", {"model": "pub", "provider": "up", "type": "prompt"}) == 3


def test_a_cancelled_stream_counts_its_attempt_so_far_and_leaves_nothing_in_flight() -> None:
    provider = Scripted([StreamBatch([chunk("abcd")], None, False)], hang=True)
    p, metrics, registry, records = wired(provider)

    async def consume() -> None:
        async with p.exchange(ctx(), Endpoint.CHAT, lambda: check_chat_request(body(stream=True))) as ex:
            await ex.admit()
            async for _ in ex.relay():
                pass

    async def go() -> None:
        task = asyncio.ensure_future(consume())
        await provider.hanging.wait()
        assert metrics.streams.count == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    [r] = records
    assert r.status == 499 and r.upstream_ms is not None and 0 < r.upstream_ms <= r.latency_ms
    assert metrics.streams.count == 0
    metrics.flush()
    labels = {"endpoint": "chat.completions", "model": "pub", "provider": "up", "status_class": "4xx"}
    assert registry.get_sample_value("ghostllm_requests_total", {**labels, "error_code": "client_closed"}) == 1


def test_a_refused_stream_was_never_in_flight_nor_upstream() -> None:
    p, metrics, registry, records = wired(Scripted([]))

    async def go() -> None:
        async with p.exchange(ctx(), Endpoint.CHAT, lambda: check_chat_request(body(model="x", stream=True))) as ex:
            await ex.admit()

    with pytest.raises(ModelNotFound):
        asyncio.run(go())
    [r] = records
    assert r.upstream_ms is None and metrics.streams.count == 0
    metrics.flush()
    labels = {"endpoint": "chat.completions", "model": "unknown", "provider": "none", "status_class": "4xx"}
    assert registry.get_sample_value("ghostllm_requests_total", {**labels, "error_code": "model_not_found"}) == 1
    assert registry.get_sample_value("ghostllm_upstream_duration_seconds_count", {**labels}) is None


def test_the_loop_publishes_and_close_pushes_the_rest() -> None:
    p, metrics, registry, _ = wired(Scripted([]))
    labels = {"endpoint": "chat.completions", "model": "pub", "provider": "up", "status_class": "2xx", "error_code": ""}

    async def once() -> None:
        async with p.exchange(ctx(), Endpoint.CHAT, lambda: check_chat_request(body())) as ex:
            await ex.admit()
            await ex.complete()

    async def go() -> None:
        metrics.interval_s = 0.01
        metrics.start()
        await once()
        for _ in range(1000):  # the loop's next round, whenever it comes (10 s at most)
            if registry.get_sample_value("ghostllm_requests_total", labels) == 1:
                break
            await asyncio.sleep(0.01)
        await once()
        await metrics.close()

    asyncio.run(go())
    assert registry.get_sample_value("ghostllm_requests_total", labels) == 2
