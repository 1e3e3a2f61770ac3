"""Legacy text completions: typed request to OpenAI JSON and back."""

from __future__ import annotations

from typing import Any

from ghostllm.errors import InvalidRequest
from ghostllm.protocol.common import (
    copy_sampling,
    copy_stream_options,
    is_text_or_tokens,
    require_model,
    usage_to_proto,
)
from ghostllm.protocol.values import py_to_struct, value_to_py
from ghostllm.v1 import completions_pb2

_COMPLETION_RANGES = (("logprobs", 0, 5), ("best_of", 1, 20))


def completion_request_to_openai(req: completions_pb2.CompletionRequest) -> dict[str, Any]:
    require_model(req.model)
    prompt = value_to_py(req.prompt) if req.HasField("prompt") else None
    if not is_text_or_tokens(prompt):
        raise InvalidRequest(
            "prompt must be a string, a list of strings, a list of token ids or a list of token id lists",
            param="prompt",
        )
    body: dict[str, Any] = {"model": req.model, "prompt": prompt}
    copy_sampling(req, body, _COMPLETION_RANGES)
    copy_stream_options(req, body)
    if req.suffix:
        body["suffix"] = req.suffix
    if req.HasField("echo"):
        body["echo"] = req.echo
    if req.logit_bias:
        body["logit_bias"] = dict(req.logit_bias)
    return body


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
