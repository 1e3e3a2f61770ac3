"""ghostllm.v1.ModelService: the model catalogue (GET /v1/models, /v1/models/{model})."""

from __future__ import annotations

from ghostllm.api.boundary import unary
from ghostllm.config import AUTO_MODEL, Capability
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.gateway.stages import model_filter
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.routing.auto import Auto
from ghostllm.routing.catalogue import Catalogue, Model
from ghostllm.v1 import models_pb2, models_pb2_grpc

# Who "auto" belongs to in the listing: the gateway, which chooses.
AUTO_OWNER = "ghostllm"


def capabilities_to_proto(caps: frozenset[Capability]) -> models_pb2.ModelCapabilities:
    return models_pb2.ModelCapabilities(
        vision=Capability.VISION in caps,
        functions=Capability.FUNCTIONS in caps,
        streaming=Capability.STREAMING in caps,
        embeddings=Capability.EMBEDDINGS in caps,
        completions=Capability.COMPLETIONS in caps,
    )


def auto_to_proto(caps: frozenset[Capability], created: int) -> models_pb2.Model:
    """The "auto" entry: what one of the models it may choose for the key offers. No pricing
    nor context length: they are the chosen model's."""
    return models_pb2.Model(
        id=AUTO_MODEL,
        object="model",
        created=created,
        owned_by=AUTO_OWNER,
        provider=AUTO_OWNER,
        capabilities=capabilities_to_proto(caps),
    )


def model_to_proto(model: Model, created: int) -> models_pb2.Model:
    m = model.config
    caps = model.capabilities
    provider = model.deployment.provider.id
    out = models_pb2.Model(
        id=m.id,
        object="model",
        created=created,
        owned_by=m.owned_by or provider,
        provider=provider,
        pricing=models_pb2.ModelPricing(
            input_per_1k=m.input_price_per_1m / 1000,
            output_per_1k=m.output_price_per_1m / 1000,
            input_per_1m=m.input_price_per_1m,
            output_per_1m=m.output_price_per_1m,
        ),
        capabilities=capabilities_to_proto(caps),
    )
    if m.context_length:
        out.context_length = m.context_length
    return out


class ModelService(models_pb2_grpc.ModelServiceServicer):
    """Through the pipeline like every endpoint (its admit stages, its record), with no upstream
    call. With `auto` (routing.auto on), "auto" is listed last, for keys that may use a model it
    chooses from."""

    def __init__(self, pipeline: Pipeline, catalogue: Catalogue, auto: Auto | None = None) -> None:
        self.pipeline = pipeline
        self.catalogue = catalogue
        self.auto = auto

    @unary
    async def ListModels(
        self, request: models_pb2.ListModelsRequest, rc: RequestContext
    ) -> models_pb2.ListModelsResponse:
        async with self.pipeline.exchange(rc, Endpoint.MODELS, dict, stream=False) as ex:
            await ex.admit()
            created = self.catalogue.created
            allowed = model_filter(ex.principal)
            data = [
                model_to_proto(m, created)
                for m in self.catalogue.models
                if (allowed is None or allowed(m.id)) and (self.auto is None or m.id != AUTO_MODEL)
            ]
            if self.auto is not None:
                caps = self.auto.capabilities(allowed)
                if caps:
                    data.append(auto_to_proto(caps, created))
            return models_pb2.ListModelsResponse(object="list", data=data)

    @unary
    async def GetModel(self, request: models_pb2.GetModelRequest, rc: RequestContext) -> models_pb2.Model:
        async with self.pipeline.exchange(rc, Endpoint.MODELS, lambda: {"model": request.model}, stream=False) as ex:
            await ex.admit()
            if ex.model is None and self.auto is not None and request.model == AUTO_MODEL:
                allowed = model_filter(ex.principal)
                caps = self.auto.capabilities(allowed)
                return auto_to_proto(caps, self.catalogue.created)
            assert ex.model is not None  # resolved by admission, or it raised
            return model_to_proto(ex.model, self.catalogue.created)
