"""The matrix's rows: one feature each, as a request, what the client must get back, and
what the provider must have received in its own format.

Answers follow the emulators' behaviour contract (ghostllm/emulators/__init__.py: "You
said: ...", required tool arguments set to "x", usage in words). The development
upstream (the OpenAI reference column) answers the same questions its own way (a
greeting before "You said:", every argument filled, no JSON mode), so exact values are
checked against the contract only and the shared properties against both.

What was sent upstream is stated in the cases' path language (tests/fidelity/cases.py)
per wire family: anthropic, gemini, ollama, and openai (OpenAI and Azure OpenAI).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

Json = dict[str, Any]

NON_STREAMING: Final = "non-streaming"
STREAMING: Final = "streaming"
MODES: Final = (NON_STREAMING, STREAMING)

# A 1x1 PNG.
PNG: Final = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
WEATHER_PARAMS: Final = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["location"],
}
TIME_PARAMS: Final = {
    "type": "object",
    "properties": {"timezone": {"type": "string"}},
    "required": ["timezone"],
}
WEATHER: Final = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER_PARAMS},
}
TIME: Final = {
    "type": "function",
    "function": {"name": "get_time", "description": "Current time in a timezone", "parameters": TIME_PARAMS},
}
ANSWER_SCHEMA: Final = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}


def family(provider: str) -> str:
    return "openai" if provider in ("openai", "azure") else provider


def words(text: str) -> int:
    return len(text.split())


@dataclass
class View:
    """One answer in the terms features are judged in (either mode)."""

    status: int
    message: Json
    finish_reason: Any
    usage: Json | None
    error: Json | None
    headers: dict[str, str]

    @property
    def content(self) -> str:
        value = self.message.get("content")
        return value if isinstance(value, str) else ""

    @property
    def calls(self) -> list[Json]:
        return list(self.message.get("tool_calls") or [])

    def arguments(self, i: int) -> Any:
        try:
            return json.loads(self.calls[i]["function"]["arguments"])
        except (IndexError, KeyError, TypeError, ValueError):
            return None


Check = Callable[[View, bool], list[str]]


@dataclass(frozen=True)
class Feature:
    key: str
    title: str
    # The request without model and stream.
    request: Json
    # Problems with the answer; the flag: the upstream follows the emulators' contract.
    expect: Check
    # What the provider received, by wire family (path -> expectation).
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    modes: tuple[str, ...] = MODES
    # Send to this scenario model instead of the provider's chat model (see environment.SCENARIOS).
    scenario: str | None = None


def _need(cond: bool, problem: str) -> list[str]:
    return [] if cond else [problem]


def _text_answer(view: View, contains: str) -> list[str]:
    return [
        *_need(view.status == 200, f"status {view.status}: {view.error}"),
        *_need(view.message.get("role") == "assistant", f"role {view.message.get('role')!r}"),
        *_need(contains in view.content, f"content {view.content!r} lacks {contains!r}"),
        *_need(not view.calls, f"unexpected tool calls {view.calls}"),
    ]


def _said(text: str, finish: str = "stop") -> Check:
    def check(view: View, contract: bool) -> list[str]:
        problems = _text_answer(view, f"You said: {text}")
        problems += _need(view.finish_reason == finish, f"finish_reason {view.finish_reason!r}, expected {finish!r}")
        if contract:
            problems += _need(view.content == f"You said: {text}", f"content {view.content!r}")
        return problems

    return check


def _prompt_tokens(count: int, inner: Check) -> Check:
    def check(view: View, contract: bool) -> list[str]:
        got = (view.usage or {}).get("prompt_tokens")
        return inner(view, contract) + _need(got == count, f"prompt_tokens {got}, expected {count} (every input word)")

    return check


def _tool_calls(names: list[str], arguments: list[Json]) -> Check:
    def check(view: View, contract: bool) -> list[str]:
        problems = _need(view.status == 200, f"status {view.status}: {view.error}")
        got = [c.get("function", {}).get("name") for c in view.calls]
        problems += _need(got == names, f"tool calls {got}, expected {names}; content {view.content!r}")
        problems += _need(view.finish_reason == "tool_calls", f"finish_reason {view.finish_reason!r}")
        problems += _need(not view.content, f"content {view.content!r} besides the calls")
        ids = [c.get("id") for c in view.calls]
        problems += _need(all(isinstance(i, str) and i for i in ids), f"tool call ids {ids}")
        problems += _need(len(set(ids)) == len(ids), f"tool call ids not distinct: {ids}")
        problems += _need(all(c.get("type") == "function" for c in view.calls), "a tool call's type is not function")
        for i, expected in enumerate(arguments[: len(view.calls)]):
            args = view.arguments(i)
            if contract:
                problems += _need(args == expected, f"call {i} arguments {args}, expected {expected}")
            else:
                problems += _need(isinstance(args, dict) and set(expected) <= set(args), f"call {i} arguments {args}")
        return problems

    return check


def _tool_result(view: View, contract: bool) -> list[str]:
    problems = _text_answer(view, "Tool said: Sunny and 21 degrees")
    return problems + _need(view.finish_reason == "stop", f"finish_reason {view.finish_reason!r}")


def _json_answer(view: View, contract: bool) -> list[str]:
    problems = _need(view.status == 200, f"status {view.status}: {view.error}")
    if not contract:
        # The development upstream does not do JSON mode: only what was sent is checked.
        return problems
    try:
        parsed = json.loads(view.content)
    except ValueError:
        return [*problems, f"content is not JSON: {view.content!r}"]
    expected = {"answer": "You said: Reply in JSON please"}
    return problems + _need(parsed == expected, f"content {parsed}, expected {expected}")


def _stopped(view: View, contract: bool) -> list[str]:
    problems = _need(view.status == 200, f"status {view.status}: {view.error}")
    problems += _need(view.content.rstrip().endswith("You said: alpha beta"), f"content {view.content!r}")
    problems += _need("gamma" not in view.content, f"the stop sequence is in the content {view.content!r}")
    return problems + _need(view.finish_reason == "stop", f"finish_reason {view.finish_reason!r}")


def _length(view: View, contract: bool) -> list[str]:
    problems = _need(view.status == 200, f"status {view.status}: {view.error}")
    problems += _need(view.finish_reason == "length", f"finish_reason {view.finish_reason!r}, expected 'length'")
    problems += _need(words(view.content) == 3, f"content {view.content!r} is not 3 words")
    if contract:
        problems += _need(view.content.strip() == "You said: one", f"content {view.content!r}")
    return problems


def _usage(view: View, contract: bool) -> list[str]:
    problems = _said("count these words")(view, contract)
    usage = view.usage or {}
    prompt, completion, total = (usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
    problems += _need(prompt == 3, f"prompt_tokens {prompt}, expected 3")
    problems += _need(completion == words(view.content), f"completion_tokens {completion} for {view.content!r}")
    problems += _need(
        isinstance(prompt, int) and isinstance(completion, int) and total == prompt + completion,
        f"total_tokens {total}",
    )
    return problems


def _error(status: int, etype: str) -> Check:
    def check(view: View, contract: bool) -> list[str]:
        problems = _need(view.status == status, f"status {view.status}, expected {status}: {view.error}")
        err = (view.error or {}).get("error") or {}
        problems += _need(err.get("type") == etype, f"error type {err.get('type')!r}, expected {etype!r}")
        problems += _need(isinstance(err.get("message"), str) and bool(err.get("message")), "no error message")
        return problems

    return check


def _rate_limited(view: View, contract: bool) -> list[str]:
    problems = _error(429, "rate_limit_error")(view, contract)
    retry = view.headers.get("retry-after")
    return problems + _need(retry == "7", f"retry-after {retry!r}, expected the upstream's '7'")


def _user(text: str) -> list[Json]:
    return [{"role": "user", "content": text}]


SYSTEM = "You are a terse assistant"
_TURNS = [
    {"role": "user", "content": "First question here"},
    {"role": "assistant", "content": "First answer here"},
    {"role": "user", "content": "Second question here"},
]
_ROUND_TRIP = [
    {"role": "user", "content": "What is the weather in Paris"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_fid_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_fid_1", "content": "Sunny and 21 degrees"},
]
_GEMINI_CONFIG = "generationConfig|generation_config"
_GEMINI_FUNCTIONS = "tools[0].functionDeclarations|function_declarations"


def _plain_sent(text: str) -> dict[str, dict[str, Any]]:
    return {
        "anthropic": {"messages": {"$len": 1}, "messages[0].role": "user", "messages[0].content": {"$text": text}},
        "gemini": {
            "contents": {"$len": 1},
            "contents[0].role": {"$in": ["user", "$missing"]},
            "contents[0].parts[0].text": text,
        },
        "ollama": {"messages": {"$len": 1}, "messages[0].role": "user", "messages[0].content": text},
        "openai": {"messages": {"$len": 1}, "messages[0].content": text},
    }


FEATURES: Final[tuple[Feature, ...]] = (
    Feature(
        "plain_text",
        "plain text",
        {"messages": _user("Hello there fidelity")},
        _said("Hello there fidelity"),
        _plain_sent("Hello there fidelity"),
    ),
    Feature(
        "system_prompt",
        "system prompt",
        {"messages": [{"role": "system", "content": SYSTEM}, *_user("Hi from the system test")]},
        _prompt_tokens(words(SYSTEM) + 5, _said("Hi from the system test")),
        {
            "anthropic": {"system": {"$text": SYSTEM}, "messages[?role==system]": "absent", "messages": {"$len": 1}},
            "gemini": {
                "systemInstruction|system_instruction.parts[0].text": SYSTEM,
                "contents[?role==system]": "absent",
                "contents": {"$len": 1},
            },
            "ollama": {"messages[0].role": "system", "messages[0].content": SYSTEM, "messages": {"$len": 2}},
            "openai": {"messages[0].role": "system", "messages[0].content": SYSTEM},
        },
    ),
    Feature(
        "multi_turn",
        "multi-turn",
        {"messages": _TURNS},
        _prompt_tokens(9, _said("Second question here")),
        {
            "anthropic": {
                "messages": {"$len": 3},
                "messages[0].role": "user",
                "messages[1].role": "assistant",
                "messages[1].content": {"$text": "First answer here"},
                "messages[2].content": {"$text": "Second question here"},
            },
            "gemini": {
                "contents": {"$len": 3},
                "contents[1].role": "model",
                "contents[1].parts[0].text": "First answer here",
                "contents[2].role": "user",
                "contents[2].parts[0].text": "Second question here",
            },
            "ollama": {
                "messages": {"$len": 3},
                "messages[1].role": "assistant",
                "messages[1].content": "First answer here",
            },
            "openai": {"messages": {"$len": 3}, "messages[1].role": "assistant"},
        },
    ),
    Feature(
        "image_input",
        "image input",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe this picture"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    ],
                }
            ]
        },
        lambda view, contract: _text_answer(
            view, "You said: Describe this picture" + (" [1 image" if contract else "")
        ),
        {
            "anthropic": {
                "messages[0].content[?type==image].source": {"type": "base64", "media_type": "image/png", "data": PNG},
                "messages[0].content[?type==text].text": "Describe this picture",
            },
            "gemini": {
                "contents[0].parts[0].text": "Describe this picture",
                "contents[0].parts[1].inlineData|inline_data.data": PNG,
                "contents[0].parts[1].inlineData|inline_data.mimeType|mime_type": "image/png",
            },
            "ollama": {"messages[0].content": "Describe this picture", "messages[0].images": [PNG]},
            "openai": {"messages[0].content[1].image_url.url": f"data:image/png;base64,{PNG}"},
        },
    ),
    Feature(
        "tool_call",
        "tool definition + call",
        {"messages": _user("What is the weather in Paris"), "tools": [WEATHER]},
        _tool_calls(["get_weather"], [{"location": "x"}]),
        {
            "anthropic": {
                "tools": {"$len": 1},
                "tools[0].name": "get_weather",
                "tools[0].input_schema": WEATHER_PARAMS,
            },
            "gemini": {
                f"{_GEMINI_FUNCTIONS}[0].name": "get_weather",
                f"{_GEMINI_FUNCTIONS}[0].parameters|parametersJsonSchema|parameters_json_schema.required": ["location"],
            },
            "ollama": {"tools[0].function.name": "get_weather", "tools[0].function.parameters": WEATHER_PARAMS},
            "openai": {"tools": [WEATHER]},
        },
    ),
    Feature(
        "parallel_tool_calls",
        "parallel tool calls",
        {"messages": _user("Use parallel calls for the weather and time in Paris"), "tools": [WEATHER, TIME]},
        _tool_calls(["get_weather", "get_time"], [{"location": "x"}, {"timezone": "x"}]),
        {
            "anthropic": {"tools": {"$len": 2}, "tool_choice.disable_parallel_tool_use": {"$ne": True}},
            "gemini": {_GEMINI_FUNCTIONS: {"$len": 2}},
            "ollama": {"tools": {"$len": 2}},
            "openai": {"tools": {"$len": 2}},
        },
    ),
    Feature(
        "streamed_tool_deltas",
        "streamed tool-call deltas",
        {"messages": _user("What is the weather in Paris"), "tools": [WEATHER]},
        _tool_calls(["get_weather"], [{"location": "x"}]),
        modes=(STREAMING,),
    ),
    Feature(
        "tool_result",
        "tool result round trip",
        {"messages": _ROUND_TRIP, "tools": [WEATHER]},
        _tool_result,
        {
            "anthropic": {
                "messages": {"$len": 3},
                "messages[1].role": "assistant",
                "messages[1].content[?type==tool_use].id": "call_fid_1",
                "messages[1].content[?type==tool_use].name": "get_weather",
                "messages[1].content[?type==tool_use].input": {"location": "Paris"},
                "messages[2].role": "user",
                "messages[2].content[?type==tool_result].tool_use_id": "call_fid_1",
                "messages[2].content[?type==tool_result].content": {"$text": "Sunny and 21 degrees"},
                "messages[?role==tool]": "absent",
            },
            "gemini": {
                "contents": {"$len": 3},
                "contents[1].role": "model",
                "contents[1].parts[0].functionCall|function_call.name": "get_weather",
                "contents[1].parts[0].functionCall|function_call.args": {"location": "Paris"},
                "contents[2].parts[0].functionResponse|function_response.name": "get_weather",
                "contents[2].parts[0].functionResponse|function_response.response": {
                    "$mentions": "Sunny and 21 degrees"
                },
            },
            "ollama": {
                "messages": {"$len": 3},
                "messages[1].tool_calls[0].function.name": "get_weather",
                "messages[1].tool_calls[0].function.arguments": {"location": "Paris"},
                "messages[2].role": "tool",
                "messages[2].content": "Sunny and 21 degrees",
            },
            "openai": {"messages[2].role": "tool", "messages[2].tool_call_id": "call_fid_1"},
        },
    ),
    Feature(
        "json_mode",
        "JSON mode",
        {"messages": _user("Reply in JSON please"), "response_format": {"type": "json_object"}},
        _json_answer,
        {
            "gemini": {f"{_GEMINI_CONFIG}.responseMimeType|response_mime_type": "application/json"},
            "ollama": {"format": "json"},
            "openai": {"response_format": {"type": "json_object"}},
        },
    ),
    Feature(
        "json_schema",
        "JSON schema",
        {
            "messages": _user("Reply in JSON please"),
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}},
        },
        _json_answer,
        {
            "anthropic": {
                "output_config.format.type": "json_schema",
                "output_config.format.schema": ANSWER_SCHEMA,
                "response_format": "absent",
            },
            "gemini": {
                f"{_GEMINI_CONFIG}.responseMimeType|response_mime_type": "application/json",
                f"{_GEMINI_CONFIG}.responseSchema|response_schema|responseJsonSchema|response_json_schema": "present",
            },
            "ollama": {"format": ANSWER_SCHEMA},
            "openai": {"response_format.json_schema.schema": ANSWER_SCHEMA},
        },
    ),
    Feature(
        "stop_sequence",
        "stop sequence",
        {"messages": _user("alpha beta gamma delta"), "stop": ["gamma"]},
        _stopped,
        {
            "anthropic": {"stop_sequences": ["gamma"]},
            "gemini": {f"{_GEMINI_CONFIG}.stopSequences|stop_sequences": ["gamma"]},
            "ollama": {"options.stop": ["gamma"]},
            "openai": {"stop": ["gamma"]},
        },
    ),
    Feature(
        "length_finish",
        "length finish",
        {"messages": _user("one two three four five six"), "max_tokens": 3},
        _length,
        {
            "anthropic": {"max_tokens": 3},
            "gemini": {f"{_GEMINI_CONFIG}.maxOutputTokens|max_output_tokens": 3},
            "ollama": {"options.num_predict": 3},
            "openai": {"max_tokens": 3},
        },
    ),
    Feature("usage", "usage non-streaming", {"messages": _user("count these words")}, _usage, modes=(NON_STREAMING,)),
    Feature("usage_stream", "usage streaming", {"messages": _user("count these words")}, _usage, modes=(STREAMING,)),
    Feature(
        "upstream_error",
        "upstream error",
        {"messages": _user("hello")},
        _error(502, "provider_error"),
        scenario="error-500",
    ),
    Feature("rate_limit", "upstream rate limit", {"messages": _user("hello")}, _rate_limited, scenario="error-429"),
)

# Further requests of the error row: (scenario, status, error type) the client must get.
MORE_ERRORS: Final = (("error-400", 400, "invalid_request_error"), ("error-401", 502, "provider_error"))

# Features a provider really lacks: the gateway must answer a 400 naming the feature and the
# provider (a "n-a" cell), never drop the feature silently. Keyword: what the message names.
LACKS: Final[dict[tuple[str, str], tuple[str, str]]] = {
    ("anthropic", "json_mode"): (
        "json_object",
        "Anthropic has no schema-less JSON mode: its structured outputs need a closed schema (JSON schema works)",
    ),
}

# Where the provider's wire format streams a tool call's arguments in pieces (the others
# send each call whole in one event: Gemini functionCall, Ollama tool_calls).
STREAMS_ARGUMENTS: Final = frozenset({"anthropic", "openai", "azure"})


def by_key(key: str) -> Feature:
    return next(f for f in FEATURES if f.key == key)
