"""Translator for OpenAI and every OpenAI-compatible server (vLLM, Groq, Together, Ollama's /v1, LM Studio).

The wire format already is ours, so the client's body goes upstream as sent
(fields we do not model included) with the model name swapped; answers come back
checked for the fields we rely on. Upstream failures map onto our error model:
an upstream 401 is OUR provider error (502), not a 401 for the client; an
upstream 429 passes through with its retry-after.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ghostllm.config import ModelConfig
from ghostllm.errors import (
    GhostError,
    InvalidRequest,
    PayloadTooLarge,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
    UnusableAnswer,
    UpstreamTimeout,
)
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import usage_from_openai
from ghostllm.providers.base import Json, Reply
from ghostllm.providers.sse import SSEFramer
from ghostllm.providers.translator import (
    RelayFirstDecoder,
    StreamDecoder,
    Translator,
    UpstreamRequest,
    bearer_headers,
    encode_body,
)

PATHS = {Endpoint.CHAT: "/chat/completions", Endpoint.COMPLETIONS: "/completions", Endpoint.EMBEDDINGS: "/embeddings"}
# Keep the start of an upstream's message: it travels in our error, which has a size budget.
MESSAGE_CHARS = 1000


def upstream_message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:MESSAGE_CHARS].decode("utf-8", "replace").strip()
    msg: Any = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            msg = err["message"]
        elif isinstance(err, str):
            msg = err
        elif isinstance(data.get("message"), str):
            msg = data["message"]
    text = msg if isinstance(msg, str) else raw[:MESSAGE_CHARS].decode("utf-8", "replace")
    return text[:MESSAGE_CHARS]


def upstream_status_error(provider: str, status: int, raw: bytes, headers: Mapping[str, str]) -> GhostError:
    """Map an upstream HTTP error status onto the error the client gets."""
    msg = upstream_message(raw)
    if status == 429:
        return RateLimited(f"provider {provider} is rate limiting: {msg}", retry_after=headers.get("retry-after"))
    if status in (400, 422):
        return InvalidRequest(f"provider {provider} rejected the request: {msg}", code="upstream_invalid_request")
    if status == 413:
        return PayloadTooLarge(f"provider {provider} rejected the request as too large: {msg}")
    if status in (408, 504):
        return UpstreamTimeout(f"provider {provider} timed out (upstream status {status}): {msg}")
    if status == 503:
        # Overloaded or busy (every provider's way of saying so): a condition that passes, worth a
        # retry, unlike a broken upstream (502).
        return ServiceUnavailable(f"provider {provider} is unavailable: {msg}", retry_after=headers.get("retry-after"))
    return ProviderError(f"provider {provider} failed with status {status}: {msg}")


def malformed(provider: str, what: str) -> ProviderError:
    """An answer that parsed but lacks what we rely on: every translator's wording for it."""
    return UnusableAnswer(f"provider {provider} returned a malformed answer: {what}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_choices(provider: str, endpoint: Endpoint, data: Json, *, chunk: bool) -> None:
    """The fields of an answer or chunk the gateway and its clients rely on."""
    choices = data.get("choices")
    if not isinstance(choices, list):
        if chunk and choices is None:
            return
        raise malformed(provider, "'choices' is not a list")
    for c in choices:
        if not isinstance(c, dict) or not _is_int(c.get("index", 0)):
            raise malformed(provider, "a choice is not an object with an integer index")
        if endpoint is Endpoint.COMPLETIONS:
            if not isinstance(c.get("text", ""), str):
                raise malformed(provider, "choices[].text is not a string")
            continue
        msg = c.get("delta" if chunk else "message")
        if msg is None and chunk:
            continue
        if not isinstance(msg, dict):
            raise malformed(provider, "a choice's message is not an object")
        content = msg.get("content")
        if content is not None and not isinstance(content, str):
            raise malformed(provider, "message content is not a string")
        calls = msg.get("tool_calls")
        if calls is not None and not (isinstance(calls, list) and all(isinstance(x, dict) for x in calls)):
            raise malformed(provider, "tool_calls is not a list of objects")


def _check_embeddings(provider: str, data: Json) -> None:
    items = data.get("data")
    if not isinstance(items, list) or not all(
        isinstance(x, dict) and isinstance(x.get("embedding"), list | str) for x in items
    ):
        raise malformed(provider, "'data' is not a list of embeddings")


def json_object(provider: str, raw: bytes) -> Json:
    """A whole answer's body, which every format has as one JSON object."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UnusableAnswer(f"provider {provider} returned a body that is not JSON: {raw[:200]!r}") from None
    if not isinstance(data, dict):
        raise UnusableAnswer(f"provider {provider} returned unexpected JSON")
    return data


def stream_object(provider: str, payload: bytes, what: str = "event") -> Json:
    """One stream event's (or NDJSON line's) JSON object; anything else is the provider's fault."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise ProviderError(f"provider {provider} sent an invalid stream {what}: {payload[:200]!r}")
    return data


def model_ids(provider: str, raw: bytes) -> list[str]:
    """The ids of a `{"data": [{"id": ...}, ...]}` listing (OpenAI's, and Anthropic's too)."""
    try:
        data = orjson.loads(raw)
        return [str(m["id"]) for m in data["data"]]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise ProviderError(f"provider {provider} returned an invalid model list") from None


class OpenAIStreamDecoder(RelayFirstDecoder):
    """OpenAI's SSE: one chunk per `data:` event, `data: [DONE]` at the end; usage in
    a final chunk (with empty choices) when asked for, or on every chunk (vLLM)."""

    __slots__ = ("_endpoint", "_framer", "_provider", "done", "usage")

    def __init__(self, provider: str, endpoint: Endpoint) -> None:
        super().__init__()
        self._framer = SSEFramer()
        self._provider = provider
        self._endpoint = endpoint
        self.usage = None
        self.done = False

    def _decode(self, data: bytes, out: list[Json]) -> None:
        for payload in self._framer.feed(data):
            if payload == b"[DONE]":
                self.done = True
                break
            chunk = stream_object(self._provider, payload)
            error = chunk.get("error")
            if error is not None and "choices" not in chunk:
                raise ProviderError(f"provider {self._provider} failed mid-stream: {upstream_message(payload)}")
            check_choices(self._provider, self._endpoint, chunk, chunk=True)
            usage = chunk.get("usage")
            if usage is not None:
                self.usage = usage_from_openai(usage)
            out.append(chunk)


class OpenAITranslator(Translator):
    def headers(self) -> dict[str, str]:
        return bearer_headers(self.config)

    def request(
        self, endpoint: Endpoint, body: Json, model: str, *, stream: bool, entry: ModelConfig | None = None
    ) -> UpstreamRequest:
        out = {**body, "model": model}
        if endpoint is not Endpoint.EMBEDDINGS:
            if stream:
                out["stream"] = True
                if self.config.stream_usage:
                    # Always asked, so every streamed token is accounted; the gateway
                    # shows the usage chunk only to clients who asked for it.
                    out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            else:
                out.pop("stream", None)
                # OpenAI refuses stream_options without stream.
                out.pop("stream_options", None)
        return UpstreamRequest(PATHS[endpoint], encode_body(out, body))

    def reply(self, endpoint: Endpoint, raw: bytes) -> Reply:
        data = json_object(self.id, raw)
        if endpoint is Endpoint.EMBEDDINGS:
            _check_embeddings(self.id, data)
        else:
            check_choices(self.id, endpoint, data, chunk=False)
        return Reply(data, usage_from_openai(data.get("usage")))

    def stream_decoder(self, endpoint: Endpoint) -> StreamDecoder:
        return OpenAIStreamDecoder(self.id, endpoint)

    def error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> GhostError:
        return upstream_status_error(self.id, status, raw, headers)

    def models_path(self) -> str:
        return "/models"

    def models(self, raw: bytes) -> list[str]:
        return model_ids(self.id, raw)
