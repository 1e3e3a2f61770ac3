"""Translator for Azure OpenAI: the OpenAI wire format at Azure's addresses.

A model's upstream name is its deployment: `{base_url}/openai/deployments/{deployment}/
chat/completions` (also `/completions`, `/embeddings`), each with the `api-version`
query (the provider's `api_version`, default the latest GA version), the key in the
`api-key` header. Usage in streams is asked with stream_options, as from OpenAI
(Azure honours it since 2024-09-01). Azure opens a stream with a chunk that has no
choices, only its prompt filter results: not an OpenAI chunk, so not relayed.
Listing and health: `GET {base_url}/openai/models`, the models the resource can
deploy (the data-plane deployments listing is gone from current API versions).
"""

from __future__ import annotations

from urllib.parse import quote

from ghostllm.config import ModelConfig
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.providers.base import Json
from ghostllm.providers.openai import PATHS, OpenAIStreamDecoder, OpenAITranslator
from ghostllm.providers.translator import StreamDecoder, UpstreamRequest

DEFAULT_API_VERSION = "2024-10-21"


class AzureStreamDecoder(OpenAIStreamDecoder):
    __slots__ = ()

    def feed(self, data: bytes) -> list[Json]:
        return [c for c in super().feed(data) if c.get("choices") or "usage" in c]


class AzureTranslator(OpenAITranslator):
    @property
    def api_version(self) -> str:
        return self.config.api_version or DEFAULT_API_VERSION

    def headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"api-key": key} if key else {}

    def request(
        self, endpoint: Endpoint, body: Json, model: str, *, stream: bool, entry: ModelConfig | None = None
    ) -> UpstreamRequest:
        req = super().request(endpoint, body, model, stream=stream, entry=entry)
        path = f"/openai/deployments/{quote(model, safe='')}{PATHS[endpoint]}?api-version={quote(self.api_version)}"
        return UpstreamRequest(path, req.body)

    def stream_decoder(self, endpoint: Endpoint) -> StreamDecoder:
        return AzureStreamDecoder(self.id, endpoint)

    def models_path(self) -> str:
        return f"/openai/models?api-version={quote(self.api_version)}"
