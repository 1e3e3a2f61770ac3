"""ghostllm.v1.EmbeddingService: typed gRPC embeddings."""

from __future__ import annotations

from ghostllm.api import typed
from ghostllm.api.boundary import unary
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.protocol.common import Json
from ghostllm.protocol.embeddings import (
    check_embedding_request,
    embedding_request_from_proto,
    embedding_response_to_proto,
)
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.v1 import embeddings_pb2, embeddings_pb2_grpc


class EmbeddingService(embeddings_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    @unary
    async def CreateEmbedding(
        self, request: embeddings_pb2.EmbeddingRequest, rc: RequestContext
    ) -> embeddings_pb2.EmbeddingResponse:
        def decode() -> Json:
            body = check_embedding_request(embedding_request_from_proto(request))
            # The typed reply holds floats, whatever encoding the client named.
            return {**body, "encoding_format": "float"}

        return await typed.answer(self.pipeline, rc, Endpoint.EMBEDDINGS, decode, embedding_response_to_proto)
