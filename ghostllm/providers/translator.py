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

import orjson

from ghostllm.config import ModelConfig, ProviderConfig
from ghostllm.errors import GhostError, ProviderError
from ghostllm.protocol.common import too_deep
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Json, Reply


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    path: str
    body: bytes


def encode_body(out: Json, body: Json) -> bytes:
    """The upstream body `out`, written from the client's `body`: the only way encoding it
    fails is nesting past orjson's limit, which is the client's fault, named in its terms."""
    try:
        return orjson.dumps(out)
    except orjson.JSONEncodeError:
        raise too_deep(body) from None


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


class RelayFirstDecoder(StreamDecoder):
    """A decoder whose upstream may fail partway through one read (an error event or line
    after good ones): the chunks decoded before the failure reach the client first, and the
    failure is raised by the next call."""

    __slots__ = ("_error",)

    def __init__(self) -> None:
        self._error: ProviderError | None = None

    @abstractmethod
    def _decode(self, data: bytes, out: list[Json]) -> None:
        """Append the chunks `data` completes to `out`; raise ProviderError where it fails."""

    def feed(self, data: bytes) -> list[Json]:
        if self._error is not None:
            raise self._error
        out: list[Json] = []
        try:
            self._decode(data, out)
        except ProviderError as err:
            if not out:
                raise
            self._error = err
        return out

    def end(self) -> list[Json]:
        if self._error is not None:
            raise self._error
        return []


def bearer_headers(config: ProviderConfig) -> dict[str, str]:
    """`Authorization: Bearer` with the provider's key, when it has one (OpenAI-style auth)."""
    key = config.api_key
    return {"authorization": f"Bearer {key}"} if key else {}


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
