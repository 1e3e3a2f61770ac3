"""The provider interface every adapter implements.

Adapters speak OpenAI-shaped dicts on our side whatever their wire format is,
so the API layer has one shape to serve. Streams yield *batches*: every chunk
decoded from one upstream read, so the API layer can relay them in one message
(cheaper than one message per chunk whenever chunks arrive together). A batch
holds chunk dicts; the last batch of a complete stream ends with
`ghostllm.providers.sse.DONE`, and a stream that breaks raises instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ghostllm.config import ProviderConfig

Json = dict[str, Any]
# Chunk dicts, possibly ending with sse.DONE (Any: mypy cannot narrow on an `is` sentinel).
Batch = list[Any]


@dataclass(frozen=True, slots=True)
class Call:
    """What an adapter may need to know about the client's request besides its body."""

    # Envoy's x-request-id (the client's own when it sent one), passed upstream for tracing.
    request_id: str = ""


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

    @abstractmethod
    async def health(self) -> bool: ...

    @abstractmethod
    async def list_models(self) -> list[str]: ...

    @abstractmethod
    async def chat(self, body: Json, call: Call) -> Json: ...

    @abstractmethod
    def stream_chat(self, body: Json, call: Call) -> AsyncIterator[Batch]: ...

    @abstractmethod
    async def completion(self, body: Json, call: Call) -> Json: ...

    @abstractmethod
    def stream_completion(self, body: Json, call: Call) -> AsyncIterator[Batch]: ...

    @abstractmethod
    async def embeddings(self, body: Json, call: Call) -> Json: ...
