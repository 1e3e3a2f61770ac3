"""ghostllm.v1.CompletionService: typed gRPC legacy text completions, unary and streaming."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from ghostllm.api import typed
from ghostllm.api.boundary import streaming, unary
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.protocol.common import Json
from ghostllm.protocol.completions import check_completion_request, completion_request_from_proto, completion_to_proto
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.v1 import completions_pb2, completions_pb2_grpc

Request = completions_pb2.CompletionRequest
Completion = completions_pb2.Completion


def _decoder(request: Request) -> Json:
    return check_completion_request(completion_request_from_proto(request))


class CompletionService(completions_pb2_grpc.CompletionServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    @unary
    async def CreateCompletion(self, request: Request, rc: RequestContext) -> Completion:
        return await typed.answer(
            self.pipeline, rc, Endpoint.COMPLETIONS, lambda: _decoder(request), completion_to_proto
        )

    @streaming
    def StreamCompletion(self, request: Request, rc: RequestContext) -> AsyncGenerator[Completion]:
        return typed.stream(self.pipeline, rc, Endpoint.COMPLETIONS, lambda: _decoder(request), completion_to_proto)
