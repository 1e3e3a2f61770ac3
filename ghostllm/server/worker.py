"""One gateway worker: a grpc.aio server on uvloop serving every GhostLLM service.

Workers are independent processes, each on its own port, load-balanced by
Envoy. On SIGTERM a worker reports NOT_SERVING (Envoy stops picking it),
refuses new calls, lets in-flight calls and streams finish within the grace
period, then closes its upstream connections and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import uvloop
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

from ghostllm.accounts.repository import AccountRepository
from ghostllm.api.services import PUBLIC_NAMES, Deps, register
from ghostllm.auth.authenticator import Authenticator
from ghostllm.auth.last_used import LastUsed
from ghostllm.auth.login_guard import login_guard
from ghostllm.auth.tokens import TokenSigner, load_secret
from ghostllm.cluster.changes import ACCOUNTS, CATALOGUE, ChangeFeed
from ghostllm.config import Config, ProviderConfig
from ghostllm.gateway.access_log import AccessLog
from ghostllm.gateway.exchange import Stage
from ghostllm.gateway.pipeline import Pipeline, Sink
from ghostllm.gateway.stages import Authenticate, Limits, ResolveModel, authorize, decode_body
from ghostllm.ledger.spend import spent_reader
from ghostllm.ledger.writer import Ledger
from ghostllm.limits.limiter import make_limiter
from ghostllm.metrics import directory as metrics_directory
from ghostllm.metrics.publisher import Publisher
from ghostllm.providers.base import Provider
from ghostllm.providers.factory import make_provider, stream_silence_s, stream_total_s
from ghostllm.routing.auto import Auto
from ghostllm.routing.live import LiveCatalogue, retire_delay
from ghostllm.routing.router import Router
from ghostllm.server.catalogue_sync import CatalogueSync, DiscoveredFile
from ghostllm.server.memory import ReleaseMemory
from ghostllm.store import make_store

if TYPE_CHECKING:
    from ghostllm.tracing.tracer import Tracer

log = logging.getLogger(__name__)
# What stopping may take once the drain is over (the supervisor allows 5 s).
TEARDOWN_S = 4.0


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


def _tracer(config: Config) -> Tracer | None:
    if not config.tracing.enabled:
        return None
    # Imported only here: the OpenTelemetry SDK and exporter stay unloaded while tracing is off.
    from ghostllm.tracing.tracer import Tracer

    return Tracer(config.tracing)


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
        self,
        config: Config,
        port: int,
        host: str = "127.0.0.1",
        discovered_file: Path | None = None,
        ready_file: Path | None = None,
    ) -> None:
        self.config = config
        self.ready_file = ready_file
        self.address = f"{host}:{port}"
        limit, total, silence = config.server.max_response_bytes, stream_total_s(config), stream_silence_s(config)

        def build(p: ProviderConfig) -> Provider:
            return make_provider(p, limit, total, silence)

        # The config's providers and models now, with what serve discovered; the store's merged
        # in by catalogue_sync, in place, which also follows serve's later discovery rounds.
        discovered = DiscoveredFile(discovered_file)
        self.live = LiveCatalogue(config, build, discovered.read(), retire_after_s=retire_delay(config))
        self.providers, self.catalogue = self.live.providers, self.live.catalogue
        # Deployment choice, retries and circuit breaking; its snapshot() serves /status.
        self.router = Router(self.catalogue, config.routing)
        auto = config.routing.auto
        self.auto = Auto(self.catalogue, self.router, self.live.health, auto) if auto.enabled else None
        self.sinks: list[Sink] = [ReleaseMemory()]
        if config.server.access_log != "off":
            self.access_log: AccessLog | None = AccessLog(config.server.access_log)
            self.sinks.append(self.access_log)
        else:
            self.access_log = None
        self.store = make_store(config.store)
        self.ledger: Ledger | None = None
        if config.ledger.enabled:
            spool = Path(config.server.data_dir) / "spool"
            self.ledger = Ledger(self.store, spool, interval_s=config.ledger.flush_interval_s)
            self.sinks.append(self.ledger)
        self.accounts = AccountRepository(self.store, bcrypt_cost=config.accounts.bcrypt_cost)
        auth = config.auth
        self.signer = TokenSigner(load_secret(auth.jwt_secret, config.server.data_dir), auth.token_ttl_s)
        self.last_used = LastUsed(self.accounts, auth.last_used_flush_s)
        # Failed logins: counted in Redis when configured (its connection made on the first login).
        self.login_guard = login_guard(config)
        self.authenticator = Authenticator(self.accounts, auth, self.signer, self.last_used)
        self.catalogue_sync = CatalogueSync(config, self.store, self.live, discovered=discovered)
        self.feed = ChangeFeed(config.redis) if config.redis.url else None
        if self.feed is not None:
            self.feed.on(ACCOUNTS, self.authenticator.clear)
            self.feed.on_state(self._feed_state)
            self.feed.on(CATALOGUE, self.catalogue_sync.trigger)
            self.feed.on_state(self.catalogue_sync.feed_state)
        # Spend counters start from the ledger; without one there is no spend to start from.
        self.limiter = make_limiter(config, spent_reader(self.store) if config.ledger.enabled else None)
        rate = Limits(self.limiter)
        self.sinks.append(rate.settle)
        stages: list[Stage] = [
            Authenticate(self.authenticator), decode_body, authorize,
            ResolveModel(self.catalogue, self.router, self.auto), rate,
        ]  # fmt: skip
        # Under a `serve` with metrics on: counted per request, published once a second.
        self.metrics: Publisher | None = None
        if metrics_directory.enabled(config):
            self.metrics = m = Publisher(
                self.catalogue,
                router=self.router,
                health=self.live.health,
                ledger=self.ledger,
                limiter=self.limiter,
                authenticator=self.authenticator,
            )
            self.sinks += [m.tally, m.streams.settle]
            stages.append(m.streams)  # last: only a stream admitted is in flight
        self.tracer = _tracer(config)
        self.pipeline = Pipeline(stages, self.sinks, tracer=self.tracer)

    def _feed_state(self, up: bool) -> None:
        # Subscribed: changes are pushed, so the cache may be trusted longer; it may have
        # missed some while it was down, so it starts over. Unsubscribed: the short TTL.
        auth = self.config.auth
        self.authenticator.set_ttl(auth.key_cache_ttl_pushed_s if up else auth.key_cache_ttl_s)
        if up:
            self.authenticator.clear()

    async def changed(self, kind: str) -> None:
        """This worker made a change: its own caches go now, the others' by the feed (or their TTL)."""
        if kind == ACCOUNTS:
            self.authenticator.clear()
        if kind == CATALOGUE:
            self.catalogue_sync.trigger()
        if self.feed is not None:
            await self.feed.publish(kind)

    async def start(self) -> None:
        # grpc.aio binds its server and the health servicer to the running loop.
        self.health = HealthServicer()
        self.server = s = aio.server(options=grpc_options(config=self.config))
        # First: a taken port fails the worker before it holds anything to release.
        if s.add_insecure_port(self.address) == 0:
            raise OSError(f"cannot bind worker port {self.address}")
        await self.live.start()
        # Provider health in the background from now on (GET /health only reads it).
        routing = self.config.routing
        self.live.health.start(routing.health_check_interval_s, routing.health_check_timeout_s)
        await self.store.open()
        # Before serving: a (re)started worker answers with the store's models from its first call.
        await self.catalogue_sync.start()
        await self.limiter.start()
        self.last_used.start()
        if self.ledger is not None:
            self.ledger.start()
        if self.feed is not None:
            self.feed.start()
        if self.metrics is not None:
            self.metrics.start()
        if not self.config.auth.enabled:
            log.warning("AUTHENTICATION IS OFF (auth.enabled: false): every caller is an admin")
        deps = Deps(
            self.pipeline,
            self.catalogue,
            self.live.health,
            self.accounts,
            self.signer,
            self.changed,
            self.config,
            self.login_guard,
            self.router,
            self.auto,
        )
        register(s, deps)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, s)
        add_reflection(s)
        await s.start()
        for name in ("", *PUBLIC_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.ready_file is not None:
            # How serve knows this worker serves: an open port alone may be someone else's.
            self.ready_file.write_text(str(os.getpid()))
        log.info("worker listening on %s", self.address)

    async def stop(self) -> None:
        # NOT_SERVING first so Envoy's health check moves new traffic elsewhere
        # while in-flight streams are still being answered.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.server.shutdown_grace_s)
        # The supervisor kills a worker TEARDOWN_S + 1 s after the drain: everything after it
        # is bounded, the usage rows first (spooled before anything is awaited).
        end = asyncio.get_running_loop().time() + TEARDOWN_S
        try:
            if self.ledger is not None:
                await self.ledger.close(timeout_s=TEARDOWN_S / 2)
            if self.metrics is not None:
                await self.metrics.close()  # every request has settled: the last counts are pushed
            async with asyncio.timeout_at(end):
                await self.live.health.stop()
                await self.catalogue_sync.stop()
                await self.live.close()
                await self.last_used.stop()
                if self.feed is not None:
                    await self.feed.close()
                await self.limiter.close()
                await self.login_guard.close()
                await self.store.close()
                if self.tracer is not None:
                    # Every request has settled: the last spans are exported (bounded), off the loop.
                    await asyncio.to_thread(self.tracer.shutdown)
        except TimeoutError:
            log.warning("shutdown: teardown cut short after %.1f s (the store or Redis is not answering)", TEARDOWN_S)
        finally:
            if self.access_log is not None:
                self.access_log.close()

    async def run(self) -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        try:
            await self.start()
        except BaseException:
            # The store's connection thread would keep a failed worker alive.
            await self.store.close()
            raise
        await stopping.wait()
        log.info("worker %s draining (grace %.0fs)", self.address, self.config.server.shutdown_grace_s)
        await self.stop()


def run_worker(config: Config, port: int, discovered_file: Path | None = None, ready_file: Path | None = None) -> None:
    logging.basicConfig(
        level=config.server.log_level, format=f"%(asctime)s worker:{port} %(levelname)s %(name)s: %(message)s"
    )
    uvloop.run(Worker(config, port, discovered_file=discovered_file, ready_file=ready_file).run())
