"""Translator for Anthropic's Messages API (`type: anthropic`).

`POST {base_url}/v1/messages`, base_url as the official SDK takes it (default
https://api.anthropic.com), authenticated with `x-api-key` and pinned to one API
version. The request side is `anthropic_request`, whole answers and errors
`anthropic_reply`, streams `anthropic_stream`. Anthropic has chat only: text
completions and embeddings are a 400 naming the provider.
"""

from __future__ import annotations

from collections.abc import Mapping

from ghostllm.config import ModelConfig
from ghostllm.errors import GhostError, InvalidRequest
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.providers.anthropic_reply import completion, status_error
from ghostllm.providers.anthropic_request import messages_request
from ghostllm.providers.anthropic_stream import AnthropicStreamDecoder
from ghostllm.providers.base import Json, Reply
from ghostllm.providers.openai import model_ids
from ghostllm.providers.translator import StreamDecoder, Translator, UpstreamRequest, encode_body

# The API version every request is written against (the wire format below).
ANTHROPIC_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"
# One page as large as the API allows, so a listing is one request.
MODELS_PATH = "/v1/models?limit=1000"


class AnthropicTranslator(Translator):
    def headers(self) -> dict[str, str]:
        out = {"anthropic-version": ANTHROPIC_VERSION}
        if self.config.api_key:
            out["x-api-key"] = self.config.api_key
        return out

    def _chat_only(self, endpoint: Endpoint) -> None:
        if endpoint is Endpoint.EMBEDDINGS:
            raise InvalidRequest(f"embeddings are not supported by provider {self.id} (anthropic)", param="model")
        if endpoint is not Endpoint.CHAT:
            raise InvalidRequest(
                f"text completions are not supported by provider {self.id} (anthropic): use chat completions",
                param="model",
            )

    def request(
        self, endpoint: Endpoint, body: Json, model: str, *, stream: bool, entry: ModelConfig | None = None
    ) -> UpstreamRequest:
        self._chat_only(endpoint)
        out = messages_request(body, model, stream=stream, entry=entry, provider=self.id)
        return UpstreamRequest(MESSAGES_PATH, encode_body(out, body))

    def reply(self, endpoint: Endpoint, raw: bytes) -> Reply:
        self._chat_only(endpoint)
        return completion(self.id, raw)

    def stream_decoder(self, endpoint: Endpoint) -> StreamDecoder:
        self._chat_only(endpoint)
        return AnthropicStreamDecoder(self.id)

    def error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> GhostError:
        return status_error(self.id, status, raw, headers)

    def models_path(self) -> str:
        return MODELS_PATH

    def models(self, raw: bytes) -> list[str]:
        # Anthropic's listing has OpenAI's shape (data[].id).
        return model_ids(self.id, raw)
