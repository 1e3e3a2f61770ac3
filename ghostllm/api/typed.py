"""Serving a typed gRPC endpoint through the pipeline: the proto request converted to
OpenAI JSON (checked by the REST rules), the answer converted back to typed messages."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import TypeVar

from google.protobuf.message import Message

from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.protocol.common import Json, from_upstream
from ghostllm.protocol.endpoints import Endpoint

M = TypeVar("M", bound=Message)
Decode = Callable[[], Json]


async def answer(
    pipeline: Pipeline,
    rc: RequestContext,
    endpoint: Endpoint,
    decode: Callable[[], Json],
    to_proto: Callable[[Json], M],
) -> M:
    async with pipeline.exchange(rc, endpoint, decode, stream=False) as ex:
        await ex.admit()
        return from_upstream(to_proto, await ex.complete())


async def stream(
    pipeline: Pipeline,
    rc: RequestContext,
    endpoint: Endpoint,
    decode: Callable[[], Json],
    to_proto: Callable[[Json], M],
) -> AsyncGenerator[M]:
    """One typed message per upstream chunk."""
    async with pipeline.exchange(rc, endpoint, decode, stream=True) as ex:
        await ex.admit()
        async for chunks, _ in ex.relay():
            for chunk in chunks:
                yield from_upstream(to_proto, chunk)
