"""Anthropic answers in OpenAI terms: a whole Message as a chat completion, its usage,
stop reasons, and error bodies (HTTP and in-stream) as our errors."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from ghostllm.errors import GhostError, ServiceUnavailable, UnusableAnswer
from ghostllm.protocol.usage import Usage, count, count_or_none, usage_to_openai
from ghostllm.providers.base import Json, Reply
from ghostllm.providers.openai import malformed, upstream_message, upstream_status_error

# Anthropic's stop_reason as OpenAI's finish_reason. pause_turn (a server tool paused a
# long turn) ends this answer like end_turn does; the client may continue it.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The HTTP status each documented error type stands for (an in-stream error event
# carries only the type).
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
OVERLOADED = 529


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_of(u: Mapping[str, Any]) -> Usage:
    """Anthropic's input_tokens leaves out the cached part of the prompt; OpenAI's
    prompt_tokens counts it (and says how much of it was cached), so it is added back.
    Thinking is inside output_tokens already."""
    read = count_or_none(u.get("cache_read_input_tokens"))
    written = count_or_none(u.get("cache_creation_input_tokens"))
    prompt = count(u.get("input_tokens")) + (read or 0) + (written or 0)
    completion = count(u.get("output_tokens"))
    details = u.get("output_tokens_details")
    thinking = count_or_none(details.get("thinking_tokens")) if isinstance(details, dict) else None
    return Usage(prompt, completion, prompt + completion, read, thinking, written)


def completion(provider: str, raw: bytes) -> Reply:
    """A whole Message as an OpenAI chat completion. Thinking blocks are the model's
    scratchpad, not its answer: they are counted (in output_tokens), never shown."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UnusableAnswer(f"provider {provider} returned a body that is not JSON: {raw[:200]!r}") from None
    # Not json_object(): a body that is JSON but not an object is reported as this, not as "unexpected JSON".
    if not isinstance(msg, dict) or not isinstance(msg.get("content"), list):
        raise malformed(provider, "no content list")
    texts: list[str] = []
    calls: list[Json] = []
    for block in msg["content"]:
        if not isinstance(block, dict):
            raise malformed(provider, "a content block is not an object")
        kind = block.get("type")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise malformed(provider, "a text block without text")
            texts.append(block["text"])
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise malformed(provider, "a tool_use block without id or name")
            args = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": args}}
            )
    # refusal and logprobs: OpenAI always has them (null here), and its clients may rely on it.
    message: Json = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    usage = usage_of(msg["usage"]) if isinstance(msg.get("usage"), dict) else None
    data: Json = {
        "id": msg.get("id") or "",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": msg.get("model") or "",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(msg.get("stop_reason"))}
        ],
    }
    if usage is not None:
        data["usage"] = usage_to_openai(usage)
    return Reply(data, usage)


def status_error(provider: str, status: int, raw: bytes, headers: Mapping[str, str]) -> GhostError:
    """An Anthropic error status as ours. 529 (overloaded) is theirs alone: most clients
    do not know it, so it is a 503, the provider's message kept."""
    if status == OVERLOADED:
        return ServiceUnavailable(f"provider {provider} is overloaded: {upstream_message(raw)}")
    return upstream_status_error(provider, status, raw, headers)


def stream_error(provider: str, payload: bytes, event: Json) -> GhostError:
    """An `error` event, which stands for the status its type would have had."""
    err = event.get("error")
    kind = err.get("type") if isinstance(err, dict) else None
    status = ERROR_STATUSES.get(kind, 500) if isinstance(kind, str) else 500
    return status_error(provider, status, payload, {})
