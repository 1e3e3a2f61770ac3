"""Chat completions: the typed request to OpenAI JSON, and OpenAI JSON to typed replies."""

from __future__ import annotations

from typing import Any

from ghostllm.errors import InvalidRequest
from ghostllm.protocol.common import (
    Json,
    check_model,
    check_range,
    check_sampling,
    check_type,
    copy_from_proto,
    merge_extra,
    type_error,
    usage_to_proto,
)
from ghostllm.protocol.values import py_to_struct, struct_to_py, value_to_py
from ghostllm.v1 import chat_pb2, openai_pb2

ROLES = frozenset(("system", "developer", "user", "assistant", "tool", "function"))
PART_TYPES = frozenset(("text", "image_url", "input_audio", "file", "refusal"))
TOOL_CHOICES = frozenset(("none", "auto", "required"))
RESPONSE_FORMATS = frozenset(("text", "json_object", "json_schema"))
_CHAT_INTS = (("max_completion_tokens", 1, 2**31 - 1), ("top_logprobs", 0, 20))


def _check_content(content: Any, i: int) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(
            "content must be a string, a list of content parts or null", param=f"messages[{i}].content"
        )
    for j, part in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
            raise InvalidRequest(f"each content part needs a type of {sorted(PART_TYPES)}", param=where)
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise InvalidRequest("a text part needs a string 'text'", param=f"{where}.text")
        if part["type"] == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise InvalidRequest("an image_url part needs image_url.url", param=f"{where}.image_url")


def _check_message(msg: Any, i: int) -> None:
    if not isinstance(msg, dict):
        raise type_error(f"messages[{i}]", "an object", msg)
    role = msg.get("role")
    if role not in ROLES:
        raise InvalidRequest(
            f"'{str(role)[:100]}' is not a valid role: use one of system, developer, user, assistant, tool",
            param=f"messages[{i}].role",
        )
    content = msg.get("content")
    _check_content(content, i)
    calls = msg.get("tool_calls")
    if calls is not None and not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
        raise InvalidRequest("tool_calls must be a list of objects", param=f"messages[{i}].tool_calls")
    if content is None and role not in ("assistant", "function") and not calls:
        raise InvalidRequest(f"messages[{i}] with role '{role}' needs content", param=f"messages[{i}].content")
    check_type(msg, "name", str, "a string")
    if role == "tool" and not (isinstance(msg.get("tool_call_id"), str) and msg["tool_call_id"]):
        raise InvalidRequest("a tool message needs tool_call_id", param=f"messages[{i}].tool_call_id")


def _check_tool(tool: Any, i: int) -> None:
    if not isinstance(tool, dict):
        raise type_error(f"tools[{i}]", "an object", tool)
    if tool.get("type", "function") != "function":
        raise InvalidRequest(f"tool type '{str(tool.get('type'))[:100]}' is not supported", param=f"tools[{i}].type")
    fn = tool.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise InvalidRequest("a tool function needs a name", param=f"tools[{i}].function.name")
    params = fn.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise type_error(f"tools[{i}].function.parameters", "an object", params)


def _check_tool_choice(choice: Any) -> None:
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return
    raise InvalidRequest(
        'tool_choice must be \'none\', \'auto\', \'required\' or {"type":"function","function":{"name":...}}',
        param="tool_choice",
    )


def check_chat_request(body: Json) -> Json:
    """Validate an OpenAI chat request body; returns it unchanged."""
    check_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must contain at least one message", param="messages")
    for i, m in enumerate(messages):
        _check_message(m, i)
    check_sampling(body)
    for name, lo, hi in _CHAT_INTS:
        check_range(body, name, lo, hi, integer=True)
    for name in ("logprobs", "parallel_tool_calls", "store"):
        check_type(body, name, bool, "a boolean")
    for name in ("reasoning_effort", "service_tier"):
        check_type(body, name, str, "a string")
    check_type(body, "metadata", dict, "an object")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise type_error("tools", "an array", tools)
        for i, t in enumerate(tools):
            _check_tool(t, i)
    if "tool_choice" in body and body["tool_choice"] is not None:
        _check_tool_choice(body["tool_choice"])
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") not in RESPONSE_FORMATS):
        raise InvalidRequest(
            "response_format.type must be 'text', 'json_object' or 'json_schema'", param="response_format.type"
        )
    return body


def _message_from_proto(msg: openai_pb2.ChatMessage) -> Json:
    out: Json = {"role": msg.role, "content": value_to_py(msg.content) if msg.HasField("content") else None}
    if msg.name:
        out["name"] = msg.name
    if msg.tool_calls:
        out["tool_calls"] = [
            {
                "id": tc.id,
                "type": tc.type or "function",
                "function": {"name": tc.function.name, "arguments": tc.function.arguments},
            }
            for tc in msg.tool_calls
        ]
    if msg.tool_call_id:
        out["tool_call_id"] = msg.tool_call_id
    if msg.HasField("refusal"):
        out["refusal"] = msg.refusal
    return out


def _tool_from_proto(tool: openai_pb2.Tool) -> Json:
    fn = tool.function
    out: Json = {"name": fn.name}
    if fn.description:
        out["description"] = fn.description
    if fn.HasField("parameters"):
        out["parameters"] = struct_to_py(fn.parameters)
    if fn.HasField("strict"):
        out["strict"] = fn.strict
    return {"type": tool.type or "function", "function": out}


_OPTIONAL = (
    "temperature", "top_p", "n", "seed", "max_tokens", "max_completion_tokens", "presence_penalty",
    "frequency_penalty", "logprobs", "top_logprobs", "parallel_tool_calls", "store", "stream",
)  # fmt: skip


def chat_request_from_proto(req: chat_pb2.ChatCompletionRequest) -> Json:
    """The OpenAI JSON a typed request stands for (fields it leaves unset are not sent)."""
    body: Json = {"model": req.model, "messages": [_message_from_proto(m) for m in req.messages]}
    copy_from_proto(req, body, _OPTIONAL)
    for name in ("user", "reasoning_effort", "service_tier"):
        if getattr(req, name):
            body[name] = getattr(req, name)
    if req.logit_bias:
        body["logit_bias"] = dict(req.logit_bias)
    if req.metadata:
        body["metadata"] = dict(req.metadata)
    if req.tools:
        body["tools"] = [_tool_from_proto(t) for t in req.tools]
    if req.HasField("tool_choice"):
        body["tool_choice"] = value_to_py(req.tool_choice)
    if req.HasField("response_format"):
        body["response_format"] = struct_to_py(req.response_format)
    return merge_extra(body, req)


def _tool_calls_to_proto(calls: Any, out: Any) -> None:
    for call in calls or ():
        tc = out.add()
        if "index" in call:
            tc.index = call["index"]
        if call.get("id"):
            tc.id = call["id"]
        if call.get("type"):
            tc.type = call["type"]
        fn = call.get("function") or {}
        if fn.get("name"):
            tc.function.name = fn["name"]
        if fn.get("arguments"):
            tc.function.arguments = fn["arguments"]


def chat_completion_to_proto(d: dict[str, Any]) -> chat_pb2.ChatCompletion:
    out = chat_pb2.ChatCompletion(
        id=d.get("id") or "",
        object=d.get("object") or "chat.completion",
        created=int(d.get("created") or 0),
        model=d.get("model") or "",
        system_fingerprint=d.get("system_fingerprint") or "",
        service_tier=d.get("service_tier") or "",
    )
    for c in d.get("choices") or ():
        choice = out.choices.add(index=c.get("index") or 0, finish_reason=c.get("finish_reason") or "")
        msg = c.get("message") or {}
        choice.message.role = msg.get("role") or "assistant"
        if msg.get("content") is not None:
            choice.message.content = msg["content"]
        if msg.get("refusal") is not None:
            choice.message.refusal = msg["refusal"]
        _tool_calls_to_proto(msg.get("tool_calls"), choice.message.tool_calls)
        if isinstance(c.get("logprobs"), dict):
            py_to_struct(c["logprobs"], choice.logprobs)
    usage_to_proto(d.get("usage"), out.usage)
    return out


def chat_chunk_to_proto(d: dict[str, Any]) -> chat_pb2.ChatCompletionChunk:
    out = chat_pb2.ChatCompletionChunk(
        id=d.get("id") or "",
        object=d.get("object") or "chat.completion.chunk",
        created=int(d.get("created") or 0),
        model=d.get("model") or "",
        system_fingerprint=d.get("system_fingerprint") or "",
    )
    for c in d.get("choices") or ():
        choice = out.choices.add(index=c.get("index") or 0, finish_reason=c.get("finish_reason") or "")
        delta = c.get("delta") or {}
        if delta.get("role"):
            choice.delta.role = delta["role"]
        if delta.get("content") is not None:
            choice.delta.content = delta["content"]
        if delta.get("refusal") is not None:
            choice.delta.refusal = delta["refusal"]
        _tool_calls_to_proto(delta.get("tool_calls"), choice.delta.tool_calls)
        if isinstance(c.get("logprobs"), dict):
            py_to_struct(c["logprobs"], choice.logprobs)
    usage_to_proto(d.get("usage"), out.usage)
    return out
