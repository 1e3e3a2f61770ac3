"""What the overhead header and tracing cost a request, in this process, on uvloop: a chat
request through the worker's pipeline (decode, resolve, the upstream call against a provider
answering from memory, settle), unary and streamed (11 batches), with tracing off, off with a
caller's traceparent (checked, passed upstream, logged), on for a request the sampler leaves
out (sample_ratio 0), and on for a sampled one (three spans unary, four streamed, the batch
span processor and the OTLP protobuf encoding of every span, whose thread's CPU is counted too:
the figures are CPU time per request, all threads). End to end the off-path differences are
below what a fixed-rate run on two shared cores can resolve."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence

import uvloop
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ghostllm.api.boundary import overhead_header
from ghostllm.config import TracingConfig, parse_config
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.exchange import Stage
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.gateway.stages import ResolveModel, decode_body
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Call, Json, Reply, StreamBatch
from ghostllm.routing.catalogue import Catalogue
from ghostllm.tracing.tracer import Tracer
from tests.support.providers import InMemory

CALLS = 20_000
# Spans are exported this often (the batch processor's queue never overflows, so none is dropped).
FLUSH_EVERY = 200
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CONFIG = parse_config(
    {
        "providers": [{"id": "up", "type": "openai", "base_url": "http://127.0.0.1:9/v1"}],
        "models": [{"id": "gpt-4o", "provider": "up", "upstream_model": "gpt-4o-2024-08-06"}],
    },
    env={},
)
USAGE = Usage(12, 11, 23)
BODY: Json = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}


class Canned(InMemory):
    """An upstream that answers at once from memory: only the gateway's own work is measured."""

    def __init__(self) -> None:
        super().__init__(CONFIG.providers[0])

    async def complete(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> Reply:
        return Reply({"id": "c", "model": model, "choices": [{"index": 0, "message": {"content": "Hi"}}]}, USAGE)

    async def stream(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> AsyncGenerator[StreamBatch]:
        for _ in range(10):
            yield StreamBatch(
                [{"id": "c", "model": model, "choices": [{"index": 0, "delta": {"content": "Hi"}}]}], None, False
            )
        yield StreamBatch([{"id": "c", "model": model, "choices": []}], USAGE, True)


class Encoding(SpanExporter):
    """Encodes every batch as the OTLP/HTTP exporter would, and sends it nowhere."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        encode_spans(spans).SerializeToString()
        return SpanExportResult.SUCCESS


def _per_call_us(t0: float, calls: int) -> float:
    return (time.process_time() - t0) / calls * 1e6


def tracing_cost(calls: int = CALLS) -> dict[str, float]:
    catalogue = Catalogue(CONFIG, {"up": Canned()})
    stages: list[Stage] = [decode_body, ResolveModel(catalogue)]
    tracer = Tracer(TracingConfig(enabled=True), Encoding())
    unsampled = Tracer(TracingConfig(enabled=True, sample_ratio=0.0), Encoding())
    off, on, none = Pipeline(stages, []), Pipeline(stages, [], tracer=tracer), Pipeline(stages, [], tracer=unsampled)

    async def one(p: Pipeline, stream: bool, traceparent: str) -> None:
        rc = RequestContext(request_id="r", started=time.monotonic(), started_at=time.time(), traceparent=traceparent)
        async with p.exchange(rc, Endpoint.CHAT, lambda: BODY, stream=stream) as ex:
            await ex.admit()
            if stream:
                async for _ in ex.relay():
                    pass
            else:
                await ex.complete()

    async def go() -> dict[str, float]:
        out: dict[str, float] = {}
        rc = RequestContext(started=time.monotonic())
        t0 = time.process_time()
        for _ in range(calls):
            overhead_header(rc)
        out["overhead_header_us"] = _per_call_us(t0, calls)
        for mode in ("unary", "stream"):
            for name, p, traceparent in (
                ("off", off, ""),
                ("off_traceparent", off, TRACEPARENT),
                ("unsampled", none, ""),
                ("on", on, TRACEPARENT),
            ):
                stream = mode == "stream"
                for _ in range(500):  # warm-up
                    await one(p, stream, traceparent)
                tracer.flush()
                t0 = time.process_time()
                for i in range(calls):
                    await one(p, stream, traceparent)
                    if p is on and i % FLUSH_EVERY == 0:
                        tracer.flush()
                tracer.flush()
                out[f"{mode}_{name}_us"] = _per_call_us(t0, calls)
        return out

    try:
        return uvloop.run(go())
    finally:
        tracer.shutdown()
        unsampled.shutdown()
