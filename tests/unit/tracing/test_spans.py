"""The span tree of a request through the real pipeline, exported to the SDK's own in-memory
exporter: the server span under the caller's traceparent, admission, each upstream attempt
(GenAI attributes; its context is what the upstream gets), the relay of a stream; failures,
retries, sampling; and the off path, which makes no span, attaches no context and passes the
caller's trace context upstream unchanged.

The provider is a scripted in-memory upstream (the Provider interface, no sockets) that keeps
the trace context each attempt was sent with; the real transport is tests/e2e/api/test_tracing.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ghostllm.config import RoutingConfig, TracingConfig, parse_config
from ghostllm.errors import GhostError, ModelNotFound, ProviderError
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.gateway.stages import ResolveModel, decode_body
from ghostllm.gateway.usage import UsageRecord
from ghostllm.protocol.chat import check_chat_request
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Call, Json, Provider, Reply, StreamBatch
from ghostllm.routing.catalogue import Catalogue
from ghostllm.routing.router import Router
from ghostllm.tracing import w3c
from ghostllm.tracing.tracer import Tracer
from tests.support.providers import InMemory

CONFIG = parse_config(
    {
        "providers": [{"id": "up", "type": "openai", "base_url": "http://127.0.0.1:1/v1"}],
        "models": [{"id": "pub", "provider": "up", "upstream_model": "private"}],
    },
    env={},
)
USAGE = Usage(3, 5, 8)
SECRET = "the-prompt-never-goes-into-a-span"
CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CALLER_TRACE, CALLER_SPAN = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
STATE = "congo=t61rcWkgMzE"


def chunk(content: str | None) -> Json:
    return {"id": "chatcmpl-1", "model": "private-2024", "choices": [] if content is None else [
        {"index": 0, "delta": {"content": content}}
    ]}  # fmt: skip


class Scripted(InMemory):
    """Answers at once; fails the first `failures` attempts; keeps each attempt's trace context."""

    def __init__(self, failures: int = 0, status: int = 503, hang: bool = False) -> None:
        super().__init__(CONFIG.providers[0])
        self.failures = failures
        self.status = status
        self.hang = hang
        self.hanging = asyncio.Event()
        self.sent: list[tuple[str, str]] = []

    def _attempt(self, call: Call) -> None:
        self.sent.append((call.traceparent, call.tracestate))
        if self.failures:
            self.failures -= 1
            call.upstream_status = self.status  # what the transport records of a refusal
            raise ProviderError("the upstream said no")

    async def complete(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> Reply:
        self._attempt(call)
        return Reply({"id": "chatcmpl-1", "model": "private-2024", "choices": [{"index": 0}]}, USAGE)

    async def stream(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> AsyncGenerator[StreamBatch]:
        self._attempt(call)
        yield StreamBatch([chunk("Hel")], None, False)
        if self.hang:
            self.hanging.set()
            await asyncio.Event().wait()
        yield StreamBatch([chunk("lo"), chunk(None)], USAGE, True)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


def setup(
    provider: Provider, exporter: InMemorySpanExporter | None, *, ratio: float = 1.0
) -> tuple[Pipeline, list[UsageRecord]]:
    records: list[UsageRecord] = []
    catalogue = Catalogue(CONFIG, {"up": provider})
    router = Router(catalogue, RoutingConfig(retries=2, backoff_base_s=0.0, backoff_max_s=0.0))
    tracer = None
    if exporter is not None:
        tracer = Tracer(TracingConfig(enabled=True, sample_ratio=ratio), exporter, batch=False)
    return Pipeline([decode_body, ResolveModel(catalogue, router)], [records.append], tracer=tracer), records


def ctx(traceparent: str = "", tracestate: str = "") -> RequestContext:
    return RequestContext(
        request_id="r-1", started=0.0, started_at=1_700_000_000.25, traceparent=traceparent, tracestate=tracestate
    )


def body(model: str = "pub", **extra: Any) -> Json:
    return {"model": model, "messages": [{"role": "user", "content": SECRET}], **extra}


async def unary(p: Pipeline, rc: RequestContext, b: Json | None = None) -> Json:
    async with p.exchange(rc, Endpoint.CHAT, lambda: check_chat_request(b or body())) as ex:
        await ex.admit()
        return await ex.complete()


async def streamed(p: Pipeline, rc: RequestContext) -> list[Json]:
    out: list[Json] = []
    async with p.exchange(rc, Endpoint.CHAT, lambda: check_chat_request(body(stream=True))) as ex:
        await ex.admit()
        async for chunks, _ in ex.relay():
            out += chunks
    return out


def spans(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    found = {s.name: s for s in exporter.get_finished_spans()}
    assert len(found) == len(exporter.get_finished_spans()), "span names are unique here"
    return found


def server_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    [server] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    return server


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def upstream_ids(sent: str) -> tuple[int, int, int]:
    assert w3c.valid_traceparent(sent) == sent
    trace_id, span_id = w3c.ids(sent)
    return int(trace_id, 16), int(span_id, 16), w3c.flags(sent)


def assert_no_secret(exporter: InMemorySpanExporter) -> None:
    for s in exporter.get_finished_spans():
        assert SECRET not in repr(dict(s.attributes or {})) and SECRET not in s.name


def test_unary_span_tree_under_the_callers_traceparent(exporter: InMemorySpanExporter) -> None:
    provider = Scripted()
    p, records = setup(provider, exporter)
    asyncio.run(unary(p, ctx(CALLER, STATE)))
    found = spans(exporter)
    assert set(found) == {"chat pub", "admit", "chat private"}  # no relay span for a whole answer
    server, admit, attempt = found["chat pub"], found["admit"], found["chat private"]
    assert server.kind is SpanKind.SERVER and attempt.kind is SpanKind.CLIENT and admit.kind is SpanKind.INTERNAL
    # The caller's trace, and its span as the parent; its tracestate kept.
    assert {s.context.trace_id for s in found.values()} == {CALLER_TRACE}
    assert parent_id(server) == CALLER_SPAN and server.parent is not None and server.parent.is_remote
    assert parent_id(admit) == parent_id(attempt) == server.context.span_id
    assert server.context.trace_state.to_header() == STATE
    assert abs((server.start_time or 0) - 1_700_000_000_250_000_000) < 1000  # the request's arrival (ns)
    assert dict(server.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "ghostllm.request_id": "r-1",
        "http.response.status_code": 200,
        "ghostllm.attempts": 1,
        "gen_ai.request.stream": False,
        "gen_ai.request.model": "pub",
        "gen_ai.response.model": "pub",
        "ghostllm.deployment": "up/private",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 5,
    }
    assert dict(attempt.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "private",
        "gen_ai.response.model": "private-2024",  # the upstream's, not the client's id
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 5,
        "ghostllm.deployment": "up/private",
        "server.address": "127.0.0.1",
        "server.port": 1,
        "http.response.status_code": 200,
    }
    assert all(s.status.status_code is StatusCode.UNSET for s in found.values())
    # The upstream was sent the attempt span's context, and the caller's tracestate.
    [(sent, state)] = provider.sent
    assert upstream_ids(sent)[:2] == (CALLER_TRACE, attempt.context.span_id) and state == STATE
    assert upstream_ids(sent)[2] & w3c.SAMPLED
    [r] = records
    assert (r.trace_id, r.span_id) == (f"{CALLER_TRACE:032x}", f"{server.context.span_id:016x}")
    assert_no_secret(exporter)


def test_a_stream_has_its_relay_span_and_the_upstreams_usage(exporter: InMemorySpanExporter) -> None:
    provider = Scripted()
    p, _ = setup(provider, exporter)
    out = asyncio.run(streamed(p, ctx()))
    assert [c["model"] for c in out] == ["pub", "pub"]  # the span read the upstream's model, not changed it
    found = spans(exporter)
    assert set(found) == {"chat pub", "admit", "chat private", "relay"}
    server, attempt, relay = found["chat pub"], found["chat private"], found["relay"]
    # No traceparent: a new trace, ours at the root.
    assert server.parent is None and {s.context.trace_id for s in found.values()} == {server.context.trace_id}
    assert parent_id(relay) == server.context.span_id
    assert relay.start_time is not None and attempt.start_time is not None and relay.start_time > attempt.start_time
    attrs = dict(attempt.attributes or {})
    assert attrs["gen_ai.response.model"] == "private-2024" and attrs["gen_ai.usage.output_tokens"] == 5
    assert dict(server.attributes or {})["gen_ai.request.stream"] is True
    [(sent, _)] = provider.sent
    assert upstream_ids(sent)[:2] == (server.context.trace_id, attempt.context.span_id)


def test_a_refused_request_names_the_stage_and_calls_no_upstream(exporter: InMemorySpanExporter) -> None:
    p, records = setup(Scripted(), exporter)
    with pytest.raises(ModelNotFound):
        asyncio.run(unary(p, ctx(CALLER), body("nope")))
    found = spans(exporter)
    assert set(found) == {"chat nope", "admit"}
    admit, server = found["admit"], found["chat nope"]
    assert admit.status.status_code is StatusCode.ERROR and admit.status.description is None  # never the message
    assert dict(admit.attributes or {}) == {"ghostllm.admit.stage": "ResolveModel", "error.type": "model_not_found"}
    attrs = dict(server.attributes or {})
    assert (attrs["http.response.status_code"], attrs["error.type"]) == (404, "model_not_found")
    assert server.status.status_code is StatusCode.UNSET  # a 4xx is the caller's, not the server's failure
    assert records[0].trace_id == f"{CALLER_TRACE:032x}"


def test_each_attempt_has_its_span_and_the_upstream_sees_each(exporter: InMemorySpanExporter) -> None:
    provider = Scripted(failures=1, status=503)
    p, _ = setup(provider, exporter)
    asyncio.run(unary(p, ctx(CALLER)))
    attempts = sorted(
        (s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0
    )
    assert len(attempts) == 2 and len(provider.sent) == 2
    failed, served = attempts
    assert failed.status.status_code is StatusCode.ERROR and served.status.status_code is StatusCode.UNSET
    failed_attrs = dict(failed.attributes or {})
    assert (failed_attrs["error.type"], failed_attrs["http.response.status_code"]) == ("provider_error", 503)
    assert dict(served.attributes or {})["http.response.status_code"] == 200
    # Each attempt sent its own span as the parent.
    assert [upstream_ids(sent)[1] for sent, _ in provider.sent] == [failed.context.span_id, served.context.span_id]
    assert dict(server_span(exporter).attributes or {})["ghostllm.attempts"] == 2


def test_an_upstream_failure_fails_the_server_span(exporter: InMemorySpanExporter) -> None:
    p, _ = setup(Scripted(failures=9, status=500), exporter)
    with pytest.raises(GhostError):
        asyncio.run(unary(p, ctx()))
    server = server_span(exporter)
    attrs = dict(server.attributes or {})
    assert (attrs["http.response.status_code"], attrs["error.type"]) == (502, "provider_error")
    assert server.status.status_code is StatusCode.ERROR
    assert "gen_ai.usage.input_tokens" not in attrs


def test_a_client_that_goes_away_mid_stream(exporter: InMemorySpanExporter) -> None:
    provider = Scripted(hang=True)
    p, records = setup(provider, exporter)

    async def go() -> None:
        task = asyncio.create_task(streamed(p, ctx()))
        await provider.hanging.wait()  # the first chunk is out
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    found = spans(exporter)
    assert {"chat pub", "chat private", "relay"} <= set(found)
    assert dict(found["chat pub"].attributes or {})["error.type"] == "client_closed"
    assert dict(found["chat private"].attributes or {})["error.type"] == "cancelled"
    assert records[0].status == 499


def test_a_request_left_out_by_the_sampler_still_propagates(exporter: InMemorySpanExporter) -> None:
    provider = Scripted()
    p, records = setup(provider, exporter, ratio=0.0)
    asyncio.run(streamed(p, ctx()))
    assert exporter.get_finished_spans() == ()
    [(sent, _)] = provider.sent
    trace_id, span_id, flags = upstream_ids(sent)
    assert not flags & w3c.SAMPLED  # not sampled, as the upstream is told
    assert records[0].trace_id == f"{trace_id:032x}" and records[0].span_id == f"{span_id:016x}"
    # A caller's unsampled trace is not sampled either, whatever the ratio.
    provider.sent.clear()
    p, _ = setup(provider, exporter, ratio=1.0)
    asyncio.run(unary(p, ctx(CALLER[:-2] + "00")))
    assert exporter.get_finished_spans() == ()
    assert upstream_ids(provider.sent[0][0])[0] == CALLER_TRACE


def test_off_makes_no_span_attaches_nothing_and_passes_the_callers_context() -> None:
    provider = Scripted()
    p, records = setup(provider, None)
    seen: list[object] = []

    async def go() -> None:
        async with p.exchange(ctx(CALLER, STATE), Endpoint.CHAT, lambda: check_chat_request(body())) as ex:
            assert ex.trace is None
            await ex.admit()
            await ex.complete()
            seen.append(otel_context.get_current())
            seen.append(otel_trace.get_current_span())

    asyncio.run(go())
    assert seen == [otel_context.Context(), otel_trace.INVALID_SPAN]
    assert provider.sent == [(CALLER, STATE)]  # unchanged
    r = records[0]
    assert (r.trace_id, r.span_id) == (f"{CALLER_TRACE:032x}", f"{CALLER_SPAN:016x}")
    # No traceparent: nothing sent, nothing logged.
    asyncio.run(unary(p, ctx()))
    assert provider.sent[1] == ("", "") and (records[1].trace_id, records[1].span_id) == (None, None)
