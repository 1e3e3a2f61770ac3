"""ghostllm.gateway: admit stages, the relay, and settle's one usage record per request.

The provider here is a scripted in-memory upstream (the Provider interface,
no sockets); the real adapter over real HTTP is covered by tests/e2e."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from ghostllm.config import parse_config
from ghostllm.errors import GhostError, InvalidRequest, ModelNotFound, ProviderError
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.gateway.stages import ResolveModel, decode_body
from ghostllm.gateway.usage import UsageRecord
from ghostllm.protocol.chat import check_chat_request
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Call, Json, Provider, Reply, StreamBatch
from ghostllm.routing.catalogue import Catalogue
from tests.support.providers import InMemory

CONFIG = parse_config(
    {
        "providers": [{"id": "up", "type": "openai", "base_url": "http://127.0.0.1:1/v1"}],
        "models": [
            {"id": "pub", "provider": "up", "upstream_model": "private"},
            {"id": "emb", "provider": "up", "capabilities": ["embeddings"]},
        ],
    },
    env={},
)
USAGE = Usage(3, 5, 8)


def chunk(content: str | None, usage: Json | None = None) -> Json:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    out: Json = {"id": "c", "model": "private", "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out


class Scripted(InMemory):
    """Answers from a script: batches to stream, or an error to raise."""

    def __init__(self, batches: list[StreamBatch], fail: GhostError | None = None, hang: bool = False) -> None:
        super().__init__(CONFIG.providers[0])
        self.batches = batches
        self.fail = fail
        self.hang = hang
        self.bodies: list[Json] = []
        self.hanging = asyncio.Event()

    async def complete(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> Reply:
        self.bodies.append(body)
        if self.fail:
            raise self.fail
        return Reply({"model": model, "choices": [{"index": 0, "message": {"content": "hi"}}]}, USAGE)

    async def stream(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> AsyncGenerator[StreamBatch]:
        self.bodies.append(body)
        for b in self.batches:
            yield b
        if self.hang:
            self.hanging.set()
            await asyncio.Event().wait()
        if self.fail:
            raise self.fail


def pipeline(provider: Provider) -> tuple[Pipeline, list[UsageRecord]]:
    records: list[UsageRecord] = []
    catalogue = Catalogue(CONFIG, {"up": provider})
    return Pipeline([decode_body, ResolveModel(catalogue)], [records.append]), records


def body(**extra: Any) -> Json:
    return {"model": "pub", "messages": [{"role": "user", "content": "hello there"}], **extra}


def ctx() -> RequestContext:
    return RequestContext(request_id="r-1", client_ip="10.0.0.1", user_agent="ua", started=0.0)


async def collect(p: Pipeline, b: Json) -> list[tuple[list[Json], bool]]:
    out = []
    async with p.exchange(ctx(), Endpoint.CHAT, lambda: check_chat_request(b)) as ex:
        await ex.admit()
        async for item in ex.relay():
            out.append(item)
    return out


def test_unary_answer_and_record() -> None:
    provider = Scripted([])
    p, records = pipeline(provider)

    async def go() -> Json:
        async with p.exchange(ctx(), Endpoint.CHAT, lambda: check_chat_request(body())) as ex:
            await ex.admit()
            return await ex.complete()

    data = asyncio.run(go())
    assert data["model"] == "pub"  # the client's model id, not the upstream's
    assert provider.bodies == [body()]  # the body the provider got is the client's, untouched
    [r] = records
    assert (r.request_id, r.endpoint, r.model, r.provider, r.upstream_model) == (
        "r-1", "chat.completions", "pub", "up", "private",
    )  # fmt: skip
    assert (r.status, r.error_code, r.prompt_tokens, r.completion_tokens, r.total_tokens) == (200, None, 3, 5, 8)
    assert not r.estimated and not r.stream and r.client_ip == "10.0.0.1"


def test_stream_hides_usage_unless_asked_and_records_it() -> None:
    batches = [
        StreamBatch([chunk("Hel"), chunk("lo")], None, False),
        StreamBatch([chunk(None, {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})], USAGE, True),
    ]
    p, records = pipeline(Scripted(batches))
    out = asyncio.run(collect(p, body(stream=True)))
    assert [[c["choices"][0]["delta"]["content"] for c in cs] for cs, _ in out] == [["Hel", "lo"], []]
    assert out[-1][1] is True and all(c["model"] == "pub" for cs, _ in out for c in cs)
    assert records[0].total_tokens == 8 and records[0].stream and records[0].ttft_ms is not None

    batches = [
        StreamBatch([chunk("Hel")], None, False),
        StreamBatch([chunk(None, {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})], USAGE, True),
    ]
    p, records = pipeline(Scripted(batches))
    out = asyncio.run(collect(p, body(stream=True, stream_options={"include_usage": True})))
    assert out[-1][0][0]["usage"]["total_tokens"] == 8


@pytest.mark.parametrize(
    ("b", "status", "code"),
    [
        (body(model="nope"), 404, "model_not_found"),
        (body(model="emb"), 400, None),
        (body(temperature=9), 400, "invalid_value"),
    ],
)
def test_rejected_requests_are_recorded_once(b: Json, status: int, code: str | None) -> None:
    provider = Scripted([])
    p, records = pipeline(provider)
    with pytest.raises((ModelNotFound, InvalidRequest)):
        asyncio.run(collect(p, b))
    [r] = records
    assert (r.status, r.error_code, r.total_tokens, r.estimated) == (status, code, 0, False)
    assert provider.bodies == []


def test_upstream_failure_mid_stream_counts_what_was_relayed() -> None:
    p, records = pipeline(Scripted([StreamBatch([chunk("x" * 40)], None, False)], fail=ProviderError("cut")))
    with pytest.raises(ProviderError):
        asyncio.run(collect(p, body(stream=True)))
    [r] = records
    assert r.status == 502 and r.error_code == "provider_error"
    assert r.estimated and r.completion_tokens == 10 and r.prompt_tokens > 0


def test_client_cancel_mid_stream_settles_once_with_estimate() -> None:
    provider = Scripted([StreamBatch([chunk("abcd" * 5)], None, False)], hang=True)
    p, records = pipeline(provider)

    async def go() -> None:
        task = asyncio.ensure_future(collect(p, body(stream=True)))
        await provider.hanging.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    [r] = records
    assert r.status == 499 and r.error_code == "client_closed"
    assert r.estimated and r.completion_tokens == 5


def test_a_failing_sink_does_not_fail_the_request_or_the_others() -> None:
    records: list[UsageRecord] = []

    def broken(record: UsageRecord) -> None:
        raise RuntimeError("disk full")

    provider = Scripted([StreamBatch([chunk("a")], None, True)])
    p = Pipeline([decode_body, ResolveModel(Catalogue(CONFIG, {"up": provider}))], [broken, records.append])
    asyncio.run(collect(p, body(stream=True)))
    assert len(records) == 1
