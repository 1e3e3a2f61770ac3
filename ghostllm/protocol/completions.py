"""Legacy text completions: typed request to OpenAI JSON and back."""

from __future__ import annotations

from typing import Any

from ghostllm.errors import InvalidRequest
from ghostllm.protocol.common import (
    Json,
    check_model,
    check_sampling,
    check_type,
    copy_from_proto,
    is_text_or_tokens,
    merge_extra,
    usage_to_proto,
)
from ghostllm.protocol.values import py_to_struct, value_to_py
from ghostllm.v1 import completions_pb2

_COMPLETION_INTS = (("logprobs", 0, 5), ("best_of", 1, 20))
_OPTIONAL = (
    "max_tokens", "temperature", "top_p", "n", "stream", "logprobs", "echo", "presence_penalty",
    "frequency_penalty", "best_of", "seed",
)  # fmt: skip


def check_completion_request(body: Json) -> Json:
    """Validate an OpenAI text completion request body; returns it unchanged."""
    check_model(body)
    if not is_text_or_tokens(body.get("prompt")):
        raise InvalidRequest(
            "prompt must be a string, a list of strings, a list of token ids or a list of token id lists",
            param="prompt",
        )
    check_sampling(body, _COMPLETION_INTS)
    check_type(body, "suffix", str, "a string")
    check_type(body, "echo", bool, "a boolean")
    return body


def completion_request_from_proto(req: completions_pb2.CompletionRequest) -> Json:
    body: Json = {"model": req.model, "prompt": value_to_py(req.prompt) if req.HasField("prompt") else None}
    copy_from_proto(req, body, _OPTIONAL)
    if req.suffix:
        body["suffix"] = req.suffix
    if req.user:
        body["user"] = req.user
    if req.logit_bias:
        body["logit_bias"] = dict(req.logit_bias)
    return merge_extra(body, req)


def completion_to_proto(d: dict[str, Any]) -> completions_pb2.Completion:
    out = completions_pb2.Completion(
        id=d.get("id") or "",
        object=d.get("object") or "text_completion",
        created=int(d.get("created") or 0),
        model=d.get("model") or "",
        system_fingerprint=d.get("system_fingerprint") or "",
    )
    for c in d.get("choices") or ():
        choice = out.choices.add(
            index=c.get("index") or 0, text=c.get("text") or "", finish_reason=c.get("finish_reason") or ""
        )
        if isinstance(c.get("logprobs"), dict):
            py_to_struct(c["logprobs"], choice.logprobs)
    usage_to_proto(d.get("usage"), out.usage)
    return out
