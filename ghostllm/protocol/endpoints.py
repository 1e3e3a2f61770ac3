"""The OpenAI endpoints the gateway serves, named once for every layer."""

from __future__ import annotations

from enum import Enum

from ghostllm.config import Capability


class Endpoint(Enum):
    """Value: the name in usage records and access logs (OpenAI's resource names)."""

    CHAT = "chat.completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    # The catalogue itself (list, or one model): admitted like the others, no upstream call.
    MODELS = "models"

    @property
    def capability(self) -> Capability | None:
        """The catalogue capability a model needs to serve this endpoint (None: any model)."""
        return _CAPABILITY.get(self)


_CAPABILITY = {
    Endpoint.CHAT: Capability.CHAT,
    Endpoint.COMPLETIONS: Capability.COMPLETIONS,
    Endpoint.EMBEDDINGS: Capability.EMBEDDINGS,
}
