"""One request on its way through the gateway: what was admitted, what the upstream
answered, what was relayed. Every endpoint, typed gRPC and REST, unary and
streaming, is served through one of these:

    async with pipeline.exchange(rc, Endpoint.CHAT, decode) as ex:
        await ex.admit()           # the pipeline's stages, in order
        data = await ex.complete() # or: async for chunks, done in ex.relay()

Leaving the `async with` settles the request exactly once, whatever happened
(success, error, client cancel, shutdown).

The upstream call walks the router's plan (routing/router.py): a retryable failure
(connect error, timeout, the upstream's 429/5xx) before anything reached the client is
retried on the same deployment after a jittered backoff (`routing.retries` times), then on
the plan's next deployment, then on the fallback models'; the request's retry budget caps
the whole. Once an answer has started, nothing is retried: a stream that breaks or stalls
(its deployment's idle_timeout_s) ends with the in-band error and is settled like any other.
A client that goes away cancels the attempt in flight or the backoff wait, and nothing more
is tried. Each attempt runs under its deployment's own timeouts (made once, in the
catalogue). The body is sent unchanged every time; the answer names the model and
deployment that served it.

With tracing on (ghostllm/tracing/), the exchange carries its request's trace: admission, each
attempt and the relay get their spans at the four places `trace` is checked; off, those checks
are all it costs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ghostllm.auth.principal import Principal
from ghostllm.errors import GhostError, UnusableAnswer
from ghostllm.gateway.context import RequestContext
from ghostllm.protocol.common import wants_stream, wants_usage
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Call, Json
from ghostllm.routing.catalogue import Deployment, Model
from ghostllm.routing.router import DeploymentState, Plan, Router, retryable

if TYPE_CHECKING:
    from ghostllm.tracing.spans import RequestTrace

# An admit stage: fills the exchange in, or raises the error the client gets.
Stage = Callable[["Exchange"], Awaitable[None]]
# Settle: called once when the exchange ends, with what ended it.
Settle = Callable[["Exchange", BaseException | None], None]
# Names the deployment that served the answer (REST header, gRPC initial metadata).
DEPLOYMENT_HEADER = "x-ghostllm-deployment"


def _output_chars(choices: list[Any]) -> int:
    """Characters of generated output in a chunk's choices (text, content, tool arguments)."""
    n = 0
    for c in choices:
        delta = c.get("delta")
        if delta is None:
            text = c.get("text")
            n += len(text) if isinstance(text, str) else 0
            continue
        content = delta.get("content")
        if content:
            n += len(content)
        for tc in delta.get("tool_calls") or ():
            args = (tc.get("function") or {}).get("arguments")
            if args:
                n += len(args)
    return n


class Exchange:
    __slots__ = (
        "_attempt_started",
        "_deadline",
        "_decode",
        "_last_error",
        "attempts",
        "body",
        "call",
        "called",
        "ctx",
        "deployment",
        "endpoint",
        "error",
        "first_output_at",
        "include_usage",
        "model",
        "principal",
        "relayed_chars",
        "router",
        "served",
        "settle",
        "settled",
        "stages",
        "stream",
        "trace",
        "tried",
        "usage",
    )

    def __init__(
        self,
        stages: Sequence[Stage],
        settle: Settle,
        ctx: RequestContext,
        endpoint: Endpoint,
        decode: Callable[[], Json],
        stream: bool | None,
        trace: RequestTrace | None = None,
    ) -> None:
        self.stages = stages
        self.settle = settle
        self.ctx = ctx
        self.endpoint = endpoint
        self._decode = decode
        # None: the body's `stream` decides (REST); the typed RPCs fix it.
        self.stream = stream
        self.body: Json | None = None
        # Who is calling: set by the authenticate stage (None for an open endpoint).
        self.principal: Principal | None = None
        self.include_usage = False
        self.model: Model | None = None
        # The model's first deployment once resolved; during the call, the one being tried
        # (after it, the one that served, or the last one tried).
        self.deployment: Deployment | None = None
        # Set by the ResolveModel stage; None: the model's first deployment, once, no retries.
        self.router: Router | None = None
        # The model that answered (the requested one, or a fallback).
        self.served: Model | None = None
        self.attempts = 0
        self.tried: list[str] = []
        # When the running attempt's clock (re)started; None: no clock running. Each stretch is
        # added to ctx.upstream_s as it ends (a stream's clock stops while each batch is relayed).
        self._attempt_started: float | None = None
        self._deadline = 0.0
        self._last_error: GhostError | None = None
        # The caller's trace context goes upstream as it came (a traced attempt puts its own in).
        self.call = Call(request_id=ctx.request_id, traceparent=ctx.traceparent, tracestate=ctx.tracestate)
        self.trace = trace
        self.called = False
        self.usage: Usage | None = None
        self.relayed_chars = 0
        self.first_output_at: float | None = None
        # An error reported to the client in-band, after its answer had started.
        self.error: GhostError | None = None
        self.settled = False

    async def __aenter__(self) -> Exchange:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A stream whose client went away settles before its relay generator is closed (and its
        # attempt ended): its time so far counts, once.
        if self._attempt_started is not None:
            self._stop_clock()
        self.settle(self, exc)

    # ------------------------------------------------------------------ admit

    def decode(self) -> None:
        """Parse and validate the request body (the first admit stage)."""
        body = self._decode()
        self.body = body
        if self.stream is None:
            self.stream = wants_stream(body)
        self.include_usage = bool(self.stream) and wants_usage(body)

    async def admit(self) -> None:
        if self.trace is not None:
            return await self.trace.admit(self.stages, self)
        for stage in self.stages:
            await stage(self)

    @property
    def requested_model(self) -> str:
        model = self.body.get("model") if self.body is not None else None
        return model if isinstance(model, str) else ""

    # ------------------------------------------------------------------ upstream call

    def _plan(self) -> tuple[Json, Plan]:
        if self.body is None or self.deployment is None or self.model is None:
            raise RuntimeError("the exchange was not admitted")
        self.called = True
        router = self.router
        if router is None:
            return self.body, [(self.model, self.deployment)]
        self._deadline = time.monotonic() + router.config.retry_budget_s
        return self.body, router.plan(self.model, self.endpoint.capability)

    def _begin(self, model: Model, d: Deployment) -> DeploymentState | None:
        self.attempts += 1
        self._attempt_started = time.monotonic()
        self.tried.append(d.key)
        self.deployment = d
        self.call.entry = model.config
        self.call.timeouts = d.timeouts
        # An attempt that failed before any output produced nothing to count.
        self.usage = None
        return self.router.begin(d) if self.router is not None else None

    def _served(self, model: Model, d: Deployment) -> None:
        self.served = model
        self.ctx.response_headers.append((DEPLOYMENT_HEADER, d.key))

    def _stop_clock(self) -> float:
        """The running stretch of an attempt, if any, added to the upstream time; now."""
        now = time.monotonic()
        resumed = self._attempt_started
        if resumed is not None:
            self.ctx.upstream_s += now - resumed
            self._attempt_started = None
        return now

    def _upstream_time(self, started: float) -> float:
        """An attempt ended: its time (the router's sample), which counts as upstream time except
        while a stream's batches were being relayed (and the backoff after it)."""
        return self._stop_clock() - started

    def _release(self, st: DeploymentState | None) -> None:
        if st is not None and self.router is not None:
            self.router.released(st)

    async def _again(self, st: DeploymentState | None, err: GhostError, model: Model, retry: int) -> bool:
        """After a failed attempt that relayed nothing: True once it is time to retry on the
        same deployment, False to move on to the next one; raises `err` when nothing more may
        be tried (not retryable, or the retry budget is spent)."""
        router = self.router
        if router is None or st is None:
            raise err
        if not retryable(err):
            router.released(st)
            raise err
        router.failed(st)
        self._last_error = err
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise err
        if retry >= router.retries(model) or isinstance(err, UnusableAnswer):
            return False
        wait = router.delay(retry, err, remaining)
        if wait is None:
            return False
        # A client that goes away now cancels this sleep: nothing else to undo.
        await asyncio.sleep(wait)
        return True

    def _exhausted(self) -> GhostError:
        if self._last_error is None:
            raise RuntimeError("the routing plan was empty")
        return self._last_error

    async def complete(self) -> Json:
        """The whole answer, as the client sees it (the serving model's public id)."""
        body, plan = self._plan()
        endpoint, call, trace = self.endpoint, self.call, self.trace
        for model, d in plan:
            retry = 0
            while True:
                st = self._begin(model, d)
                started = time.monotonic()
                try:
                    answer = d.provider.complete(endpoint, body, d.upstream_model, call)
                    reply = await (answer if trace is None else trace.complete(answer, d, call))
                except GhostError as err:
                    self._upstream_time(started)
                    if await self._again(st, err, model, retry):
                        retry += 1
                        continue
                    break
                except BaseException:
                    self._upstream_time(started)
                    self._release(st)
                    raise
                elapsed = self._upstream_time(started)
                if st is not None and self.router is not None:
                    self.router.first_output(st, elapsed)
                    self.router.succeeded(st, elapsed)
                self.usage = reply.usage
                self._served(model, d)
                reply.data["model"] = model.id
                return reply.data
        raise self._exhausted()

    async def relay(self) -> AsyncIterator[tuple[list[Json], bool]]:
        """The stream as the client sees it: per upstream read, its chunks (the serving
        model's id; the usage chunk only when it asked, since we always ask the upstream for
        it) and whether the stream ended there."""
        body, plan = self._plan()
        endpoint, call, trace = self.endpoint, self.call, self.trace
        include_usage = self.include_usage
        router, ctx = self.router, self.ctx
        clock = time.monotonic
        for model, d in plan:
            model_id = model.id
            retry = 0
            while True:
                st = self._begin(model, d)
                started = time.monotonic()
                relayed = False
                resumed = started
                try:
                    upstream = d.provider.stream(endpoint, body, d.upstream_model, call)
                    if trace is not None:
                        upstream = trace.stream(upstream, d, call)
                    async with aclosing(upstream) as batches:
                        async for batch in batches:
                            if batch.usage is not None:
                                self.usage = batch.usage
                            out: list[Json] = []
                            for chunk in batch.chunks:
                                choices = chunk.get("choices")
                                if choices:
                                    self.relayed_chars += _output_chars(choices)
                                elif not include_usage:
                                    continue
                                if not include_usage:
                                    chunk.pop("usage", None)
                                chunk["model"] = model_id
                                out.append(chunk)
                            if self.first_output_at is None and self.relayed_chars:
                                self.first_output_at = time.monotonic()
                            if out or batch.done:
                                # Relaying is the gateway's time: the upstream clock stops until the next read.
                                ctx.upstream_s += clock() - resumed
                                self._attempt_started = None
                                if not relayed:
                                    # Before the first chunk leaves: the headers go with it.
                                    relayed = True
                                    self._served(model, d)
                                    if trace is not None:
                                        trace.relaying()
                                    if st is not None and router is not None:
                                        router.first_output(st, time.monotonic() - started)
                                yield out, batch.done
                                self._attempt_started = resumed = clock()
                except GhostError as err:
                    self._upstream_time(started)
                    if relayed:
                        # The answer has begun: it ends with the in-band error, never retried.
                        if st is not None and router is not None:
                            (router.failed if retryable(err) else router.released)(st)
                        raise
                    if await self._again(st, err, model, retry):
                        retry += 1
                        continue
                    break
                except BaseException:
                    self._upstream_time(started)
                    self._release(st)
                    raise
                elapsed = self._upstream_time(started)
                if st is not None and router is not None:
                    router.succeeded(st, elapsed)
                return
        raise self._exhausted()

    def fail(self, err: GhostError) -> None:
        """Record an error the client was told about in-band (its answer had begun)."""
        self.error = err
