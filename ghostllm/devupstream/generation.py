"""Deterministic "model": turns a request body into the choices a real model would have produced.

Everything here is pure so the same plan can be rendered as a JSON object or as SSE chunks.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from ghostllm.devupstream.scenarios import SLOW_CHUNKS_MIN_WORDS

GREETING = "Hello from the GhostLLM development upstream. You said:"

_WORD = re.compile(r"\S+")
# A streamed content piece is one word with the whitespace after it (the first also keeps any
# leading whitespace), so concatenating the pieces gives back the text exactly.
_PIECE = re.compile(r"\s*\S+\s*")

_ids = itertools.count(1)
_call_ids = itertools.count(1)


class BadRequest(Exception):
    """A request OpenAI would answer with 400 invalid_request_error."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Choice:
    index: int
    text: str | None
    finish_reason: str
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(slots=True)
class Generation:
    id: str
    model: str
    created: int
    choices: list[Choice]
    prompt_tokens: int
    completion_tokens: int


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def pieces(text: str) -> list[str]:
    return _PIECE.findall(text)


def next_id(prefix: str) -> str:
    return f"{prefix}-dev-{next(_ids)}"


def content_text(content: object) -> str:
    """Text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def plan_chat(body: dict[str, Any], created: int, *, pad: bool = False) -> Generation:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("'messages' must be a non-empty array of message objects.", "messages")
    model = _model(body)
    n = _n(body)
    last = messages[-1]
    last_user = next((content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    prompt_tokens = max(1, sum(count_words(content_text(m.get("content"))) for m in messages))

    calls_for = _tool_plan(body, last.get("role"), last_user)
    choices: list[Choice] = []
    completion_tokens = 0
    for i in range(n):
        if calls_for:
            calls = [ToolCall(f"call_dev_{next(_call_ids)}", name, args) for name, args in calls_for]
            choices.append(Choice(i, None, "tool_calls", calls))
            completion_tokens += sum(count_words(c.name) + count_words(c.arguments) for c in calls)
            continue
        if last.get("role") == "tool":
            text = "Tool said: " + content_text(last.get("content"))
        else:
            text = f"{GREETING} {last_user}"
        text, finish = _limit(text, body, pad=pad)
        choices.append(Choice(i, text, finish))
        completion_tokens += count_words(text)
    return Generation(next_id("chatcmpl"), model, created, choices, prompt_tokens, completion_tokens)


def plan_completion(body: dict[str, Any], created: int, *, pad: bool = False) -> Generation:
    model = _model(body)
    prompts = _prompts(body.get("prompt"))
    n = _n(body)
    choices: list[Choice] = []
    prompt_tokens = 0
    completion_tokens = 0
    for prompt_text, tokens in prompts:
        prompt_tokens += tokens
        for _ in range(n):
            text, finish = _limit(f"{GREETING} {prompt_text}", body, pad=pad)
            choices.append(Choice(len(choices), text, finish))
            completion_tokens += count_words(text)
    return Generation(next_id("cmpl"), model, created, choices, max(1, prompt_tokens), completion_tokens)


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    return model


def _n(body: dict[str, Any]) -> int:
    n = body.get("n")
    if n is None:
        return 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise BadRequest(f"{n!r} is not a valid value for 'n': expected an integer from 1 to 128.", "n")
    return n


def _prompts(prompt: object) -> list[tuple[str, int]]:
    """(text, prompt token count) per prompt; token-id prompts count one token per id."""
    if isinstance(prompt, str):
        return [(prompt, count_words(prompt))]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return [(p, count_words(p)) for p in prompt]
        if all(_is_int(t) for t in prompt):
            return [(" ".join(map(str, prompt)), len(prompt))]
        if all(isinstance(p, list) and all(_is_int(t) for t in p) for p in prompt):
            return [(" ".join(map(str, p)), len(p)) for p in prompt]
    raise BadRequest("'prompt' must be a string, an array of strings, or token arrays.", "prompt")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _limit(text: str, body: dict[str, Any], *, pad: bool) -> tuple[str, str]:
    """Apply stop sequences and the token limit the way a model would see them, in output order."""
    if pad:
        extra = SLOW_CHUNKS_MIN_WORDS - count_words(text)
        if extra > 0:
            text += "".join(f" tick{i}" for i in range(1, extra + 1))
    stop = body.get("stop")
    stops = (
        [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)] if isinstance(stop, list) else []
    )
    cut = min((pos for s in stops if s and (pos := text.find(s)) >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
        words = list(_WORD.finditer(text))
        if len(words) > limit:
            return (text[: words[limit - 1].end()] if limit else ""), "length"
    return text, "stop"


def _tool_plan(body: dict[str, Any], last_role: object, last_user: str) -> list[tuple[str, str]]:
    """(name, arguments JSON) of the calls to make, or [] to answer with content."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none" or last_role != "user":
        return []
    functions = [
        t["function"]
        for t in tools
        if isinstance(t, dict)
        and t.get("type", "function") == "function"
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
    ]
    if not functions:
        return []
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        named = [f for f in functions if f["name"] == wanted]
        if not named:
            raise BadRequest(
                f"Invalid value for 'tool_choice': no function named '{wanted}' in 'tools'.", "tool_choice"
            )
        chosen = named
    elif body.get("parallel_tool_calls") is not False and len(functions) >= 2:
        chosen = functions[:2]
    else:
        chosen = functions[:1]
    return [(f["name"], _arguments(f.get("parameters"), last_user)) for f in chosen]


def _arguments(parameters: object, last_user: str) -> str:
    props = parameters.get("properties") if isinstance(parameters, dict) else None
    args: dict[str, object] = {}
    if isinstance(props, dict):
        for name, schema in props.items():
            args[name] = _argument_value(schema, last_user)
    return orjson.dumps(args).decode()


def _argument_value(schema: object, last_user: str) -> object:
    if not isinstance(schema, dict):
        return None
    # Honouring enums keeps the arguments valid for strict tool schemas.
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return last_user
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    return None
