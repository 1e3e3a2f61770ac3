"""The request pipeline: an ordered list of admit stages, the upstream call (on the
exchange), and settle, which hands one usage record per request to every sink.

Stages are async callables on the exchange, run in order by `Exchange.admit`;
today: authenticate, decode the body, authorize, resolve the model; rate
limits and budgets join this list. Sinks are plain callables
taking a UsageRecord: the access log today; the ledger, limits and metrics later.
With tracing on, the pipeline starts each request's trace and settle ends it (after the
sinks, with the record's outcome); off, settle copies the caller's trace ids into the record.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import orjson

from ghostllm.config import AUTO_MODEL
from ghostllm.errors import GhostError
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.cost import cost_nano_usd
from ghostllm.gateway.exchange import Exchange, Stage
from ghostllm.gateway.usage import UsageRecord
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.providers.base import Json
from ghostllm.tracing import w3c

if TYPE_CHECKING:
    # Only a worker with tracing on loads the SDK behind it.
    from ghostllm.tracing.tracer import Tracer

log = logging.getLogger(__name__)

Sink = Callable[[UsageRecord], None]
# A client that went away before its answer was complete (nginx's convention).
CLIENT_CLOSED = 499
# Rough characters per token, for counts the upstream did not report.
CHARS_PER_TOKEN = 4
# What a client sent goes into records at most this long (a 31 KB model name is still one log line).
MAX_FIELD_CHARS = 256


def _status(ex: Exchange, exc: BaseException | None) -> tuple[int, str | None]:
    err = ex.error
    if exc is None and err is None:
        return ex.ctx.http_status or 200, None
    if err is None and isinstance(exc, GhostError):
        err = exc
    if err is not None:
        return err.http_status, err.code
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return CLIENT_CLOSED, "client_closed"
    return 500, "server_error"


def _recorded_model(ex: Exchange) -> str:
    """The model asked for (as sent, when it resolved to none); when the request named none
    ("auto" chose it), the one that served, else the one chosen first."""
    model, requested = ex.model, ex.requested_model
    if model is None:
        return requested[:MAX_FIELD_CHARS]
    if ex.served is not None and requested == AUTO_MODEL:
        return ex.served.id
    return model.id


def estimate_prompt(body: Json | None) -> int:
    """Prompt tokens by size (what was sent, 4 characters a token): for counts the upstream
    did not report, and for what a rate limit reserves before it does."""
    if not body:
        return 0
    sent = body.get("messages") or body.get("prompt") or body.get("input")
    try:
        return math.ceil(len(orjson.dumps(sent)) / CHARS_PER_TOKEN)
    except orjson.JSONEncodeError:
        return 0


class Pipeline:
    def __init__(self, stages: Sequence[Stage], sinks: Sequence[Sink], tracer: Tracer | None = None) -> None:
        self.stages = tuple(stages)
        self.sinks = tuple(sinks)
        # None: tracing is off, and no request makes a span.
        self.tracer = tracer

    def exchange(
        self, ctx: RequestContext, endpoint: Endpoint, decode: Callable[[], Json], *, stream: bool | None = None
    ) -> Exchange:
        tracer = self.tracer
        trace = (
            None
            if tracer is None
            else tracer.start(endpoint, ctx.started_at, ctx.request_id, ctx.traceparent, ctx.tracestate)
        )
        return Exchange(self.stages, self.settle, ctx, endpoint, decode, stream, trace)

    def settle(self, ex: Exchange, exc: BaseException | None) -> None:
        """Once per request, whatever happened. Never awaits: it runs during cancellation."""
        if ex.settled:
            return
        ex.settled = True
        now = time.monotonic()
        status, code = _status(ex, exc)
        usage = ex.usage
        estimated = False
        if usage is not None:
            prompt, completion, total = usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
            cached, reasoning = usage.cached_tokens, usage.reasoning_tokens
        else:
            prompt = completion = total = 0
            cached = reasoning = None
            # The upstream may have done the work without telling us (a cancelled
            # stream gets no final usage chunk): count what was sent and relayed.
            if ex.called and (ex.relayed_chars or status == CLIENT_CLOSED):
                prompt = estimate_prompt(ex.body)
                completion = math.ceil(ex.relayed_chars / CHARS_PER_TOKEN)
                total = prompt + completion
                estimated = True
        ctx = ex.ctx
        d = ex.deployment
        who = ex.principal
        model = ex.model
        # The serving deployment's prices (its own, or its model's: a fallback's, maybe).
        prices = d.prices if d is not None and d.prices is not None else model.config if model is not None else None
        cost = cost_nano_usd(prices, prompt, completion, cached) if prices is not None else 0
        trace = ex.trace
        trace_id: str | None = None
        span_id: str | None = None
        if trace is not None:
            trace_id, span_id = trace.ids
        elif ctx.traceparent:
            trace_id, span_id = w3c.ids(ctx.traceparent)
        record = UsageRecord(
            request_id=ctx.request_id[:MAX_FIELD_CHARS],
            started_at=ctx.started_at,
            endpoint=ex.endpoint.value,
            model=_recorded_model(ex),
            provider=d.provider.id if d is not None else None,
            upstream_model=d.upstream_model if d is not None else None,
            stream=bool(ex.stream),
            status=status,
            error_code=code,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            cached_tokens=cached,
            reasoning_tokens=reasoning,
            estimated=estimated,
            latency_ms=round((now - ctx.started) * 1000, 3),
            ttft_ms=round((ex.first_output_at - ctx.started) * 1000, 3) if ex.first_output_at else None,
            client_ip=ctx.client_ip[:MAX_FIELD_CHARS],
            user_agent=ctx.user_agent[:MAX_FIELD_CHARS],
            request_bytes=ctx.request_bytes,
            api_key_id=who.key_id if who is not None else None,
            user_id=who.user_id if who is not None else None,
            team_id=who.team_id if who is not None else None,
            cost_nano_usd=cost,
            record_id=uuid.uuid4().hex,
            deployment=d.key if d is not None and ex.attempts else None,
            attempts=ex.attempts,
            deployments_tried=tuple(ex.tried),
            upstream_ms=round(ex.ctx.upstream_s * 1000, 3) if ex.attempts else None,
            trace_id=trace_id,
            span_id=span_id,
        )
        for sink in self.sinks:
            try:
                sink(record)
            except Exception:
                log.exception("usage sink %r failed for request %s", sink, ctx.request_id)
        if trace is not None:
            try:
                trace.end(record, ex.served.id if ex.served is not None else None)
            except Exception:
                log.exception("tracing failed for request %s", ctx.request_id)
