"""The OpenAI endpoints the gateway serves, named once for every layer."""

from __future__ import annotations

from enum import Enum

from ghostllm.config import Capability


class Endpoint(Enum):
    """Value: the name in usage records and access logs (OpenAI's resource names)."""

    CHAT = "chat.completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"

    @property
    def capability(self) -> Capability:
        """The catalogue capability a model needs to serve this endpoint."""
        return _CAPABILITY[self]


_CAPABILITY = {
    Endpoint.CHAT: Capability.CHAT,
    Endpoint.COMPLETIONS: Capability.COMPLETIONS,
    Endpoint.EMBEDDINGS: Capability.EMBEDDINGS,
}
