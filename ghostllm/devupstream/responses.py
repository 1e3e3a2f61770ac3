"""OpenAI JSON bodies (non-streaming), shaped like the real API including its always-present nulls."""

from __future__ import annotations

import base64
import hashlib
import random
import struct
from typing import Any

from ghostllm.devupstream.generation import BadRequest, Choice, Generation, count_words

FINGERPRINT = "ghostllm-dev"
OWNER = "ghostllm-dev"
MODELS_CREATED = 1735689600  # 2025-01-01, fixed so listings are byte-for-byte stable
MODEL_IDS = ("dev-echo", "dev-embed")
DEFAULT_DIMENSIONS = 8


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# (message, type, code) of the errors OpenAI really returns for each status.
_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request (simulated by the GhostLLM development upstream).", "invalid_request_error", None),
    401: (
        "Incorrect API key provided: sk-dev***. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: (
        "Rate limit reached for requests (simulated by the GhostLLM development upstream). Please try again in 7s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def simulated_error(status: int) -> dict[str, Any]:
    known = _ERRORS.get(status)
    if known is not None:
        message, type_, code = known
    else:
        message = f"Simulated HTTP {status} from the GhostLLM development upstream."
        type_, code = ("server_error" if status >= 500 else "invalid_request_error"), None
    return error_body(message, type_, None, code)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _message(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.text,
        "refusal": None,
        "annotations": [],
    }
    if choice.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in choice.tool_calls
        ]
    return message


def chat_completion(gen: Generation) -> dict[str, Any]:
    return {
        "id": gen.id,
        "object": "chat.completion",
        "created": gen.created,
        "model": gen.model,
        "choices": [
            {"index": c.index, "message": _message(c), "logprobs": None, "finish_reason": c.finish_reason}
            for c in gen.choices
        ],
        "usage": usage(gen.prompt_tokens, gen.completion_tokens),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def text_completion(gen: Generation) -> dict[str, Any]:
    return {
        "id": gen.id,
        "object": "text_completion",
        "created": gen.created,
        "model": gen.model,
        "choices": [
            {"text": c.text or "", "index": c.index, "logprobs": None, "finish_reason": c.finish_reason}
            for c in gen.choices
        ],
        "usage": usage(gen.prompt_tokens, gen.completion_tokens),
        "system_fingerprint": FINGERPRINT,
    }


def model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODELS_CREATED, "owned_by": OWNER}


def model_list() -> dict[str, Any]:
    return {"object": "list", "data": [model_object(m) for m in MODEL_IDS]}


def model_not_found(model_id: str) -> dict[str, Any]:
    return error_body(
        f"The model '{model_id}' does not exist or you do not have access to it.",
        "invalid_request_error",
        "model",
        "model_not_found",
    )


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    dims = body.get("dimensions", DEFAULT_DIMENSIONS)
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 4096:
        raise BadRequest("'dimensions' must be an integer from 1 to 4096.", "dimensions")
    as_base64 = body.get("encoding_format") == "base64"
    inputs, tokens = _inputs(body.get("input"))
    data = []
    for i, item in enumerate(inputs):
        packed = _vector(item, dims)
        vector: object = base64.b64encode(packed).decode() if as_base64 else list(struct.unpack(f"<{dims}f", packed))
        data.append({"object": "embedding", "index": i, "embedding": vector})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _inputs(value: object) -> tuple[list[bytes], int]:
    """Each input as the bytes its vector is derived from, and the prompt token count."""
    if isinstance(value, str):
        return [value.encode()], max(1, count_words(value))
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return [v.encode() for v in value], max(1, sum(count_words(v) for v in value))
        if all(_is_int(v) for v in value):
            return [repr(value).encode()], len(value)
        if all(isinstance(v, list) and v and all(_is_int(t) for t in v) for v in value):
            return [repr(v).encode() for v in value], sum(len(v) for v in value)
    raise BadRequest(
        "'input' must be a non-empty string, array of strings, array of tokens, or array of token arrays.",
        "input",
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _vector(item: bytes, dims: int) -> bytes:
    """Unit vector seeded by a hash of the input, as little-endian float32 (OpenAI's base64 layout)."""
    seed = int.from_bytes(hashlib.blake2b(item, digest_size=8).digest(), "little")
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return struct.pack(f"<{dims}f", *(x / norm for x in raw))
