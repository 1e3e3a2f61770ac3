"""The provider interface the gateway calls, and the typed values it returns.

A provider speaks OpenAI-shaped JSON on our side whatever its wire format is,
so the gateway has one shape to serve. It never changes the body it is given
(a retry or a fallback may send the same body again) and returns the
upstream's usage as a typed value with every answer. Streams yield batches:
every chunk decoded from one upstream read, so they can be relayed in one
message (cheaper than one message per chunk whenever chunks arrive together).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ghostllm.config import DeploymentConfig, ModelConfig, ProviderConfig
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage

if TYPE_CHECKING:
    # Only the HTTP transport makes them (they hold aiohttp objects); importing it here would
    # load aiohttp wherever the interface is imported (validating a config, the command line).
    from ghostllm.providers.transport import Timeouts

Json = dict[str, Any]


@dataclass(slots=True)
class Call:
    """What an adapter may need to know about the client's request besides its body."""

    # Envoy's x-request-id (the client's own when it sent one), passed upstream for tracing.
    request_id: str = ""
    # The catalogue entry of the model called (its defaults and capabilities), set before the call.
    entry: ModelConfig | None = None
    # The deployment's limits (Provider.timeouts_for, made once per catalogue); None: the provider's.
    timeouts: Timeouts | None = None
    # W3C trace context for the upstream (empty: none sent): the caller's own, or with tracing
    # on, the attempt's span (ghostllm/tracing/).
    traceparent: str = ""
    tracestate: str = ""
    # The upstream's HTTP status when it refused the attempt (0: it did not, or never answered).
    upstream_status: int = 0


@dataclass(slots=True)
class Reply:
    """A whole (non-streaming) answer in OpenAI JSON, with the usage the upstream reported."""

    data: Json
    usage: Usage | None


@dataclass(slots=True)
class StreamBatch:
    """OpenAI chunk dicts decoded from one upstream read. `usage` is the latest the
    upstream reported so far; `done` marks the upstream's clean end of stream."""

    chunks: list[Json]
    usage: Usage | None
    done: bool


class Provider(ABC):
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.id = config.id

    @abstractmethod
    async def start(self) -> None:
        """Open connection pools; called inside the worker's event loop."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; in-flight requests have finished by now."""

    def timeouts_for(self, deployment: DeploymentConfig) -> Timeouts | None:
        """The limits of one deployment on this provider (its own over the provider's), made
        when the catalogue is built and passed back in each of its calls; None: the provider's."""
        return None

    @abstractmethod
    async def health(self) -> bool: ...

    @abstractmethod
    async def list_models(self) -> list[str]: ...

    @abstractmethod
    async def complete(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> Reply:
        """One whole answer for `body` (the client's validated OpenAI request), sent as `model`."""

    @abstractmethod
    def stream(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> AsyncGenerator[StreamBatch]:
        """The answer as chunk batches; the last batch of a complete stream has done=True,
        a stream that breaks raises instead."""
