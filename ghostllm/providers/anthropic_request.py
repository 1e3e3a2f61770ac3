"""The client's OpenAI chat body as an Anthropic Messages request.

Every OpenAI field either has an Anthropic meaning here or fails with a 400 that
names it and the provider: a field sent upstream in the wrong shape would be
refused there, and one dropped silently would change what the client asked for
without telling it. The client's body is only read (retries and fallbacks send it
again); every list and dict sent upstream is built here.
"""

from __future__ import annotations

from typing import Any

import orjson

from ghostllm.config import Capability, ModelConfig
from ghostllm.errors import InvalidRequest

Json = dict[str, Any]

# max_tokens is required upstream: sent when neither the client nor the model's
# catalogue entry (max_output_tokens) says, a size every current Claude model accepts.
DEFAULT_MAX_TOKENS = 4096
# OpenAI's reasoning_effort as an extended-thinking budget (Anthropic's minimum is 1024).
THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768, "max": 65536}
MIN_THINKING_BUDGET = 1024
# OpenAI's service tiers that have an Anthropic counterpart.
SERVICE_TIERS = {"auto": "auto", "default": "standard_only"}
# Fields the body may carry that need nothing upstream: the gateway's own (model, stream),
# OpenAI's labels for stored completions (which mean nothing without store=true), and its
# cache routing hint (Anthropic caches what cache_control marks; a hint changes no answer).
_IGNORED = frozenset(("model", "stream", "stream_options", "metadata", "prompt_cache_key"))
# Anthropic-native fields a client may add (extra_body), passed on as they are.
NATIVE = ("top_k", "thinking")


def unsupported(what: str, provider: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(
        f"{what} is not supported by provider {provider} (anthropic)", param=param, code="unsupported_parameter"
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(text: str, part: Json | None = None) -> Json:
    block: Json = {"type": "text", "text": text}
    if part is not None and "cache_control" in part:
        # Anthropic's prompt-caching marker, which OpenAI-format clients put on content parts.
        block["cache_control"] = part["cache_control"]
    return block


def _image(part: Json, provider: str, where: str) -> Json:
    url = part["image_url"]["url"]
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        media_type, _, encoding = head.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise InvalidRequest(
                "an image data URL must be data:<media type>;base64,<data>", param=f"{where}.image_url.url"
            )
        source: Json = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise unsupported("an image URL that is neither http(s) nor a data URL", provider, f"{where}.image_url.url")
    block: Json = {"type": "image", "source": source}
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _file(part: Json, provider: str, where: str) -> Json:
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    prefix = "data:application/pdf;base64,"
    if not isinstance(data, str) or not data.startswith(prefix):
        raise unsupported("a file part other than a PDF given as file_data", provider, where)
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": data[len(prefix) :]},
    }


def _user_blocks(content: Any, provider: str, where: str) -> list[Json]:
    if isinstance(content, str):
        return [_text(content)]
    out: list[Json] = []
    for j, part in enumerate(content or ()):
        at = f"{where}[{j}]"
        kind = part["type"]
        if kind == "text":
            out.append(_text(part["text"], part))
        elif kind == "image_url":
            out.append(_image(part, provider, at))
        elif kind == "file":
            out.append(_file(part, provider, at))
        elif kind == "input_audio":
            raise unsupported("audio input", provider, at)
        else:
            raise unsupported(f"a '{kind}' content part in a user message", provider, at)
    return out


def _text_blocks(content: Any, provider: str, where: str, role: str) -> list[Json]:
    """Content that may only be text (system, developer, assistant): refusals read as text."""
    if isinstance(content, str):
        return [_text(content)] if content else []
    out: list[Json] = []
    for j, part in enumerate(content or ()):
        kind = part["type"]
        if kind == "text":
            if part["text"]:
                out.append(_text(part["text"], part))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            out.append(_text(part["refusal"]))
        else:
            raise unsupported(f"a '{kind}' content part in a {role} message", provider, f"{where}[{j}]")
    return out


def _tool_use(call: Json, provider: str, where: str) -> Json:
    if call.get("type", "function") != "function":
        raise unsupported(f"a tool call of type '{call.get('type')}'", provider, f"{where}.type")
    fn = call.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(call.get("id"), str):
        raise InvalidRequest("a tool call needs an id and function.name", param=where)
    args = fn.get("arguments") or "{}"
    try:
        value = orjson.loads(args) if isinstance(args, str) else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        # Anthropic takes a tool call's input as an object, not as text to pass on.
        raise InvalidRequest(
            "a tool call's arguments must be a JSON object for provider " + provider,
            param=f"{where}.function.arguments",
        )
    return {"type": "tool_use", "id": call["id"], "name": fn["name"], "input": value}


def _tool_result(msg: Json, provider: str, where: str) -> Json:
    content = msg.get("content")
    block: Json = {"type": "tool_result", "tool_use_id": msg["tool_call_id"]}
    block["content"] = content if isinstance(content, str) else _user_blocks(content, provider, f"{where}.content")
    return block


def _append(turns: list[Json], role: str, content: str | list[Json]) -> None:
    """Anthropic wants user and assistant turns to alternate: consecutive messages of one
    role (tool results included, which are user turns there) become one turn."""
    if turns and turns[-1]["role"] == role:
        last = turns[-1]
        if isinstance(last["content"], str):
            last["content"] = [_text(last["content"])]
        last["content"].extend([_text(content)] if isinstance(content, str) else content)
    else:
        turns.append({"role": role, "content": content})


def _messages(messages: list[Json], provider: str) -> tuple[str | list[Json] | None, list[Json]]:
    system: list[Json] = []
    system_text: list[str] = []
    turns: list[Json] = []
    for i, m in enumerate(messages):
        role = m["role"]
        content = m.get("content")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            # Anthropic has one system prompt, beside the turns: every system or developer
            # message joins it, in order.
            system.extend(_text_blocks(content, provider, f"{where}.content", role))
            if isinstance(content, str):
                system_text.append(content)
        elif role == "user":
            _append(turns, "user", content if isinstance(content, str) else _user_blocks(content, provider, where))
        elif role == "tool":
            _append(turns, "user", [_tool_result(m, provider, where)])
        elif role == "assistant":
            if m.get("function_call") is not None:
                raise unsupported("the legacy function_call (use tool_calls)", provider, f"{where}.function_call")
            calls = m.get("tool_calls") or ()
            if content is None and isinstance(m.get("refusal"), str):
                # An earlier answer that was a refusal, sent back as the conversation's history.
                content = m["refusal"]
            if isinstance(content, str) and not calls:
                if content:
                    _append(turns, "assistant", content)
                continue
            blocks = _text_blocks(content, provider, f"{where}.content", role)
            blocks += [_tool_use(c, provider, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
            if blocks:
                _append(turns, "assistant", blocks)
        else:
            raise unsupported(f"the legacy '{role}' role (use tool messages)", provider, f"{where}.role")
    if not system:
        return None, turns
    if len(system_text) == len(system) == 1:
        return system_text[0], turns
    return system, turns


def _tools(tools: list[Json], provider: str, structured: bool) -> list[Json]:
    out: list[Json] = []
    for i, t in enumerate(tools):
        fn = t["function"]
        tool: Json = {"name": fn["name"]}
        if fn.get("description"):
            tool["description"] = fn["description"]
        params = fn.get("parameters")
        tool["input_schema"] = params if params is not None else {"type": "object", "properties": {}}
        if fn.get("strict"):
            if not structured:
                raise unsupported("strict tool schemas on this model", provider, f"tools[{i}].function.strict")
            tool["strict"] = True
        if "cache_control" in t:
            tool["cache_control"] = t["cache_control"]
        out.append(tool)
    return out


def _tool_choice(body: Json) -> Json | None:
    choice = body.get("tool_choice")
    out: Json
    if choice is None or choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    else:
        out = {"type": "tool", "name": choice["function"]["name"]}
    if body.get("parallel_tool_calls") is False:
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None
    return out


def _output_format(fmt: Any, provider: str, structured: bool) -> Json | None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        # Anthropic's structured outputs need a schema that closes every object
        # (additionalProperties false), so "any JSON object" has no faithful equivalent.
        raise unsupported("response_format json_object (use json_schema)", provider, "response_format")
    if not structured:
        raise unsupported("response_format json_schema on this model", provider, "response_format")
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise InvalidRequest("response_format json_schema needs json_schema.schema", param="response_format")
    return {"type": "json_schema", "schema": schema}


def _max_tokens(body: Json, entry: ModelConfig | None) -> tuple[int, bool]:
    """The max_tokens sent, and whether the client or the catalogue set it (not our default)."""
    for name in ("max_completion_tokens", "max_tokens"):
        if _is_int(body.get(name)):
            return int(body[name]), True
    if entry is not None and entry.max_output_tokens > 0:
        return entry.max_output_tokens, True
    return DEFAULT_MAX_TOKENS, False


def _thinking(effort: Any, max_tokens: int, chosen: bool, provider: str) -> tuple[Json, int]:
    """reasoning_effort as extended thinking (the budget must stay below max_tokens)."""
    if effort == "none":
        return {"type": "disabled"}, max_tokens
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise unsupported(f"reasoning_effort '{effort}'", provider, "reasoning_effort")
    if not chosen:
        # Our default is for the answer; thinking comes on top of it.
        return {"type": "enabled", "budget_tokens": budget}, max_tokens + budget
    budget = min(budget, max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        raise InvalidRequest(
            f"reasoning_effort needs max_tokens above {MIN_THINKING_BUDGET} with provider {provider}",
            param="reasoning_effort",
        )
    return {"type": "enabled", "budget_tokens": budget}, max_tokens


def _check_unsupported(body: Json, provider: str) -> None:
    if body.get("n") not in (None, 1):
        raise unsupported("n other than 1", provider, "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise unsupported("logprobs", provider, "logprobs")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0):
            raise unsupported(name, provider, name)
    if body.get("logit_bias"):
        raise unsupported("logit_bias", provider, "logit_bias")
    if body.get("seed") is not None:
        raise unsupported("seed", provider, "seed")
    if body.get("store"):
        raise unsupported("store", provider, "store")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise unsupported("output modalities other than text", provider, "modalities")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise unsupported("the legacy functions / function_call (use tools)", provider, "functions")


_HANDLED = frozenset(
    (
        "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "tools",
        "tool_choice", "parallel_tool_calls", "response_format", "user", "safety_identifier", "service_tier",
        "reasoning_effort", "n", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
        "logit_bias", "seed", "store", "modalities", "functions", "function_call", *NATIVE,
    )
)  # fmt: skip


def messages_request(body: Json, model: str, *, stream: bool, entry: ModelConfig | None, provider: str) -> Json:
    """The Messages API body for the client's chat request `body`, sent as `model`."""
    for name in body:
        if name not in _HANDLED and name not in _IGNORED:
            raise unsupported(f"'{name}'", provider, name)
    _check_unsupported(body, provider)
    structured = entry is not None and Capability.STRUCTURED_OUTPUT.value in entry.capabilities
    system, turns = _messages(body["messages"], provider)
    max_tokens, chosen = _max_tokens(body, entry)
    out: Json = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system is not None:
        out["system"] = system
    if stream:
        out["stream"] = True
    for name in ("temperature", "top_p", *NATIVE):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("reasoning_effort") is not None:
        if "thinking" in out:
            raise InvalidRequest("give reasoning_effort or thinking, not both", param="reasoning_effort")
        out["thinking"], out["max_tokens"] = _thinking(body["reasoning_effort"], max_tokens, chosen, provider)
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools, provider, structured)
        choice = _tool_choice(body)
        if choice is not None:
            out["tool_choice"] = choice
    elif body.get("tool_choice") not in (None, "none", "auto"):
        raise InvalidRequest("tool_choice names a tool but no tools were given", param="tool_choice")
    fmt = _output_format(body.get("response_format"), provider, structured)
    if fmt is not None:
        out["output_config"] = {"format": fmt}
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    tier = body.get("service_tier")
    if tier is not None:
        if tier not in SERVICE_TIERS:
            raise unsupported(f"service_tier '{tier}'", provider, "service_tier")
        out["service_tier"] = SERVICE_TIERS[tier]
    return out
