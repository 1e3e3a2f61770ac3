"""Translator for Ollama's native API: `/api/chat` (NDJSON streams), `/api/generate` for
legacy text completions, `/api/embed`, `/api/tags` for listing and health.

Answers become OpenAI JSON: the message's content, its `thinking` as
`reasoning_content` (never as content), its tool calls (Ollama sends each whole, with
arguments as an object, in any chunk or only in the final one) as OpenAI calls with
arguments as a JSON string, an id (Ollama's own when it sends one, else generated once)
and a stable index. done_reason length → finish_reason length; any tool call →
tool_calls; anything else (stop, or none: older servers send none) → stop.
prompt_eval_count / eval_count are the usage (thinking is inside eval_count).
An `{"error": ...}` line mid-stream is the provider failing, after what came before it.
The request side is `ghostllm.providers.ollama_request`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

import orjson

from ghostllm.config import ModelConfig
from ghostllm.errors import GhostError, ProviderError
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage, count, usage_to_openai
from ghostllm.providers import ollama_request as oreq
from ghostllm.providers.base import Json, Reply
from ghostllm.providers.ndjson import NDJSONFramer
from ghostllm.providers.openai import json_object, malformed, stream_object, upstream_message, upstream_status_error
from ghostllm.providers.translator import (
    RelayFirstDecoder,
    StreamDecoder,
    Translator,
    UpstreamRequest,
    bearer_headers,
    encode_body,
)

PATHS = {Endpoint.CHAT: "/api/chat", Endpoint.COMPLETIONS: "/api/generate", Endpoint.EMBEDDINGS: "/api/embed"}
TAGS_PATH = "/api/tags"


def usage_of(data: Json) -> Usage:
    prompt = count(data.get("prompt_eval_count"))
    completion = count(data.get("eval_count"))
    return Usage(prompt, completion, prompt + completion)


def finish_reason(done_reason: Any, called: bool) -> str:
    if done_reason == "length":
        return "length"
    return "tool_calls" if called else "stop"


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def tool_call(provider: str, call: Any, index: int) -> Json:
    """One Ollama tool call as an OpenAI one (with `index`, as stream deltas carry it)."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise malformed(provider, "a tool call without function.name")
    args = fn.get("arguments")
    if isinstance(args, dict):
        text = orjson.dumps(args).decode()
    elif isinstance(args, str):
        text = args
    elif args is None:
        text = "{}"
    else:
        raise malformed(provider, "tool call arguments that are not an object")
    cid = call.get("id")
    return {
        "index": index,
        "id": cid if isinstance(cid, str) and cid else f"call_{secrets.token_hex(12)}",
        "type": "function",
        "function": {"name": fn["name"], "arguments": text},
    }


def _message(provider: str, data: Json) -> Json:
    msg = data.get("message")
    if not isinstance(msg, dict):
        raise malformed(provider, "'message' is not an object")
    content = msg.get("content")
    if content is not None and not isinstance(content, str):
        raise malformed(provider, "message content is not a string")
    calls = msg.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise malformed(provider, "tool_calls is not a list")
    return msg


def _logprobs(data: Json) -> Json | None:
    # Ollama's entries already are OpenAI's (token, logprob, bytes, top_logprobs).
    lp = data.get("logprobs")
    return {"content": lp, "refusal": None} if isinstance(lp, list) else None


def _json_object(provider: str, raw: bytes) -> Json:
    # Ollama may answer 200 with an error object in place of the answer.
    data = json_object(provider, raw)
    if data.get("error") is not None:
        raise ProviderError(f"provider {provider} failed: {upstream_message(raw)}")
    return data


class OllamaStreamDecoder(RelayFirstDecoder):
    """Ollama's NDJSON: one object per line, `done: true` on the last (with done_reason
    and the counts). Chat lines carry `message`, generate lines `response`."""

    __slots__ = (
        "_calls", "_chat", "_created", "_framer", "_id", "_object", "_provider", "_started", "done", "usage",
    )  # fmt: skip

    def __init__(self, provider: str, endpoint: Endpoint) -> None:
        super().__init__()
        self._framer = NDJSONFramer()
        self._provider = provider
        self._chat = endpoint is Endpoint.CHAT
        self._id = _new_id("chatcmpl" if self._chat else "cmpl")
        self._object = "chat.completion.chunk" if self._chat else "text_completion"
        self._created = int(time.time())
        self._started = False
        self._calls = 0
        self.usage = None
        self.done = False

    def _chunk(self, model: Any, choices: list[Json]) -> Json:
        return {"id": self._id, "object": self._object, "created": self._created, "model": model, "choices": choices}

    def _chat_delta(self, data: Json) -> Json | None:
        msg = _message(self._provider, data)
        delta: Json = {}
        if not self._started:
            self._started = True
            delta["role"] = "assistant"
        content = msg.get("content")
        if content:
            delta["content"] = content
        thinking = msg.get("thinking")
        if isinstance(thinking, str) and thinking:
            delta["reasoning_content"] = thinking
        calls = msg.get("tool_calls")
        if calls:
            first = self._calls
            self._calls += len(calls)
            delta["tool_calls"] = [tool_call(self._provider, c, first + k) for k, c in enumerate(calls)]
        if not delta:
            return None
        if len(delta) == 1 and "role" in delta:
            delta["content"] = ""
        return delta

    def _line(self, line: bytes, out: list[Json]) -> None:
        data = stream_object(self._provider, line, "line")
        if data.get("error") is not None:
            raise ProviderError(f"provider {self._provider} failed mid-stream: {upstream_message(line)}")
        model = data.get("model")
        logprobs = _logprobs(data)
        if self._chat:
            delta = self._chat_delta(data)
            if delta is not None or logprobs is not None:
                choice = {"index": 0, "delta": delta or {}, "logprobs": logprobs, "finish_reason": None}
                out.append(self._chunk(model, [choice]))
        else:
            text = data.get("response")
            if not isinstance(text, str):
                raise malformed(self._provider, "'response' is not a string")
            if text:
                out.append(self._chunk(model, [{"index": 0, "text": text, "logprobs": None, "finish_reason": None}]))
        if data.get("done") is True:
            finish = finish_reason(data.get("done_reason"), self._calls > 0)
            end: Json = {"index": 0, "delta": {}} if self._chat else {"index": 0, "text": ""}
            out.append(self._chunk(model, [{**end, "logprobs": None, "finish_reason": finish}]))
            self.usage = usage_of(data)
            # The usage chunk, as OpenAI sends it: no choices (the gateway shows it to clients who asked).
            last = self._chunk(model, [])
            last["usage"] = usage_to_openai(self.usage)
            out.append(last)
            self.done = True

    def _decode(self, data: bytes, out: list[Json]) -> None:
        for line in self._framer.feed(data):
            self._line(line, out)
            if self.done:
                break


class OllamaTranslator(Translator):
    def headers(self) -> dict[str, str]:
        # A local Ollama needs no key; ollama.com (and proxies in front of a server) take a bearer token.
        return bearer_headers(self.config)

    def request(
        self, endpoint: Endpoint, body: Json, model: str, *, stream: bool, entry: ModelConfig | None = None
    ) -> UpstreamRequest:
        if endpoint is Endpoint.CHAT:
            out = oreq.chat(body, model, self.id, stream=stream)
        elif endpoint is Endpoint.COMPLETIONS:
            out = oreq.generate(body, model, self.id, stream=stream)
        else:
            out = oreq.embed(body, model, self.id)
        return UpstreamRequest(PATHS[endpoint], encode_body(out, body))

    def reply(self, endpoint: Endpoint, raw: bytes) -> Reply:
        data = _json_object(self.id, raw)
        if endpoint is Endpoint.EMBEDDINGS:
            return self._embeddings(data)
        usage = usage_of(data)
        if endpoint is Endpoint.COMPLETIONS:
            text = data.get("response")
            if not isinstance(text, str):
                raise malformed(self.id, "'response' is not a string")
            choice: Json = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason(data.get("done_reason"), False),
            }
            obj, prefix = "text_completion", "cmpl"
        else:
            msg = _message(self.id, data)
            calls = [tool_call(self.id, c, k) for k, c in enumerate(msg.get("tool_calls") or ())]
            for c in calls:
                del c["index"]
            content = msg.get("content") or ""
            message: Json = {
                "role": "assistant",
                "content": content if content or not calls else None,
                "refusal": None,
            }
            if calls:
                message["tool_calls"] = calls
            thinking = msg.get("thinking")
            if isinstance(thinking, str) and thinking:
                message["reasoning_content"] = thinking
            choice = {
                "index": 0,
                "message": message,
                "logprobs": _logprobs(data),
                "finish_reason": finish_reason(data.get("done_reason"), bool(calls)),
            }
            obj, prefix = "chat.completion", "chatcmpl"
        out = {
            "id": _new_id(prefix),
            "object": obj,
            "created": int(time.time()),
            "model": data.get("model"),
            "choices": [choice],
            "usage": usage_to_openai(usage),
        }
        return Reply(out, usage)

    def _embeddings(self, data: Json) -> Reply:
        # Floats: the provider packs them as base64 when the request asked (providers/http.py).
        vectors = data.get("embeddings")
        if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
            raise malformed(self.id, "'embeddings' is not a list of vectors")
        prompt = count(data.get("prompt_eval_count"))
        usage = Usage(prompt, 0, prompt)
        out = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": data.get("model"),
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
        return Reply(out, usage)

    def stream_decoder(self, endpoint: Endpoint) -> StreamDecoder:
        return OllamaStreamDecoder(self.id, endpoint)

    def error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> GhostError:
        return upstream_status_error(self.id, status, raw, headers)

    def models_path(self) -> str:
        return TAGS_PATH

    def models(self, raw: bytes) -> list[str]:
        try:
            data = orjson.loads(raw)
            return [str(m.get("model") or m["name"]) for m in data["models"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ProviderError(f"provider {self.id} returned an invalid model list") from None
