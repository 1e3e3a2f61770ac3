"""ghostllm.v1.GatewayService: GET /health for HTTP load balancers and probes."""

from __future__ import annotations

import time
from importlib.metadata import version

import orjson
from google.api import httpbody_pb2

from ghostllm.api.relay import JSON
from ghostllm.api.status import HTTP_STATUS_KEY, Context, unary
from ghostllm.providers.registry import Registry
from ghostllm.v1 import gateway_pb2, gateway_pb2_grpc

VERSION = version("ghostllm")


class GatewayService(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @unary
    async def Health(self, request: gateway_pb2.HealthRequest, context: Context) -> httpbody_pb2.HttpBody:
        health = await self.registry.health()
        models = {pid: 0 for pid in self.registry.providers}
        for route in self.registry.routes:
            models[route.provider.id] += 1
        up = sum(health.values())
        # Degraded still serves traffic (200): only a gateway with no provider at all is unavailable.
        status = "healthy" if up == len(health) else "degraded" if up else "unhealthy"
        if status == "unhealthy":
            await context.send_initial_metadata(((HTTP_STATUS_KEY, "503"),))
        body = {
            "status": status,
            "version": VERSION,
            "service": "GhostLLM",
            "timestamp": str(int(time.time())),
            "providers": [
                {"id": pid, "name": pid, "type": p.config.type, "healthy": health[pid], "models_count": models[pid]}
                for pid, p in self.registry.providers.items()
            ],
        }
        return httpbody_pb2.HttpBody(content_type=JSON, data=orjson.dumps(body))
