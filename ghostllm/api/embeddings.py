"""ghostllm.v1.EmbeddingService: typed embeddings and the REST bridge for /v1/embeddings."""

from __future__ import annotations

from google.api import httpbody_pb2

from ghostllm.api.context import call_of
from ghostllm.api.relay import json_body
from ghostllm.api.status import Context, unary
from ghostllm.protocol.common import from_upstream
from ghostllm.protocol.embeddings import embedding_request_to_openai, embedding_response_to_proto
from ghostllm.providers.base import Json
from ghostllm.providers.registry import Registry, Route
from ghostllm.v1 import embeddings_pb2, embeddings_pb2_grpc


class EmbeddingService(embeddings_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _prepare(self, request: embeddings_pb2.EmbeddingRequest) -> tuple[Json, Route]:
        body = embedding_request_to_openai(request)
        route = self.registry.resolve(request.model, "embeddings")
        body["model"] = route.model.upstream
        return body, route

    @unary
    async def CreateEmbedding(
        self, request: embeddings_pb2.EmbeddingRequest, context: Context
    ) -> embeddings_pb2.EmbeddingResponse:
        body, route = self._prepare(request)
        body["encoding_format"] = "float"
        data = await route.provider.embeddings(body, call_of(context))
        data["model"] = route.model.id
        return from_upstream(embedding_response_to_proto, data)

    @unary
    async def EmbeddingsHttp(self, request: embeddings_pb2.EmbeddingRequest, context: Context) -> httpbody_pb2.HttpBody:
        body, route = self._prepare(request)
        return json_body(await route.provider.embeddings(body, call_of(context)), route.model.id)
