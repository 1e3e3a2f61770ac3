"""Bodies of the sloppy-provider scenarios: answers of the wrong shape, oversized answers and
error messages far longer than any real one (see the package docstring)."""

from __future__ import annotations

from typing import Any

import orjson

from ghostllm.devupstream.generation import Generation
from ghostllm.devupstream.responses import FINGERPRINT, chat_completion, error_body, text_completion
from ghostllm.devupstream.streaming import DONE

# Valid JSON for everything the gateway checks, except the fields it relies on.
WRONG_CHAT = b'{"choices":[{"index":"a","message":"oops"}]}'
WRONG_CHAT_EVENT = b'data: {"choices":[{"index":"a","delta":"oops"}]}\n\n'
WRONG_COMPLETION = b'{"choices":[{"index":"a","text":"oops"}]}'
WRONG_COMPLETION_EVENT = b'data: {"choices":[{"index":"a","text":"oops"}]}\n\n'
WRONG_EMBEDDINGS = b'{"object":"list","data":"oops","model":"wrong-shape"}'

LONG_ERROR_START = "Simulated long error from the GhostLLM development upstream:"
LONG_ERROR_END = "(end of the long error)"
LONG_ERROR_CHARS = 31 * 1024

# Marks the string value an oversized answer is padded in; the padding is PAD_BYTE, valid in a
# JSON string and in base64, so the answer stays well-formed whatever its size.
PAD = "@@ghostllm-dev-pad@@"
PAD_BYTE = b"A"


def long_error(status: int) -> dict[str, Any]:
    """An OpenAI error body whose message is about 31 KiB, with known words at both ends."""
    filler_chars = LONG_ERROR_CHARS - len(LONG_ERROR_START) - len(LONG_ERROR_END) - 1
    filler = (" details" * (filler_chars // 8 + 1))[:filler_chars]
    message = f"{LONG_ERROR_START}{filler} {LONG_ERROR_END}"
    return error_body(message, "server_error" if status >= 500 else "invalid_request_error")


def padded(obj: dict[str, Any], size: int, *, event: bool = False) -> tuple[bytes, int, bytes]:
    """``obj`` (with ``PAD`` marking one string value) as (prefix, padding length, suffix) so that
    prefix + padding + suffix is ``size`` bytes: JSON, or one SSE event then ``[DONE]``."""
    prefix, _, suffix = orjson.dumps(obj).partition(PAD.encode())
    if event:
        prefix = b"data: " + prefix
        suffix += b"\n\n" + DONE
    return prefix, max(0, size - len(prefix) - len(suffix)), suffix


def oversized_answer(gen: Generation, *, chat: bool, stream: bool) -> dict[str, Any]:
    """The answer (or, streamed, its first chunk) with ``PAD`` as the first choice's text."""
    if not stream:
        obj = chat_completion(gen) if chat else text_completion(gen)
        first = obj["choices"][0]
        if chat:
            first["message"]["content"] = PAD
        else:
            first["text"] = PAD
        return obj
    choice: dict[str, Any] = (
        {"index": 0, "delta": {"role": "assistant", "content": PAD}, "logprobs": None, "finish_reason": None}
        if chat
        else {"text": PAD, "index": 0, "logprobs": None, "finish_reason": None}
    )
    return {
        "id": gen.id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": gen.created,
        "model": gen.model,
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
    }
