"""ghostllm.v1.GatewayService: GET /health for HTTP load balancers and probes."""

from __future__ import annotations

import time
from importlib.metadata import version

import orjson
from google.api import httpbody_pb2

from ghostllm.api.boundary import unary
from ghostllm.gateway.context import RequestContext
from ghostllm.routing.catalogue import Catalogue
from ghostllm.routing.health import ProviderHealth
from ghostllm.v1 import gateway_pb2, gateway_pb2_grpc

VERSION = version("ghostllm")


class GatewayService(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, catalogue: Catalogue, health: ProviderHealth) -> None:
        self.catalogue = catalogue
        self.health = health

    @unary
    async def Health(self, request: gateway_pb2.HealthRequest, rc: RequestContext) -> httpbody_pb2.HttpBody:
        health = await self.health.get()
        providers = self.health.providers
        models = dict.fromkeys(providers, 0)
        for m in self.catalogue.models:
            models[m.deployment.provider.id] += 1
        up = sum(health.values())
        # Degraded still serves traffic (200): only a gateway with no provider at all is unavailable.
        status = "healthy" if up == len(health) else "degraded" if up else "unhealthy"
        if status == "unhealthy":
            rc.http_status = 503
        body = {
            "status": status,
            "version": VERSION,
            "service": "GhostLLM",
            "timestamp": str(int(time.time())),
            "providers": [
                {"id": pid, "name": pid, "type": p.config.type, "healthy": health[pid], "models_count": models[pid]}
                for pid, p in providers.items()
            ],
        }
        return httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(body))
