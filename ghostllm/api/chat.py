"""ghostllm.v1.ChatService: typed gRPC chat and the REST bridge for /v1/chat/completions."""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.api import httpbody_pb2

from ghostllm.api.context import call_of
from ghostllm.api.relay import client_chunk, json_body, sse_stream, whole
from ghostllm.api.status import Context, streaming, unary
from ghostllm.protocol.chat import chat_chunk_to_proto, chat_completion_to_proto, chat_request_to_openai
from ghostllm.protocol.common import from_upstream, wants_stream, wants_usage
from ghostllm.providers.base import Json
from ghostllm.providers.registry import Registry, Route
from ghostllm.providers.sse import DONE
from ghostllm.v1 import chat_pb2, chat_pb2_grpc


class ChatService(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _prepare(self, request: chat_pb2.ChatCompletionRequest) -> tuple[Json, Route]:
        body = chat_request_to_openai(request)
        route = self.registry.resolve(request.model, "chat")
        body["model"] = route.model.upstream
        return body, route

    @unary
    async def CreateChatCompletion(
        self, request: chat_pb2.ChatCompletionRequest, context: Context
    ) -> chat_pb2.ChatCompletion:
        body, route = self._prepare(request)
        data = await route.provider.chat(body, call_of(context))
        data["model"] = route.model.id
        return from_upstream(chat_completion_to_proto, data)

    @streaming
    async def StreamChatCompletion(
        self, request: chat_pb2.ChatCompletionRequest, context: Context
    ) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        body, route = self._prepare(request)
        include_usage = wants_usage(request)
        async for batch in route.provider.stream_chat(body, call_of(context)):
            for chunk in batch:
                if chunk is DONE:
                    return
                if client_chunk(chunk, route.model.id, include_usage) is not None:
                    yield from_upstream(chat_chunk_to_proto, chunk)

    @streaming
    async def ChatCompletionsHttp(
        self, request: chat_pb2.ChatCompletionRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        body, route = self._prepare(request)
        if not wants_stream(request):
            yield json_body(await route.provider.chat(body, call_of(context)), route.model.id)
            return
        async for message in sse_stream(
            route.provider.stream_chat(body, call_of(context)), route.model.id, wants_usage(request)
        ):
            yield message

    @unary
    async def ChatCompletionsHttpUnary(
        self, request: chat_pb2.ChatCompletionRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        # Errors abort inside the streaming bridge, with their status already set.
        return await whole(self.ChatCompletionsHttp(request, context))
