"""ghostllm.v1.GatewayService: GET /health for HTTP load balancers and probes, GET /status
for operators.

/health is open and cheap: it reads the provider health the worker's background loop
keeps (routing/health.py) and the catalogue, never a provider. Its status is per model:
healthy while every model has a healthy provider, degraded (200) when some have none,
unhealthy (503) when none can be served.

/status shows internal state (every provider's last check, every model's deployments), so
it needs the admin or viewer role, like the admin API's reads. It is one worker's view:
Envoy spreads calls over the workers, each with its own checks; `worker.pid` says which
one answered.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from google.api import httpbody_pb2

from ghostllm.api.admin_access import admitted
from ghostllm.api.boundary import unary
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.routing.catalogue import Catalogue, Model
from ghostllm.routing.health import Check, ProviderHealth, model_providers, verdict
from ghostllm.v1 import gateway_pb2, gateway_pb2_grpc
from ghostllm.version import VERSION


class DeploymentStats(Protocol):
    """What /status shows of routing (the routing issue's `Router.snapshot()`: per deployment
    in-flight, latency EWMA, circuit state): any value orjson can write."""

    def snapshot(self) -> Any: ...


def iso(at: float | None) -> str | None:
    """A wall-clock time as the seed shows it: 2024-01-15T10:30:00Z."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_status(check: Check | None) -> str:
    if check is None:
        return "unknown"
    return "healthy" if check.healthy else "unhealthy"


def _json(body: dict[str, Any]) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(body))


def _served_by(models: Iterable[Model]) -> dict[str, list[str]]:
    """Provider id -> the models it can serve (a model with several deployments counts for each)."""
    out: dict[str, list[str]] = {}
    for m in models:
        for pid in dict.fromkeys(p.id for p in model_providers(m)):
            out.setdefault(pid, []).append(m.id)
    return out


class GatewayService(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        pipeline: Pipeline,
        catalogue: Catalogue,
        health: ProviderHealth,
        # The routing issue's Router (its snapshot() is /status's "routing"); None until it lands.
        router: DeploymentStats | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.catalogue = catalogue
        self.health = health
        self.router = router
        self.started_at = time.time()
        self._started = time.monotonic()

    @unary
    async def Health(self, request: gateway_pb2.HealthRequest, rc: RequestContext) -> httpbody_pb2.HttpBody:
        checks = self.health.checks()
        healthy = {pid: c is not None and c.healthy for pid, c in checks.items()}
        models = self.catalogue.models
        result = verdict(models, healthy)
        if result.status == "unhealthy":
            rc.http_status = 503
        served = _served_by(models)
        providers = self.health.providers
        return _json(
            {
                "status": result.status,
                "version": VERSION,
                "service": "GhostLLM",
                "timestamp": str(int(time.time())),
                "models_count": len(models),
                "models_available": len(result.available),
                "providers": [
                    {
                        "id": pid,
                        "name": pid,
                        "type": p.config.type,
                        "healthy": healthy[pid],
                        "status": check_status(checks[pid]),
                        "models_count": len(served.get(pid, ())),
                        "last_check": iso(c.at) if (c := checks[pid]) is not None else None,
                    }
                    for pid, p in providers.items()
                ],
            }
        )

    @unary
    async def Status(self, request: gateway_pb2.StatusRequest, rc: RequestContext) -> httpbody_pb2.HttpBody:
        async with admitted(self.pipeline, rc, Endpoint.ADMIN_READ):
            return _json(self.status())

    def status(self) -> dict[str, Any]:
        checks = self.health.checks()
        healthy = {pid: c is not None and c.healthy for pid, c in checks.items()}
        models = self.catalogue.models
        result = verdict(models, healthy)
        served = _served_by(models)
        available = set(result.available)
        providers = []
        for pid, p in self.health.providers.items():
            c = checks[pid]
            providers.append(
                {
                    "id": pid,
                    "type": p.config.type,
                    "base_url": p.config.base_url,
                    "status": check_status(c),
                    "healthy": healthy[pid],
                    "last_check": iso(c.at) if c is not None else None,
                    "latency_ms": round(c.latency_s * 1000, 1) if c is not None else None,
                    "error": (c.error or None) if c is not None else None,
                    "models": served.get(pid, []),
                }
            )
        return {
            "status": "running",
            "health": result.status,
            "version": VERSION,
            "service": "GhostLLM",
            "timestamp": str(int(time.time())),
            "started_at": iso(self.started_at),
            "uptime_seconds": int(time.monotonic() - self._started),
            # Its asyncio tasks now (this call's own included): what a leak would show growing.
            "worker": {"pid": os.getpid(), "asyncio_tasks": len(asyncio.all_tasks())},
            "health_check": {"interval_s": self.health.interval_s, "timeout_s": self.health.timeout_s},
            "providers_count": len(providers),
            "models_count": len(models),
            "models_available": len(available),
            "providers": providers,
            "models": [
                {
                    "id": m.id,
                    "available": m.id in available,
                    "deployments": [
                        {
                            # What the router's stats and x-ghostllm-deployment name it by.
                            "key": d.key,
                            "provider": d.provider.id,
                            "upstream_model": d.upstream_model,
                            "healthy": healthy.get(d.provider.id, False),
                        }
                        for d in m.deployments
                    ],
                }
                for m in models
            ],
            # The Router's snapshot: per deployment, in-flight, latency EWMA, circuit state.
            "routing": self.router.snapshot() if self.router is not None else None,
        }
