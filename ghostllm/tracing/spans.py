"""The spans of one traced request:

    chat gpt-4o            SERVER  from arrival to settle; its parent is the caller's traceparent
    ├── admit              INTERNAL  the admit stages (the one that refused the request is named)
    ├── chat gpt-4o-2024   CLIENT  one per upstream attempt, named after the upstream's model; its
    │                              context is the traceparent the upstream gets
    └── relay              INTERNAL  a stream's, from its first chunk to settle

A request the sampler leaves out gets its server span only (the SDK's non-recording one, whose
context still goes upstream, marked not sampled): its other spans would record nothing.
No span is ever made current (no context is attached): every parent is passed explicitly, so
nothing leaks across the tasks and generators a request runs in. Spans carry names, models,
token counts, statuses and error codes, never a prompt, a completion, a key or an error message
(an upstream's message may quote the prompt).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any, Protocol, TypeVar

from opentelemetry import trace as otel
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace import TraceState as OTelTraceState

from ghostllm.errors import GhostError
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Call, Json, Reply, StreamBatch
from ghostllm.routing.catalogue import Deployment
from ghostllm.tracing import names, w3c

E = TypeVar("E")
Attributes = dict[str, Any]


class Outcome(Protocol):
    """How the request ended, as settle recorded it (a UsageRecord is one)."""

    @property
    def model(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def error_code(self) -> str | None: ...
    @property
    def stream(self) -> bool: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def estimated(self) -> bool: ...
    @property
    def deployment(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...


def remote_parent(traceparent: str, tracestate: str) -> Context:
    """A context whose span is the caller's (from a valid traceparent)."""
    trace_id, span_id = w3c.ids(traceparent)
    state = OTelTraceState.from_header([tracestate]) if tracestate else None
    parent = SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(w3c.flags(traceparent)),
        trace_state=state,
    )
    return otel.set_span_in_context(NonRecordingSpan(parent), Context())


def error_type(exc: BaseException) -> str:
    if isinstance(exc, GhostError):
        return exc.code or type(exc).__name__
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return names.CANCELLED
    return type(exc).__qualname__


def _failed(span: Span, exc: BaseException, upstream_status: int = 0) -> None:
    attributes: Attributes = {names.ERROR_TYPE: error_type(exc)}
    if upstream_status:
        attributes[names.HTTP_STATUS] = upstream_status
    span.set_attributes(attributes)
    # The type, never the message: an upstream's message may quote the prompt.
    span.set_status(Status(StatusCode.ERROR))


def _stage_name(stage: object) -> str:
    return getattr(stage, "__name__", None) or type(stage).__name__


def _usage(attributes: Attributes, usage: Usage | None) -> None:
    if usage is not None:
        attributes[names.INPUT_TOKENS] = usage.prompt_tokens
        attributes[names.OUTPUT_TOKENS] = usage.completion_tokens


def _response(attributes: Attributes, data: Json) -> None:
    model, rid = data.get("model"), data.get("id")
    if isinstance(model, str):
        attributes[names.RESPONSE_MODEL] = model
    if isinstance(rid, str):
        attributes[names.RESPONSE_ID] = rid


class RequestTrace:
    __slots__ = ("_context", "_genai", "_operation", "_relay", "_tracer", "recording", "server")

    def __init__(
        self,
        tracer: otel.Tracer,
        endpoint: Endpoint,
        started_at: float,
        request_id: str,
        traceparent: str = "",
        tracestate: str = "",
    ) -> None:
        self._tracer = tracer
        self._operation, self._genai = names.operation(endpoint)
        parent = remote_parent(traceparent, tracestate) if traceparent else Context()
        attributes: Attributes = {names.REQUEST_ID: request_id}
        attributes[names.OPERATION if self._genai else names.ENDPOINT] = self._operation
        # Named "{operation} {model}" at the end, once the model is known.
        self.server = tracer.start_span(
            self._operation, parent, SpanKind.SERVER, attributes, start_time=int(started_at * 1e9)
        )
        self.recording = self.server.is_recording()
        self._context = otel.set_span_in_context(self.server, Context())
        self._relay: Span | None = None

    @property
    def ids(self) -> tuple[str, str]:
        """The trace id and the server span's id, as the access log shows them (lowercase hex)."""
        c = self.server.get_span_context()
        return f"{c.trace_id:032x}", f"{c.span_id:016x}"

    async def admit(self, stages: Sequence[Callable[[E], Awaitable[None]]], ex: E) -> None:
        """The admit stages, in order, under one span."""
        if not self.recording:
            for stage in stages:
                await stage(ex)
            return
        span = self._tracer.start_span(names.ADMIT_SPAN, self._context)
        current: object = None
        try:
            for stage in stages:
                current = stage
                await stage(ex)
        except BaseException as exc:
            span.set_attribute(names.STAGE, _stage_name(current))
            _failed(span, exc)
            raise
        finally:
            span.end()

    @staticmethod
    def _propagate(span: Span, call: Call) -> None:
        """The upstream gets `span`'s context as its parent."""
        c = span.get_span_context()
        call.traceparent = w3c.traceparent(c.trace_id, c.span_id, c.trace_flags)
        call.tracestate = c.trace_state.to_header() if c.trace_state else ""

    def _attempt(self, d: Deployment, call: Call) -> Span:
        """An upstream attempt's span (a recording request's)."""
        config = d.provider.config
        host, port = config.address
        attributes: Attributes = {
            names.REQUEST_MODEL: d.upstream_model,
            names.PROVIDER: names.provider_name(config.type),
            names.DEPLOYMENT: d.key,
            names.SERVER_ADDRESS: host,
        }
        if port is not None:
            attributes[names.SERVER_PORT] = port
        if self._genai:
            attributes[names.OPERATION] = self._operation
        span = self._tracer.start_span(
            f"{self._operation} {d.upstream_model}", self._context, SpanKind.CLIENT, attributes
        )
        self._propagate(span, call)
        call.upstream_status = 0
        return span

    async def complete(self, answer: Awaitable[Reply], d: Deployment, call: Call) -> Reply:
        """One attempt at a whole answer (`answer`: the provider's call, not yet started)."""
        if not self.recording:
            self._propagate(self.server, call)
            return await answer
        span = self._attempt(d, call)
        try:
            reply = await answer
        except BaseException as exc:
            _failed(span, exc, call.upstream_status)
            span.end()
            raise
        attributes: Attributes = {names.HTTP_STATUS: 200}
        # Read before the exchange puts the client's model id in.
        _response(attributes, reply.data)
        _usage(attributes, reply.usage)
        span.set_attributes(attributes)
        span.end()
        return reply

    def stream(self, batches: AsyncGenerator[StreamBatch], d: Deployment, call: Call) -> AsyncGenerator[StreamBatch]:
        """One attempt at a stream: the provider's batches (not yet started), passed through as they come."""
        if not self.recording:
            self._propagate(self.server, call)
            return batches
        return self._stream(batches, d, call)

    async def _stream(
        self, batches: AsyncGenerator[StreamBatch], d: Deployment, call: Call
    ) -> AsyncGenerator[StreamBatch]:
        span = self._attempt(d, call)
        usage: Usage | None = None
        first = True
        try:
            async with aclosing(batches):
                async for batch in batches:
                    if first and batch.chunks:
                        first = False
                        attributes: Attributes = {names.HTTP_STATUS: 200}
                        _response(attributes, batch.chunks[0])
                        span.set_attributes(attributes)
                    if batch.usage is not None:
                        usage = batch.usage
                    yield batch
        except BaseException as exc:
            _failed(span, exc, call.upstream_status)
            raise
        finally:
            counts: Attributes = {}
            _usage(counts, usage)
            if counts:
                span.set_attributes(counts)
            span.end()

    def relaying(self) -> None:
        """A stream's first chunk is leaving for the client."""
        if self._relay is None and self.recording:
            self._relay = self._tracer.start_span(names.RELAY_SPAN, self._context)

    def end(self, outcome: Outcome, served: str | None = None) -> None:
        """The request is settled: the server span (and the relay) end with its outcome."""
        if not self.recording:
            return
        span = self.server
        model = outcome.model
        attributes: Attributes = {
            names.HTTP_STATUS: outcome.status,
            names.ATTEMPTS: outcome.attempts,
            names.REQUEST_STREAM: outcome.stream,
        }
        if model:
            span.update_name(f"{self._operation} {model}")
            attributes[names.REQUEST_MODEL] = model
        if served:
            attributes[names.RESPONSE_MODEL] = served
        if outcome.deployment:
            attributes[names.DEPLOYMENT] = outcome.deployment
        if outcome.prompt_tokens or outcome.completion_tokens:
            attributes[names.INPUT_TOKENS] = outcome.prompt_tokens
            attributes[names.OUTPUT_TOKENS] = outcome.completion_tokens
            if outcome.estimated:
                attributes[names.ESTIMATED] = True
        if outcome.status >= 400:
            attributes[names.ERROR_TYPE] = outcome.error_code or str(outcome.status)
        span.set_attributes(attributes)
        # A server span fails on 5xx only (HTTP's convention): a 4xx is the caller's.
        if outcome.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        if self._relay is not None:
            self._relay.end()
        span.end()
