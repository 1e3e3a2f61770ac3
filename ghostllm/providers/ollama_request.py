"""The Ollama request a client's OpenAI body stands for (`/api/chat`, `/api/generate`, `/api/embed`).

Rules (where Ollama's documented API has no counterpart, a 400 naming the feature):
- Roles: system and developer → system; user; assistant (its tool_calls with arguments
  parsed into the object Ollama takes; a `reasoning_content` it was given back → `thinking`);
  tool → tool with `tool_name`, recovered from the assistant call its tool_call_id answers.
- Content parts: text parts joined by newlines into `content`; base64 data-URL images →
  the message's `images` (raw base64). Ollama fetches nothing, so an http(s) image URL is a 400.
- Sampling: temperature, top_p, seed, frequency/presence_penalty, stop (a string becomes a
  list) and max_completion_tokens (or max_tokens) as num_predict go inside `options`.
- response_format: json_object → `format: "json"`, json_schema → `format: <the schema>`.
- tools as sent; tool_choice none → no tools (Ollama cannot be told not to call one it has);
  required, a named tool, and parallel_tool_calls false cannot be enforced: 400.
- reasoning_effort → `think` (none/minimal → false, low/medium/high as they are).
- Ollama's own fields a client may add (`think`, `keep_alive`, `options`) go up as sent
  (our typed options win over the same keys in `options`).
- `stream` is always explicit (Ollama streams unless told not to).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ghostllm.errors import InvalidRequest
from ghostllm.providers.base import Json

# OpenAI fields that Ollama takes inside `options`, under the same names.
SAME_OPTIONS = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
# Ollama's own request fields a client may send alongside the OpenAI ones.
NATIVE = ("think", "keep_alive")
THINK = {"none": False, "minimal": False, "low": "low", "medium": "medium", "high": "high"}
_DATA_URL = "data:"


def unsupported(what: str, provider: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(
        f"{what} is not supported by provider {provider} (ollama)", param=param, code="unsupported_parameter"
    )


def _image(url: str, provider: str, where: str) -> str:
    if not url.startswith(_DATA_URL):
        raise unsupported(
            "an image URL (Ollama fetches no URLs: send it as a base64 data URL)", provider, f"{where}.image_url.url"
        )
    meta, sep, data = url.partition(",")
    if not sep or not meta.endswith(";base64"):
        raise InvalidRequest(
            "an image data URL must be data:<media type>;base64,<data>", param=f"{where}.image_url.url"
        )
    return data


def _content(content: Any, role: str, i: int, provider: str) -> tuple[str, list[str]]:
    """The message's text and (user messages only) its images."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        where = f"messages[{i}].content[{j}]"
        if kind == "text":
            texts.append(part["text"])
        elif kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif kind == "image_url" and role == "user":
            images.append(_image(part["image_url"]["url"], provider, where))
        elif kind == "input_audio":
            raise unsupported("audio input", provider, where)
        elif kind == "file":
            raise unsupported("file input", provider, where)
        else:
            raise unsupported(f"a '{kind}' content part in a {role} message", provider, where)
    return "\n".join(texts), images


def _arguments(raw: Any, where: str) -> Any:
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    raise InvalidRequest(
        "tool call arguments must be a JSON object (Ollama takes them as one)", param=f"{where}.function.arguments"
    )


def _tool_calls(calls: list[Json], i: int, names: dict[str, str], provider: str) -> list[Json]:
    out: list[Json] = []
    for j, call in enumerate(calls):
        where = f"messages[{i}].tool_calls[{j}]"
        if call.get("type", "function") != "function":
            raise unsupported(f"a tool call of type '{call.get('type')}'", provider, f"{where}.type")
        fn = call.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequest("a tool call needs function.name", param=f"{where}.function.name")
        if isinstance(call.get("id"), str):
            names[call["id"]] = fn["name"]
        out.append({"function": {"name": fn["name"], "arguments": _arguments(fn.get("arguments"), where)}})
    return out


def messages(msgs: list[Json], provider: str) -> list[Json]:
    # tool_call_id -> function name: OpenAI tool results name only the call they answer.
    names: dict[str, str] = {}
    out: list[Json] = []
    for i, m in enumerate(msgs):
        role = m["role"]
        text, images = _content(m.get("content"), role, i, provider)
        if role in ("system", "developer"):
            out.append({"role": "system", "content": text})
        elif role == "user":
            msg: Json = {"role": "user", "content": text}
            if images:
                msg["images"] = images
            out.append(msg)
        elif role == "assistant":
            if m.get("function_call") is not None:
                raise unsupported("the legacy function_call (use tool_calls)", provider, f"messages[{i}].function_call")
            msg = {"role": "assistant", "content": text}
            thinking = m.get("reasoning_content")
            if isinstance(thinking, str) and thinking:
                msg["thinking"] = thinking
            calls = m.get("tool_calls")
            if calls:
                msg["tool_calls"] = _tool_calls(calls, i, names, provider)
            out.append(msg)
        elif role == "tool":
            msg = {"role": "tool", "content": text}
            name = names.get(m["tool_call_id"])
            if name:
                msg["tool_name"] = name
            out.append(msg)
        else:
            raise unsupported(f"the legacy '{role}' role (use tool messages)", provider, f"messages[{i}].role")
    return out


def _format(fmt: Any) -> Any:
    """Ollama's `format` for an OpenAI response_format; None for plain text."""
    if not isinstance(fmt, dict) or fmt.get("type") == "text":
        return None
    if fmt["type"] == "json_object":
        return "json"
    schema = (fmt.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest("response_format json_schema needs json_schema.schema", param="response_format")
    return schema


def _tools(body: Json, provider: str) -> list[Json] | None:
    tools = body.get("tools")
    if not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    if choice == "required" or isinstance(choice, dict):
        raise unsupported(
            "tool_choice 'required' or a named tool (Ollama cannot force a call)", provider, "tool_choice"
        )
    if body.get("parallel_tool_calls") is False:
        raise unsupported(
            "parallel_tool_calls false (Ollama cannot limit a turn to one call)", provider, "parallel_tool_calls"
        )
    return list(tools)


def _check_common(body: Json, provider: str) -> None:
    if body.get("n") not in (None, 1):
        raise unsupported("n other than 1", provider, "n")
    if body.get("logit_bias"):
        raise unsupported("logit_bias", provider, "logit_bias")
    if body.get("store"):
        raise unsupported("store", provider, "store")


def _check_chat(body: Json, provider: str) -> None:
    _check_common(body, provider)
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise unsupported("output modalities other than text", provider, "modalities")
    for name, what in (
        ("audio", "audio output"),
        ("prediction", "predicted outputs"),
        ("web_search_options", "web search"),
        ("functions", "the legacy functions (use tools)"),
        ("function_call", "the legacy function_call (use tool_choice)"),
    ):
        if body.get(name) is not None:
            raise unsupported(what, provider, name)


def options(body: Json, max_tokens: Any) -> Json:
    native = body.get("options")
    opts: Json = dict(native) if isinstance(native, Mapping) else {}
    for name in SAME_OPTIONS:
        value = body.get(name)
        if value is not None:
            opts[name] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        opts["stop"] = [stop]
    elif stop:
        opts["stop"] = stop
    if max_tokens is not None:
        opts["num_predict"] = max_tokens
    return opts


def _native(body: Json, out: Json) -> None:
    for name in NATIVE:
        if name in body:
            out[name] = body[name]


def chat(body: Json, model: str, provider: str, *, stream: bool) -> Json:
    _check_chat(body, provider)
    out: Json = {"model": model, "messages": messages(body["messages"], provider), "stream": stream}
    tools = _tools(body, provider)
    if tools is not None:
        out["tools"] = tools
    fmt = _format(body.get("response_format"))
    if fmt is not None:
        out["format"] = fmt
    max_tokens = body.get("max_completion_tokens")
    opts = options(body, max_tokens if max_tokens is not None else body.get("max_tokens"))
    if opts:
        out["options"] = opts
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in THINK:
            raise unsupported(f"reasoning_effort '{str(effort)[:50]}'", provider, "reasoning_effort")
        out["think"] = THINK[effort]
    if body.get("logprobs"):
        out["logprobs"] = True
        if body.get("top_logprobs"):
            out["top_logprobs"] = body["top_logprobs"]
    _native(body, out)
    return out


def generate(body: Json, model: str, provider: str, *, stream: bool) -> Json:
    """A legacy text completion as /api/generate (the prompt formatted by the model's
    template, as Ollama's own OpenAI layer does)."""
    _check_common(body, provider)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise unsupported("a prompt other than one string (several prompts, or token ids)", provider, "prompt")
    if body.get("best_of") not in (None, 1):
        raise unsupported("best_of other than 1", provider, "best_of")
    if body.get("echo"):
        raise unsupported("echo", provider, "echo")
    if body.get("logprobs") is not None:
        raise unsupported("logprobs on text completions", provider, "logprobs")
    out: Json = {"model": model, "prompt": prompt, "stream": stream}
    if body.get("suffix") is not None:
        out["suffix"] = body["suffix"]
    opts = options(body, body.get("max_tokens"))
    if opts:
        out["options"] = opts
    _native(body, out)
    return out


def embed(body: Json, model: str, provider: str) -> Json:
    inputs = body["input"]
    if not (isinstance(inputs, str) or all(isinstance(x, str) for x in inputs)):
        raise unsupported("token id input (send text)", provider, "input")
    out: Json = {"model": model, "input": inputs}
    if body.get("dimensions") is not None:
        out["dimensions"] = body["dimensions"]
    for name in ("truncate", "keep_alive", "options"):
        if name in body:
            out[name] = body[name]
    return out
