"""ghostllm.v1.ModelService: the model catalogue (GET /v1/models, /v1/models/{model})."""

from __future__ import annotations

from ghostllm.api.status import Context, unary
from ghostllm.providers.registry import Registry, Route
from ghostllm.v1 import models_pb2, models_pb2_grpc


def model_to_proto(route: Route, created: int) -> models_pb2.Model:
    m = route.model
    caps = set(m.capabilities)
    out = models_pb2.Model(
        id=m.id,
        object="model",
        created=created,
        owned_by=m.owned_by or route.provider.id,
        provider=route.provider.id,
        pricing=models_pb2.ModelPricing(
            input_per_1k=m.input_price_per_1m / 1000,
            output_per_1k=m.output_price_per_1m / 1000,
            input_per_1m=m.input_price_per_1m,
            output_per_1m=m.output_price_per_1m,
        ),
        capabilities=models_pb2.ModelCapabilities(
            vision="vision" in caps,
            functions="functions" in caps,
            streaming="streaming" in caps,
            embeddings="embeddings" in caps,
            completions="completions" in caps,
        ),
    )
    if m.context_length:
        out.context_length = m.context_length
    return out


class ModelService(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @unary
    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context
    ) -> models_pb2.ListModelsResponse:
        created = self.registry.created
        return models_pb2.ListModelsResponse(
            object="list", data=[model_to_proto(r, created) for r in self.registry.routes]
        )

    @unary
    async def GetModel(self, request: models_pb2.GetModelRequest, context: Context) -> models_pb2.Model:
        return model_to_proto(self.registry.resolve(request.model), self.registry.created)
