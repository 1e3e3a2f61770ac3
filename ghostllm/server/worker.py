"""One gateway worker: a grpc.aio server on uvloop serving every GhostLLM service.

Workers are independent processes, each on its own port, load-balanced by
Envoy. On SIGTERM a worker reports NOT_SERVING (Envoy stops picking it),
refuses new calls, lets in-flight calls and streams finish within the grace
period, then closes its upstream connections and exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping, Sequence

import grpc
import uvloop
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from ghostllm.api.services import PUBLIC_NAMES, Deps, register
from ghostllm.config import Config
from ghostllm.gateway.access_log import AccessLog
from ghostllm.gateway.pipeline import Pipeline, Sink
from ghostllm.gateway.stages import ResolveModel, decode_body
from ghostllm.providers.factory import make_provider, stream_silence_s, stream_total_s
from ghostllm.routing.catalogue import Catalogue
from ghostllm.routing.health import ProviderHealth
from ghostllm.server.memory import ReleaseMemory

log = logging.getLogger(__name__)


def grpc_options(config: Config) -> list[tuple[str, int]]:
    # Envoy's header limit is the one clients meet (431); the metadata limits
    # sit above it so any request Envoy takes reaches the worker whole (gRPC's
    # defaults, 8 KiB soft and 16 KiB hard, failed large JWTs with a bogus
    # RESOURCE_EXHAUSTED that listed the client's headers).
    from ghostllm.server.envoy import grpc_max_metadata_bytes

    metadata = grpc_max_metadata_bytes()
    # Above Envoy's limit, so REST bodies are refused by Envoy with a clean
    # 413; this one covers native gRPC clients (RESOURCE_EXHAUSTED).
    limit = config.server.max_request_bytes + 1024 * 1024
    return [
        ("grpc.max_metadata_size", metadata),
        ("grpc.absolute_max_metadata_size", metadata),
        # Each worker owns its port: a silent second bind would steal traffic.
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.max_concurrent_streams", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def add_reflection(server: aio.Server) -> None:
    """Server reflection, v1 (what current grpcurl asks first) and v1alpha, for the public
    services only. The two versions' messages are the same on the wire; grpcio-reflection
    ships only v1alpha, so v1 is the same servicer under v1's service name."""
    health = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    servicer = ReflectionServicer((*PUBLIC_NAMES, health, reflection.SERVICE_NAME))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),)
    )


class Worker:
    def __init__(
        self, config: Config, port: int, host: str = "127.0.0.1", discovered: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.config = config
        self.address = f"{host}:{port}"
        limit, total = config.server.max_response_bytes, stream_total_s(config)
        self.providers = {p.id: make_provider(p, limit, total, stream_silence_s(config, p)) for p in config.providers}
        self.catalogue = Catalogue(config, self.providers, discovered or {})
        self.sinks: list[Sink] = [ReleaseMemory()]
        if config.server.access_log != "off":
            self.access_log: AccessLog | None = AccessLog(config.server.access_log)
            self.sinks.append(self.access_log)
        else:
            self.access_log = None
        self.pipeline = Pipeline([decode_body, ResolveModel(self.catalogue)], self.sinks)

    async def start(self) -> None:
        # grpc.aio binds its server and the health servicer to the running loop.
        self.health = HealthServicer()
        self.server = s = aio.server(options=grpc_options(config=self.config))
        for p in self.providers.values():
            await p.start()
        register(s, Deps(self.pipeline, self.catalogue, ProviderHealth(self.providers)))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, s)
        add_reflection(s)
        if s.add_insecure_port(self.address) == 0:
            raise OSError(f"cannot bind worker port {self.address}")
        await s.start()
        for name in ("", *PUBLIC_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("worker listening on %s", self.address)

    async def stop(self) -> None:
        # NOT_SERVING first so Envoy's health check moves new traffic elsewhere
        # while in-flight streams are still being answered.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.server.shutdown_grace_s)
        await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)
        if self.access_log is not None:
            self.access_log.close()

    async def run(self) -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await self.start()
        await stopping.wait()
        log.info("worker %s draining (grace %.0fs)", self.address, self.config.server.shutdown_grace_s)
        await self.stop()


def run_worker(config: Config, port: int, discovered: Mapping[str, Sequence[str]] | None = None) -> None:
    logging.basicConfig(
        level=config.server.log_level, format=f"%(asctime)s worker:{port} %(levelname)s %(name)s: %(message)s"
    )
    uvloop.run(Worker(config, port, discovered=discovered).run())
