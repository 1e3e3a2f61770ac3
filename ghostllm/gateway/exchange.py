"""One request on its way through the gateway: what was admitted, what the upstream
answered, what was relayed. Every endpoint, typed gRPC and REST, unary and
streaming, is served through one of these:

    async with pipeline.exchange(rc, Endpoint.CHAT, decode) as ex:
        await ex.admit()           # the pipeline's stages, in order
        data = await ex.complete() # or: async for chunks, done in ex.relay()

Leaving the `async with` settles the request exactly once, whatever happened
(success, error, client cancel, shutdown).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import Any

from ghostllm.auth.principal import Principal
from ghostllm.errors import GhostError
from ghostllm.gateway.context import RequestContext
from ghostllm.protocol.common import wants_stream, wants_usage
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Call, Json
from ghostllm.routing.catalogue import Deployment, Model

# An admit stage: fills the exchange in, or raises the error the client gets.
Stage = Callable[["Exchange"], Awaitable[None]]
# Settle: called once when the exchange ends, with what ended it.
Settle = Callable[["Exchange", BaseException | None], None]


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
        "_decode",
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
        "settle",
        "settled",
        "stages",
        "stream",
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
        self.deployment: Deployment | None = None
        self.call = Call(request_id=ctx.request_id)
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
        for stage in self.stages:
            await stage(self)

    @property
    def requested_model(self) -> str:
        model = self.body.get("model") if self.body is not None else None
        return model if isinstance(model, str) else ""

    # ------------------------------------------------------------------ upstream call

    def _target(self) -> tuple[Json, Deployment, Model]:
        if self.body is None or self.deployment is None or self.model is None:
            raise RuntimeError("the exchange was not admitted")
        return self.body, self.deployment, self.model

    async def complete(self) -> Json:
        """The whole answer, as the client sees it (its model id, not the upstream's)."""
        body, d, model = self._target()
        self.called = True
        self.call.entry = model.config
        reply = await d.provider.complete(self.endpoint, body, d.upstream_model, self.call)
        self.usage = reply.usage
        reply.data["model"] = model.id
        return reply.data

    async def relay(self) -> AsyncIterator[tuple[list[Json], bool]]:
        """The stream as the client sees it: per upstream read, its chunks (its model id;
        the usage chunk only when it asked, since we always ask the upstream for it) and
        whether the stream ended there."""
        body, d, model = self._target()
        model_id = model.id
        include_usage = self.include_usage
        self.called = True
        self.call.entry = model.config
        async with aclosing(d.provider.stream(self.endpoint, body, d.upstream_model, self.call)) as batches:
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
                    yield out, batch.done

    def fail(self, err: GhostError) -> None:
        """Record an error the client was told about in-band (its answer had begun)."""
        self.error = err
