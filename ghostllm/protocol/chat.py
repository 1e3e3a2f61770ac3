"""Chat completions: the typed request to OpenAI JSON, and OpenAI JSON to typed replies."""

from __future__ import annotations

from typing import Any

from ghostllm.errors import InvalidRequest
from ghostllm.protocol.common import copy_sampling, copy_stream_options, require_model, usage_to_proto
from ghostllm.protocol.values import py_to_struct, struct_to_py, value_to_py
from ghostllm.v1 import chat_pb2, openai_pb2

ROLES = frozenset(("system", "developer", "user", "assistant", "tool", "function"))
PART_TYPES = frozenset(("text", "image_url", "input_audio", "file", "refusal"))
TOOL_CHOICES = frozenset(("none", "auto", "required"))
RESPONSE_FORMATS = frozenset(("text", "json_object", "json_schema"))
_CHAT_RANGES = (("max_completion_tokens", 1, 2**31 - 1), ("top_logprobs", 0, 20))


def _content(msg: openai_pb2.ChatMessage, i: int) -> Any:
    if not msg.HasField("content"):
        return None
    content = value_to_py(msg.content)
    if content is None or isinstance(content, str):
        return content
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
    return content


def _message(msg: openai_pb2.ChatMessage, i: int) -> dict[str, Any]:
    if msg.role not in ROLES:
        raise InvalidRequest(
            f"'{msg.role}' is not a valid role: use one of system, developer, user, assistant, tool",
            param=f"messages[{i}].role",
        )
    out: dict[str, Any] = {"role": msg.role, "content": _content(msg, i)}
    if out["content"] is None and msg.role not in ("assistant", "function") and not msg.tool_calls:
        raise InvalidRequest(f"messages[{i}] with role '{msg.role}' needs content", param=f"messages[{i}].content")
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
    if msg.role == "tool":
        if not msg.tool_call_id:
            raise InvalidRequest("a tool message needs tool_call_id", param=f"messages[{i}].tool_call_id")
        out["tool_call_id"] = msg.tool_call_id
    if msg.HasField("refusal"):
        out["refusal"] = msg.refusal
    return out


def _tool(tool: openai_pb2.Tool, i: int) -> dict[str, Any]:
    if (tool.type or "function") != "function":
        raise InvalidRequest(f"tool type '{tool.type}' is not supported", param=f"tools[{i}].type")
    fn = tool.function
    if not fn.name:
        raise InvalidRequest("a tool function needs a name", param=f"tools[{i}].function.name")
    out: dict[str, Any] = {"name": fn.name}
    if fn.description:
        out["description"] = fn.description
    if fn.HasField("parameters"):
        out["parameters"] = struct_to_py(fn.parameters)
    if fn.HasField("strict"):
        out["strict"] = fn.strict
    return {"type": "function", "function": out}


def _tool_choice(req: chat_pb2.ChatCompletionRequest) -> Any:
    choice = value_to_py(req.tool_choice)
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return choice
    if isinstance(choice, dict) and isinstance((choice.get("function") or {}).get("name"), str):
        return choice
    raise InvalidRequest(
        'tool_choice must be \'none\', \'auto\', \'required\' or {"type":"function","function":{"name":...}}',
        param="tool_choice",
    )


def chat_request_to_openai(req: chat_pb2.ChatCompletionRequest) -> dict[str, Any]:
    """Validate a typed request and return the OpenAI JSON body (without stream flags)."""
    require_model(req.model)
    if not req.messages:
        raise InvalidRequest("messages must contain at least one message", param="messages")
    body: dict[str, Any] = {
        "model": req.model,
        "messages": [_message(m, i) for i, m in enumerate(req.messages)],
    }
    copy_sampling(req, body, _CHAT_RANGES)
    copy_stream_options(req, body)
    if req.logit_bias:
        body["logit_bias"] = dict(req.logit_bias)
    if req.HasField("logprobs"):
        body["logprobs"] = req.logprobs
    if req.metadata:
        body["metadata"] = dict(req.metadata)
    if req.tools:
        body["tools"] = [_tool(t, i) for i, t in enumerate(req.tools)]
    if req.HasField("tool_choice"):
        body["tool_choice"] = _tool_choice(req)
    if req.HasField("parallel_tool_calls"):
        body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.HasField("response_format"):
        fmt = struct_to_py(req.response_format)
        if fmt.get("type") not in RESPONSE_FORMATS:
            raise InvalidRequest(
                "response_format.type must be 'text', 'json_object' or 'json_schema'",
                param="response_format.type",
            )
        body["response_format"] = fmt
    if req.reasoning_effort:
        body["reasoning_effort"] = req.reasoning_effort
    if req.service_tier:
        body["service_tier"] = req.service_tier
    if req.HasField("store"):
        body["store"] = req.store
    return body


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
