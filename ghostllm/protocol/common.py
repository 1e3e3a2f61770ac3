"""Request checks shared by every endpoint, on the OpenAI JSON body.

REST bodies (the client's JSON, parsed strictly) and typed gRPC requests
(converted to the same JSON) are validated by these one set of rules. Only the
fields we rely on or that OpenAI bounds are checked; every other field is the
client's and passes through untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from google.protobuf.message import Message

from ghostllm.errors import InvalidRequest, ProviderError
from ghostllm.protocol.values import struct_to_py, value_to_py

M = TypeVar("M", bound=Message)
Json = dict[str, Any]

# (field, minimum, maximum) for the optional numbers chat and text completions accept.
SAMPLING_RANGES: tuple[tuple[str, float, float], ...] = (
    ("temperature", 0.0, 2.0),
    ("top_p", 0.0, 1.0),
    ("presence_penalty", -2.0, 2.0),
    ("frequency_penalty", -2.0, 2.0),
)
SAMPLING_INTS: tuple[tuple[str, int, int], ...] = (
    ("n", 1, 128),
    ("max_tokens", 1, 2**31 - 1),
    ("seed", -(2**63), 2**63 - 1),
)
# JSON nested deeper than this (the body object is level 1) is refused with 400
# naming the field: orjson, which encodes the upstream body, stops there. The
# check runs only when encoding failed, so it costs nothing per request.
MAX_JSON_DEPTH = 254


def is_text_or_tokens(value: Any) -> bool:
    """A string, or a non-empty list of strings, of token ids, or of non-empty token id lists:
    what OpenAI accepts as a completion prompt or an embedding input."""
    if isinstance(value, str):
        return True
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(x, str) for x in value) or all(_is_int(x) for x in value):
        return True
    return all(isinstance(x, list) and x and all(_is_int(t) for t in x) for x in value)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def type_error(name: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{name}': expected {expected}, but got {_json_type(value)}.", param=name, code="invalid_type"
    )


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def check_model(body: Json) -> str:
    model = body.get("model")
    if model is None or model == "":
        raise InvalidRequest("you must provide a model parameter", param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise type_error("model", "a string", model)
    return model


def check_range(body: Json, name: str, lo: float, hi: float, *, integer: bool = False) -> None:
    v = body.get(name)
    if v is None:
        return
    if not (_is_int(v) if integer else _is_number(v)):
        raise type_error(name, "an integer" if integer else "a number", v)
    if not lo <= v <= hi:
        raise InvalidRequest(
            f"{v} is not a valid value for '{name}': it must be between {lo} and {hi}", param=name, code="invalid_value"
        )


def check_type(body: Json, name: str, kind: type | tuple[type, ...], expected: str) -> None:
    v = body.get(name)
    if v is not None and (not isinstance(v, kind) or (isinstance(v, bool) and bool not in _kinds(kind))):
        raise type_error(name, expected, v)


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def check_sampling(body: Json, extra_ints: tuple[tuple[str, int, int], ...] = ()) -> None:
    """The fields chat and text completions share."""
    for name, lo, hi in SAMPLING_RANGES:
        check_range(body, name, lo, hi)
    for name, ilo, ihi in SAMPLING_INTS + extra_ints:
        check_range(body, name, ilo, ihi, integer=True)
    stop = body.get("stop")
    if stop is not None:
        ok = isinstance(stop, str) or (
            isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)
        )
        if not ok:
            raise InvalidRequest("'stop' must be a string or a list of up to 4 strings", param="stop")
    check_type(body, "user", str, "a string")
    check_type(body, "stream", bool, "a boolean")
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            raise type_error("stream_options", "an object", so)
        check_type(so, "include_usage", bool, "a boolean")
    lb = body.get("logit_bias")
    if lb is not None and not (isinstance(lb, dict) and all(_is_number(x) for x in lb.values())):
        raise InvalidRequest("'logit_bias' must map token ids to numbers", param="logit_bias")


def wants_stream(body: Json) -> bool:
    return body.get("stream") is True


def wants_usage(body: Json) -> bool:
    so = body.get("stream_options")
    return isinstance(so, dict) and so.get("include_usage") is True


def copy_from_proto(req: Message, body: Json, optional: tuple[str, ...]) -> None:
    """The set optional scalars, `stop` and `stream_options` of a typed chat or text completion request."""
    fields: Any = req  # names from a tuple: the stubs type HasField by literal
    for name in optional:
        if fields.HasField(name):
            body[name] = getattr(req, name)
    if fields.HasField("stop"):
        body["stop"] = value_to_py(fields.stop)
    if fields.stream_options.HasField("include_usage"):
        body["stream_options"] = {"include_usage": fields.stream_options.include_usage}


def merge_extra(body: Json, req: Message) -> Json:
    """Add a typed request's `extra` parameters (a Struct, and `extra_json`) as top-level fields,
    never over a field the message models or one already set."""
    fields: Any = req
    if not fields.HasField("extra"):
        return merge_extra_json(body, fields.extra_json)
    extra = struct_to_py(fields.extra)
    modelled = req.DESCRIPTOR.fields_by_name
    for key, value in extra.items():
        if key in modelled:
            raise InvalidRequest(f"extra.{key} is a field of the request: set it directly", param=f"extra.{key}")
        body[key] = value
    return merge_extra_json(body, fields.extra_json)


def merge_extra_json(body: Json, text: str) -> Json:
    """Add the top-level fields of a typed request's `extra_json` (a JSON object), none of them set already."""
    if not text:
        return body
    try:
        extra = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"extra_json is not valid JSON: {exc}", param="extra_json", code="invalid_json") from None
    if not isinstance(extra, dict):
        raise type_error("extra_json", "a JSON object", extra)
    for key, value in extra.items():
        if key in body:
            raise InvalidRequest(f"extra_json.{key} is set twice", param=f"extra_json.{key}")
        body[key] = value
    return body


def parse_json_body(raw: bytes | memoryview) -> Json:
    """A REST request body: strict JSON (RFC 8259, as OpenAI parses it), an object at the top."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def deepest_path(value: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """The path of the first place nested deeper than `limit`, or None. Only run when
    encoding failed, so its cost stays off the hot path."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        v, path, depth = stack.pop()
        if depth > limit:
            return path.lstrip(".") or "body"
        if isinstance(v, dict):
            stack.extend((x, f"{path}.{k}", depth + 1) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v))
    return None


def too_deep(body: Json) -> InvalidRequest:
    """The error for a body that could not be encoded because of its nesting, naming the field."""
    where = deepest_path(body, MAX_JSON_DEPTH - 1) or "body"
    return InvalidRequest(
        f"'{where[:200]}' is nested deeper than the {MAX_JSON_DEPTH}-level JSON limit",
        param=where.split(".", 1)[0].split("[", 1)[0],
        code="too_deep",
    )


def from_upstream(convert: Callable[[Json], M], data: Json) -> M:
    """Convert an upstream answer to a typed reply; a malformed answer is the provider's fault."""
    try:
        return convert(data)
    except (TypeError, AttributeError, ValueError, KeyError) as exc:
        raise ProviderError(f"provider returned a malformed answer: {exc}") from None


def usage_to_proto(d: Any, out: Any) -> None:
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
