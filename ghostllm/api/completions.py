"""ghostllm.v1.CompletionService: legacy text completions, typed and REST."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.api import httpbody_pb2

from ghostllm.api.context import call_of
from ghostllm.api.relay import json_body, sse_stream, whole
from ghostllm.api.status import Context, streaming, unary
from ghostllm.protocol.common import from_upstream, wants_stream, wants_usage
from ghostllm.protocol.completions import completion_request_to_openai, completion_to_proto
from ghostllm.providers.base import Json
from ghostllm.providers.registry import Registry, Route
from ghostllm.v1 import completions_pb2, completions_pb2_grpc


class CompletionService(completions_pb2_grpc.CompletionServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _prepare(self, request: completions_pb2.CompletionRequest) -> tuple[Json, Route]:
        body = completion_request_to_openai(request)
        route = self.registry.resolve(request.model, "completions")
        body["model"] = route.model.upstream
        return body, route

    @unary
    async def CreateCompletion(
        self, request: completions_pb2.CompletionRequest, context: Context
    ) -> completions_pb2.Completion:
        body, route = self._prepare(request)
        data = await route.provider.completion(body, call_of(context))
        data["model"] = route.model.id
        return from_upstream(completion_to_proto, data)

    @streaming
    async def CompletionsHttp(
        self, request: completions_pb2.CompletionRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        body, route = self._prepare(request)
        if not wants_stream(request):
            yield json_body(await route.provider.completion(body, call_of(context)), route.model.id)
            return
        stream = route.provider.stream_completion(body, call_of(context))
        async for message in sse_stream(stream, route.model.id, wants_usage(request)):
            yield message

    @unary
    async def CompletionsHttpUnary(
        self, request: completions_pb2.CompletionRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        # Errors abort inside the streaming bridge, with their status already set.
        return await whole(self.CompletionsHttp(request, context))
