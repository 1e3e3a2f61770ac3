"""The service table: every gRPC service a worker serves, in one place.

It drives registration, the health servicer's names, server reflection (only
public services are advertised: the REST bridge is internal) and the services
Envoy's transcoder maps REST paths onto (server/envoy.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

from ghostllm.accounts.repository import AccountRepository
from ghostllm.api.admin import AdminService
from ghostllm.api.auth import AuthService
from ghostllm.api.boundary import undecodable_safe
from ghostllm.api.chat import ChatService
from ghostllm.api.completions import CompletionService
from ghostllm.api.embeddings import EmbeddingService
from ghostllm.api.gateway import GatewayService
from ghostllm.api.models import ModelService
from ghostllm.api.rawbody import decode_http_body
from ghostllm.api.rest import RestBridge
from ghostllm.api.usage import UsageService
from ghostllm.auth.login_guard import LoginGuard
from ghostllm.auth.tokens import TokenSigner
from ghostllm.config import Config
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.routing.auto import Auto
from ghostllm.routing.catalogue import Catalogue
from ghostllm.routing.health import ProviderHealth
from ghostllm.routing.router import Router
from ghostllm.v1 import (
    admin_pb2,
    auth_pb2,
    chat_pb2,
    completions_pb2,
    embeddings_pb2,
    gateway_pb2,
    models_pb2,
    rest_pb2,
    usage_pb2,
)

HTTP_BODY = httpbody_pb2.HttpBody.DESCRIPTOR


@dataclass(frozen=True)
class Deps:
    """What servicers are built from."""

    pipeline: Pipeline
    catalogue: Catalogue
    health: ProviderHealth
    accounts: AccountRepository
    signer: TokenSigner
    # Call after a change the admin API made ("accounts" or "catalogue", cluster/changes.py):
    # this worker drops what it cached at once; the others hear of it over Redis, or their
    # caches expire (without Redis).
    changed: Callable[[str], Awaitable[None]]
    # For what the admin API needs from it (where the key that encrypts provider keys is).
    config: Config
    # The login throttle (the worker's, which closes it on shutdown).
    login_guard: LoginGuard
    # Per-deployment routing state, for GET /status (None: not shown).
    router: Router | None = None
    # model: "auto"'s choice, for the model listing (None: routing.auto is off).
    auto: Auto | None = None


@dataclass(frozen=True)
class Service:
    descriptor: ServiceDescriptor
    build: Callable[[Deps], Any]
    # Advertised by reflection and the health servicer.
    public: bool
    # Has google.api.http routes for Envoy's transcoder.
    rest: bool

    @property
    def name(self) -> str:
        return str(self.descriptor.full_name)


def _service(file: FileDescriptor, service: str) -> ServiceDescriptor:
    return file.services_by_name[service]


SERVICES: tuple[Service, ...] = (
    Service(
        _service(chat_pb2.DESCRIPTOR, "ChatService"),
        lambda d: ChatService(d.pipeline),
        public=True,
        rest=False,
    ),
    Service(
        _service(completions_pb2.DESCRIPTOR, "CompletionService"),
        lambda d: CompletionService(d.pipeline),
        public=True,
        rest=False,
    ),
    Service(
        _service(embeddings_pb2.DESCRIPTOR, "EmbeddingService"),
        lambda d: EmbeddingService(d.pipeline),
        public=True,
        rest=False,
    ),
    Service(
        _service(models_pb2.DESCRIPTOR, "ModelService"),
        lambda d: ModelService(d.pipeline, d.catalogue, d.auto),
        public=True,
        rest=True,
    ),
    Service(
        _service(gateway_pb2.DESCRIPTOR, "GatewayService"),
        lambda d: GatewayService(d.pipeline, d.catalogue, d.health, router=d.router),
        public=True,
        rest=True,
    ),
    Service(
        _service(admin_pb2.DESCRIPTOR, "AdminService"),
        lambda d: AdminService(d.pipeline, d.accounts, d.catalogue, d.health, d.config, d.changed),
        public=True,
        rest=True,
    ),
    Service(
        _service(auth_pb2.DESCRIPTOR, "AuthService"),
        lambda d: AuthService(d.pipeline, d.accounts, d.signer, d.login_guard),
        public=True,
        rest=True,
    ),
    Service(
        _service(usage_pb2.DESCRIPTOR, "UsageService"),
        lambda d: UsageService(d.pipeline, d.accounts.store),
        public=True,
        rest=True,
    ),
    Service(
        _service(rest_pb2.DESCRIPTOR, "RestBridge"),
        lambda d: RestBridge(d.pipeline),
        public=False,
        rest=True,
    ),
)

PUBLIC_NAMES = tuple(s.name for s in SERVICES if s.public)
REST_NAMES = tuple(s.name for s in SERVICES if s.rest)


def method_handlers(service: ServiceDescriptor, servicer: Any) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """What protoc's add_*_to_server builds, from the descriptor, but with request
    decoding that never raises: grpc would answer a request it cannot decode (garbage,
    bad UTF-8, too deep) with UNKNOWN; the boundary answers INVALID_ARGUMENT instead."""
    out: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for m in service.methods:
        reply = GetMessageClass(m.output_type)
        # The REST bridge reads the client's body as a view into the received bytes.
        decode = decode_http_body if m.input_type is HTTP_BODY else GetMessageClass(m.input_type).FromString
        make = grpc.unary_stream_rpc_method_handler if m.server_streaming else grpc.unary_unary_rpc_method_handler
        out[m.name] = make(
            getattr(servicer, m.name),
            request_deserializer=undecodable_safe(decode),
            response_serializer=reply.SerializeToString,
        )
    return out


def register(server: Any, deps: Deps) -> None:
    for s in SERVICES:
        handlers = method_handlers(s.descriptor, s.build(deps))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(s.name, handlers),))
        server.add_registered_method_handlers(s.name, handlers)
