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

import uvloop
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from ghostllm.api.chat import ChatService
from ghostllm.api.completions import CompletionService
from ghostllm.api.embeddings import EmbeddingService
from ghostllm.api.gateway import GatewayService
from ghostllm.api.models import ModelService
from ghostllm.config import Config
from ghostllm.providers.registry import Registry
from ghostllm.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    completions_pb2,
    completions_pb2_grpc,
    embeddings_pb2,
    embeddings_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
    completions_pb2.DESCRIPTOR.services_by_name["CompletionService"].full_name,
    models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    embeddings_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name,
    gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name,
)


def grpc_options(config: Config) -> list[tuple[str, int]]:
    # Above Envoy's limit, so REST bodies are refused by Envoy with a clean
    # 413; this one covers native gRPC clients (RESOURCE_EXHAUSTED).
    limit = config.server.max_request_bytes + 1024 * 1024
    return [
        # Each worker owns its port: a silent second bind would steal traffic.
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.max_concurrent_streams", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]


class Worker:
    def __init__(self, config: Config, port: int, host: str = "127.0.0.1") -> None:
        self.config = config
        self.address = f"{host}:{port}"
        self.registry = Registry(config)

    async def start(self) -> None:
        # grpc.aio binds its server and the health servicer to the running loop.
        self.health = HealthServicer()
        self.server = s = aio.server(options=grpc_options(config=self.config))
        await self.registry.start()
        chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatService(self.registry), s)
        completions_pb2_grpc.add_CompletionServiceServicer_to_server(CompletionService(self.registry), s)
        models_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.registry), s)
        embeddings_pb2_grpc.add_EmbeddingServiceServicer_to_server(EmbeddingService(self.registry), s)
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayService(self.registry), s)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, s)
        reflection.enable_server_reflection(
            (
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            s,
        )
        if s.add_insecure_port(self.address) == 0:
            raise OSError(f"cannot bind worker port {self.address}")
        await s.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("worker listening on %s", self.address)

    async def stop(self) -> None:
        # NOT_SERVING first so Envoy's health check moves new traffic elsewhere
        # while in-flight streams are still being answered.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.server.shutdown_grace_s)
        await self.registry.close()

    async def run(self) -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await self.start()
        await stopping.wait()
        log.info("worker %s draining (grace %.0fs)", self.address, self.config.server.shutdown_grace_s)
        await self.stop()


def run_worker(config: Config, port: int) -> None:
    logging.basicConfig(
        level=config.server.log_level, format=f"%(asctime)s worker:{port} %(levelname)s %(name)s: %(message)s"
    )
    uvloop.run(Worker(config, port).run())
