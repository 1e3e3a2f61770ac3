"""Request fields shared by chat and text completions, and their checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import Message

from ghostllm.errors import InvalidRequest, ProviderError
from ghostllm.protocol.values import value_to_py
from ghostllm.v1 import openai_pb2
from ghostllm.v1.chat_pb2 import ChatCompletionRequest
from ghostllm.v1.completions_pb2 import CompletionRequest

M = TypeVar("M", bound=Message)

# Either request message: both carry the sampling fields under the same names.
Sampling = ChatCompletionRequest | CompletionRequest


# (field, minimum, maximum) for the optional numbers both APIs accept.
_RANGES: tuple[tuple[str, float, float], ...] = (
    ("temperature", 0.0, 2.0),
    ("top_p", 0.0, 1.0),
    ("n", 1, 128),
    ("presence_penalty", -2.0, 2.0),
    ("frequency_penalty", -2.0, 2.0),
    ("max_tokens", 1, 2**31 - 1),
    ("seed", -(2**63), 2**63 - 1),
)


def is_text_or_tokens(value: Any) -> bool:
    """A string, or a non-empty list of strings, of token ids, or of non-empty token id lists:
    what OpenAI accepts as a completion prompt or an embedding input."""
    if isinstance(value, str):
        return True
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(x, str) for x in value) or all(isinstance(x, int) for x in value):
        return True
    return all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in value)


def require_model(model: str) -> None:
    if not model:
        raise InvalidRequest("you must provide a model parameter", param="model", code="missing_required_parameter")


def copy_sampling(req: Message, body: dict[str, Any], extra: tuple[tuple[str, float, float], ...] = ()) -> None:
    """Copy the set optional numbers of `req` into `body`, checking their ranges."""
    for name, lo, hi in _RANGES + extra:
        if req.HasField(name):
            v = getattr(req, name)
            if not lo <= v <= hi:
                raise InvalidRequest(
                    f"{v} is not a valid value for '{name}': it must be between {lo} and {hi}",
                    param=name,
                    code="invalid_value",
                )
            body[name] = v
    if req.HasField("stop"):
        stop = value_to_py(getattr(req, "stop"))  # noqa: B009 - Message has no static fields
        if stop is not None:
            ok = isinstance(stop, str) or (
                isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)
            )
            if not ok:
                raise InvalidRequest("'stop' must be a string or a list of up to 4 strings", param="stop")
            body["stop"] = stop
    user = getattr(req, "user")  # noqa: B009
    if user:
        body["user"] = user


def wants_stream(req: Sampling) -> bool:
    return req.HasField("stream") and req.stream


def wants_usage(req: Sampling) -> bool:
    so = req.stream_options
    return so.HasField("include_usage") and so.include_usage


def copy_stream_options(req: Sampling, body: dict[str, Any]) -> None:
    """Pass include_usage on for streams (OpenAI rejects stream_options without stream)."""
    if wants_stream(req) and wants_usage(req):
        body["stream_options"] = {"include_usage": True}


def usage_to_proto(d: Any, out: openai_pb2.Usage) -> None:
    if not isinstance(d, dict):
        return
    out.prompt_tokens = int(d.get("prompt_tokens") or 0)
    out.completion_tokens = int(d.get("completion_tokens") or 0)
    out.total_tokens = int(d.get("total_tokens") or out.prompt_tokens + out.completion_tokens)
    ptd = d.get("prompt_tokens_details")
    if isinstance(ptd, dict):
        for k in ("cached_tokens", "audio_tokens"):
            if isinstance(ptd.get(k), int):
                setattr(out.prompt_tokens_details, k, ptd[k])
    ctd = d.get("completion_tokens_details")
    if isinstance(ctd, dict):
        for k in (
            "reasoning_tokens",
            "audio_tokens",
            "accepted_prediction_tokens",
            "rejected_prediction_tokens",
        ):
            if isinstance(ctd.get(k), int):
                setattr(out.completion_tokens_details, k, ctd[k])


def from_upstream(convert: Callable[[dict[str, Any]], M], data: dict[str, Any]) -> M:
    """Convert an upstream answer to a typed reply; a malformed answer is the provider's fault."""
    try:
        return convert(data)
    except (TypeError, AttributeError, ValueError, KeyError) as exc:
        raise ProviderError(f"provider returned a malformed answer: {exc}") from None
