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
    # The admin API: reading needs an admin or viewer, writing an admin.
    ADMIN_READ = "admin.read"
    ADMIN_WRITE = "admin.write"
    # A caller's own API keys (GET /v1/keys): any user.
    OWN_KEYS = "keys"
    # A caller's own usage (GET /v1/usage): any user, or a key (its own); not the master key.
    OWN_USAGE = "usage"
    # POST /v1/auth/login: open (the password is the credential).
    LOGIN = "auth.login"

    @property
    def capability(self) -> Capability | None:
        """The catalogue capability a model needs to serve this endpoint (None: any model)."""
        return _CAPABILITY.get(self)

    @property
    def is_open(self) -> bool:
        """Served without a credential."""
        return self is Endpoint.LOGIN

    @property
    def names_model(self) -> bool:
        """Its requests name a model (the catalogue's listing does not; GetModel does)."""
        return self in _CAPABILITY or self is Endpoint.MODELS


_CAPABILITY = {
    Endpoint.CHAT: Capability.CHAT,
    Endpoint.COMPLETIONS: Capability.COMPLETIONS,
    Endpoint.EMBEDDINGS: Capability.EMBEDDINGS,
}
