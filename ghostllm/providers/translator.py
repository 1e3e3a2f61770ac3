"""Wire translation: one module per provider format, no sockets.

A translator builds the upstream request from the client's OpenAI body (never
changing it), parses whole answers into OpenAI JSON plus usage, decodes stream
bytes into OpenAI chunks with a stateful per-request decoder, and maps upstream
error statuses onto our error model. Transport (pooled connections, timeouts,
size limits) is `ghostllm.providers.transport`; the two meet in
`ghostllm.providers.http`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from ghostllm.config import ModelConfig, ProviderConfig
from ghostllm.errors import GhostError
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Json, Reply


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    path: str
    body: bytes


class StreamDecoder(ABC):
    """Turns one upstream stream's bytes, fed as they arrive, into OpenAI chunk dicts.

    Stateful per request: formats that number tool calls or report usage in
    several events keep what they need here. Feeding the same bytes split at any
    offset yields the same chunks."""

    usage: Usage | None = None
    done: bool = False

    @abstractmethod
    def feed(self, data: bytes) -> list[Json]: ...

    def end(self) -> list[Json]:
        """The upstream's body ended without error: the chunks held back until then. Formats
        whose stream ends with the body rather than a terminator event (Gemini) set `done` here."""
        return []


class Translator(ABC):
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.id = config.id

    @abstractmethod
    def headers(self) -> dict[str, str]:
        """Headers sent with every request (authentication, API version)."""

    @abstractmethod
    def request(
        self, endpoint: Endpoint, body: Json, model: str, *, stream: bool, entry: ModelConfig | None = None
    ) -> UpstreamRequest:
        """`model`: the upstream's name for it; `entry`: its catalogue entry (defaults such as
        max_output_tokens, capabilities such as structured_output), when the caller has one.
        `UpstreamRequest.path` may carry a query string."""

    @abstractmethod
    def reply(self, endpoint: Endpoint, raw: bytes) -> Reply:
        """A whole answer as OpenAI JSON; an answer we cannot use raises ProviderError."""

    @abstractmethod
    def stream_decoder(self, endpoint: Endpoint) -> StreamDecoder: ...

    @abstractmethod
    def error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> GhostError:
        """The error the client gets for an upstream answer with a non-success status."""

    @abstractmethod
    def models_path(self) -> str: ...

    @abstractmethod
    def models(self, raw: bytes) -> list[str]:
        """The model names an upstream listing names."""
