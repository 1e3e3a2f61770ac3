"""ghostllm.v1.ChatService: typed gRPC chat completions, unary and streaming."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from ghostllm.api import typed
from ghostllm.api.boundary import streaming, unary
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.protocol.chat import (
    chat_chunk_to_proto,
    chat_completion_to_proto,
    chat_request_from_proto,
    check_chat_request,
)
from ghostllm.protocol.common import Json
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.v1 import chat_pb2, chat_pb2_grpc

Request = chat_pb2.ChatCompletionRequest
Chunk = chat_pb2.ChatCompletionChunk


def _decoder(request: Request) -> Json:
    return check_chat_request(chat_request_from_proto(request))


class ChatService(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    @unary
    async def CreateChatCompletion(self, request: Request, rc: RequestContext) -> chat_pb2.ChatCompletion:
        return await typed.answer(self.pipeline, rc, Endpoint.CHAT, lambda: _decoder(request), chat_completion_to_proto)

    @streaming
    def StreamChatCompletion(self, request: Request, rc: RequestContext) -> AsyncGenerator[Chunk]:
        return typed.stream(self.pipeline, rc, Endpoint.CHAT, lambda: _decoder(request), chat_chunk_to_proto)
