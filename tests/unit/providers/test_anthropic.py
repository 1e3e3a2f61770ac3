"""ghostllm.providers.anthropic: OpenAI chat to Anthropic Messages and back, over bytes, no sockets.

Tables of request translations (system prompt, merged turns, images, tools, tool_choice, the
max_tokens default, structured output, the features Anthropic lacks), whole answers and usage,
an event stream fed at every split offset (adding up to the whole answer), and error mapping."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from ghostllm.config import ModelConfig, ProviderConfig
from ghostllm.errors import (
    GhostError,
    InvalidRequest,
    PayloadTooLarge,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
    UpstreamTimeout,
)
from ghostllm.protocol.chat import check_chat_request
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.anthropic import AnthropicTranslator
from ghostllm.providers.anthropic_request import DEFAULT_MAX_TOKENS
from ghostllm.providers.base import Json
from tests.fidelity.answer import accumulate
from tests.support.tools import WEATHER

T = AnthropicTranslator(ProviderConfig(id="claude", type="anthropic", base_url="http://x", stored_api_key="sk-ant-1"))
PLAIN = ModelConfig(id="c", provider="claude")
STRUCTURED = ModelConfig(id="c", provider="claude", capabilities=("chat", "structured_output"))
HI = [{"role": "user", "content": "hi"}]


def build(body: Json, *, stream: bool = False, entry: ModelConfig | None = PLAIN) -> Json:
    full = check_chat_request({"model": "public", **body})
    before = copy.deepcopy(full)
    req = T.request(Endpoint.CHAT, full, "claude-up", stream=stream, entry=entry)
    assert full == before, "the client's body was changed"
    assert req.path == "/v1/messages"
    out: Json = orjson.loads(req.body)
    return out


def refused(body: Json, *, entry: ModelConfig | None = PLAIN) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as exc:
        build(body, entry=entry)
    return exc.value


def test_headers_authenticate_and_pin_the_version() -> None:
    assert T.headers() == {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant-1"}
    keyless = AnthropicTranslator(ProviderConfig(id="k", type="anthropic", base_url="http://x"))
    assert keyless.headers() == {"anthropic-version": "2023-06-01"}


# ------------------------------------------------------------------ requests


def test_plain_request() -> None:
    out = build({"messages": HI, "temperature": 0.5, "top_p": 0.9, "stream": False})
    assert out == {"model": "claude-up", "max_tokens": DEFAULT_MAX_TOKENS, "messages": HI, "temperature": 0.5,
                   "top_p": 0.9}  # fmt: skip
    assert build({"messages": HI, "stream": True}, stream=True)["stream"] is True


@pytest.mark.parametrize(
    ("body", "entry", "want"),
    [
        ({"max_tokens": 7}, PLAIN, 7),
        ({"max_completion_tokens": 9, "max_tokens": 7}, PLAIN, 9),
        ({}, ModelConfig(id="c", provider="claude", max_output_tokens=1234), 1234),
        ({"max_tokens": 5}, ModelConfig(id="c", provider="claude", max_output_tokens=1234), 5),
        ({}, PLAIN, DEFAULT_MAX_TOKENS),
        ({}, None, DEFAULT_MAX_TOKENS),
    ],
)
def test_max_tokens_is_always_sent(body: Json, entry: ModelConfig | None, want: int) -> None:
    assert build({"messages": HI, **body}, entry=entry)["max_tokens"] == want


def test_system_and_developer_messages_become_the_system_prompt() -> None:
    one = build({"messages": [{"role": "system", "content": "be brief"}, *HI]})
    assert one["system"] == "be brief" and one["messages"] == HI
    several = build(
        {
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "rule one"}]},
                *HI,
                {"role": "system", "content": "rule two"},
            ]
        }
    )
    assert several["system"] == [{"type": "text", "text": "rule one"}, {"type": "text", "text": "rule two"}]
    assert several["messages"] == HI


def test_consecutive_turns_merge_and_tool_results_are_user_turns() -> None:
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    out = build(
        {
            "tools": [WEATHER],
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
                {"role": "assistant", "content": "let me look", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
                {"role": "user", "content": "thanks"},
                {"role": "assistant", "content": ""},
            ],
        }
    )
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "let me look"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]


def test_an_earlier_refusal_is_history_text() -> None:
    out = build({"messages": [*HI, {"role": "assistant", "content": None, "refusal": "I can't."}, *HI]})
    assert out["messages"][1] == {"role": "assistant", "content": "I can't."}


def test_tool_call_arguments_must_be_a_json_object() -> None:
    def with_args(args: str) -> Json:
        call = {"id": "t", "type": "function", "function": {"name": "get_weather", "arguments": args}}
        return {"messages": [*HI, {"role": "assistant", "content": None, "tool_calls": [call]}]}

    assert build(with_args(""))["messages"][1]["content"][0]["input"] == {}
    for bad in ("not json", "[1]"):
        assert refused(with_args(bad)).param == "messages[1].tool_calls[0].function.arguments"


def test_images_by_data_url_and_by_url() -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "what", "cache_control": {"type": "ephemeral"}},
    ]
    out = build({"messages": [{"role": "user", "content": parts}]})
    assert out["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "text", "text": "what", "cache_control": {"type": "ephemeral"}},
    ]
    for url in ("data:image/png,rawbytes", "ftp://example.com/a.png"):
        bad = [{"type": "image_url", "image_url": {"url": url}}]
        assert refused({"messages": [{"role": "user", "content": bad}]}).param == "messages[0][0].image_url.url"


def test_pdf_files_become_documents() -> None:
    part = {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}}
    out = build({"messages": [{"role": "user", "content": [part]}]})
    assert out["messages"][0]["content"] == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}
    ]


def test_tools_and_their_schemas() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    out = build({"messages": HI, "tools": [WEATHER, bare]})
    assert out["tools"] == [
        {"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER["function"]["parameters"]},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    assert "strict" in refused({"messages": HI, "tools": [strict]}).message
    assert build({"messages": HI, "tools": [strict]}, entry=STRUCTURED)["tools"][0]["strict"] is True


@pytest.mark.parametrize(
    ("choice", "parallel", "want"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, True, None),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, want: Json | None) -> None:
    body: Json = {"messages": HI, "tools": [WEATHER]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert build(body).get("tool_choice") == want


def test_stop_user_and_service_tier() -> None:
    assert build({"messages": HI, "stop": "END"})["stop_sequences"] == ["END"]
    assert build({"messages": HI, "stop": ["a", "b"]})["stop_sequences"] == ["a", "b"]
    assert build({"messages": HI, "user": "u-1"})["metadata"] == {"user_id": "u-1"}
    assert build({"messages": HI, "service_tier": "default"})["service_tier"] == "standard_only"
    assert "flex" in refused({"messages": HI, "service_tier": "flex"}).message


def test_structured_output_only_where_the_model_has_it() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True}}
    out = build({"messages": HI, "response_format": fmt}, entry=STRUCTURED)
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    assert "response_format" not in out
    err = refused({"messages": HI, "response_format": fmt})
    assert "json_schema" in err.message and "claude" in err.message and err.param == "response_format"
    assert refused({"messages": HI, "response_format": {"type": "json_object"}}, entry=STRUCTURED).param == (
        "response_format"
    )
    assert "output_config" not in build({"messages": HI, "response_format": {"type": "text"}})


def test_reasoning_effort_is_a_thinking_budget() -> None:
    default = build({"messages": HI, "reasoning_effort": "medium"})
    assert default["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert default["max_tokens"] == DEFAULT_MAX_TOKENS + 4096
    clamped = build({"messages": HI, "reasoning_effort": "high", "max_tokens": 3000})
    assert clamped["thinking"] == {"type": "enabled", "budget_tokens": 2999} and clamped["max_tokens"] == 3000
    assert build({"messages": HI, "reasoning_effort": "none"})["thinking"] == {"type": "disabled"}
    assert refused({"messages": HI, "reasoning_effort": "low", "max_tokens": 500}).param == "reasoning_effort"
    native = {"type": "enabled", "budget_tokens": 2048}
    assert build({"messages": HI, "thinking": native, "top_k": 5})["thinking"] == native
    refused({"messages": HI, "thinking": native, "reasoning_effort": "low"})


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"seed": 1}, "seed"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"store": True}, "store"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}]},
            "messages[0][0]",
        ),
    ],
)
def test_what_anthropic_cannot_do_is_a_400_naming_it(extra: Json, param: str) -> None:
    err = refused({"messages": HI, **extra})
    assert err.param == param and "provider claude (anthropic)" in err.message


def test_harmless_fields_are_accepted() -> None:
    harmless = {"n": 1, "logprobs": False, "presence_penalty": 0, "store": False, "metadata": {"k": "v"},
                "stream_options": {"include_usage": True}, "modalities": ["text"], "prompt_cache_key": "k"}  # fmt: skip
    out = build({"messages": HI, **harmless})
    assert set(out) == {"model", "max_tokens", "messages"}


@pytest.mark.parametrize("endpoint", [Endpoint.EMBEDDINGS, Endpoint.COMPLETIONS])
def test_other_endpoints_are_a_400_naming_the_provider(endpoint: Endpoint) -> None:
    with pytest.raises(InvalidRequest, match="not supported by provider claude"):
        T.request(endpoint, {"model": "m", "input": "x"}, "m", stream=False)


# ------------------------------------------------------------------ whole answers

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-up-2025",
    "content": [
        {"type": "thinking", "thinking": "secret plan", "signature": "sig"},
        {"type": "redacted_thinking", "data": "xx"},
        {"type": "text", "text": "Let me "},
        {"type": "text", "text": "check."},
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_b", "name": "now", "input": {}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_read_input_tokens": 20,
        "cache_creation_input_tokens": 5,
        "output_tokens": 7,
        "output_tokens_details": {"thinking_tokens": 3},
    },
}
USAGE = Usage(35, 7, 42, cached_tokens=20, reasoning_tokens=3, cache_creation_tokens=5)


def test_whole_answer_with_thinking_tools_and_cache_usage() -> None:
    reply = T.reply(Endpoint.CHAT, orjson.dumps(MESSAGE))
    assert reply.usage == USAGE
    (choice,) = reply.data["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["logprobs"] is None
    assert choice["message"] == {
        "role": "assistant",
        "content": "Let me check.",
        "refusal": None,
        "tool_calls": [
            {"id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "toolu_b", "type": "function", "function": {"name": "now", "arguments": "{}"}},
        ],
    }
    assert "secret" not in orjson.dumps(reply.data).decode()
    assert reply.data["usage"] == {"prompt_tokens": 35, "completion_tokens": 7, "total_tokens": 42,
                                   "prompt_tokens_details": {"cached_tokens": 20},
                                   "completion_tokens_details": {"reasoning_tokens": 3}}  # fmt: skip
    assert reply.data["object"] == "chat.completion" and reply.data["id"] == "msg_1"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length")],
)  # fmt: skip
def test_stop_reasons(stop: str, finish: str) -> None:
    body = {
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": stop,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    assert T.reply(Endpoint.CHAT, orjson.dumps(body)).data["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize("raw", [b"<html>", b"[]", b'{"content": "x"}', b'{"content": [{"type": "text"}]}'])
def test_malformed_answers_are_provider_errors(raw: bytes) -> None:
    with pytest.raises(ProviderError):
        T.reply(Endpoint.CHAT, raw)


# ------------------------------------------------------------------ streams


def sse(*events: Json) -> bytes:
    # Framed as the API does it, data lines padded the way its recordings show.
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"   \n\n" for e in events)


def delta(index: int, d: Json) -> Json:
    return {"type": "content_block_delta", "index": index, "delta": d}


START_USAGE = {"input_tokens": 10, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 5, "output_tokens": 1}
START = {**MESSAGE, "content": [], "stop_reason": None, "usage": START_USAGE}
# fmt: off
# The stream of MESSAGE: thinking at block 0 (and a redacted one at 1), text at 2, tools at 3 and 4.
STREAM = sse(
    {"type": "message_start", "message": START},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "ping"},
    delta(0, {"type": "thinking_delta", "thinking": "secret plan"}),
    delta(0, {"type": "signature_delta", "signature": "sig"}),
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "xx"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}},
    delta(2, {"type": "text_delta", "text": "Let me "}),
    delta(2, {"type": "text_delta", "text": "check."}),
    delta(2, {"type": "citations_delta", "citation": {"type": "char_location"}}),
    {"type": "content_block_stop", "index": 2},
    {"type": "content_block_start", "index": 3,
     "content_block": {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}},
    delta(3, {"type": "input_json_delta", "partial_json": ""}),
    delta(3, {"type": "input_json_delta", "partial_json": '{"city":'}),
    delta(3, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
    {"type": "content_block_stop", "index": 3},
    {"type": "content_block_start", "index": 4,
     "content_block": {"type": "tool_use", "id": "toolu_b", "name": "now", "input": {}}},
    {"type": "content_block_stop", "index": 4},
    {"type": "some_future_event", "x": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"input_tokens": 10, "output_tokens": 7, "output_tokens_details": {"thinking_tokens": 3}}},
    {"type": "message_stop"},
)
# fmt: on


def decode(data: bytes, cut: int | None = None) -> tuple[list[Json], Usage | None, bool]:
    d = T.stream_decoder(Endpoint.CHAT)
    chunks = d.feed(data) if cut is None else d.feed(data[:cut]) + d.feed(data[cut:])
    for c in chunks:
        c.pop("created")
    return chunks, d.usage, d.done


def test_stream_chunks_indexes_and_usage() -> None:
    chunks, usage, done = decode(STREAM)
    assert done and usage == USAGE
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["id"] == "msg_1" and c["model"] == "claude-up-2025" for c in chunks)
    calls = [tc for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls") or ()]
    # Blocks 3 and 4 are tool calls 0 and 1; ids kept; arguments verbatim, "{}" for none.
    assert calls[0] == {
        "index": 0,
        "id": "toolu_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert [(c["index"], c["function"]["arguments"]) for c in calls[1:]] == [
        (0, '{"city":'), (0, '"Paris"}'), (1, ""), (1, "{}")
    ]  # fmt: skip
    assert "secret" not in orjson.dumps(chunks).decode()
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 35


def test_stream_adds_up_to_the_whole_answer() -> None:
    chunks, _, _ = decode(STREAM)
    completion, _, problems = accumulate(chunks)
    assert not problems, problems
    streamed = completion["choices"][0]
    whole = T.reply(Endpoint.CHAT, orjson.dumps(MESSAGE)).data
    for call in streamed["message"]["tool_calls"]:
        del call["index"]
    # The nulls a whole answer carries for OpenAI's schema (refusal, logprobs) are no deltas.
    expected = {k: v for k, v in whole["choices"][0].items() if k != "logprobs"}
    expected["message"] = {k: v for k, v in expected["message"].items() if k != "refusal"}
    assert streamed == expected
    assert completion["usage"] == whole["usage"]


def test_stream_split_at_every_byte_offset_decodes_the_same() -> None:
    whole = decode(STREAM)
    for cut in range(len(STREAM) + 1):
        assert decode(STREAM, cut) == whole, cut


def test_nothing_after_message_stop() -> None:
    late = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "late"}}
    extra = sse({"type": "message_start", "message": START}, {"type": "message_stop"}, late)
    chunks, _, done = decode(extra)
    assert done and "late" not in orjson.dumps(chunks).decode()


@pytest.mark.parametrize(
    ("kind", "error"),
    [("overloaded_error", ServiceUnavailable), ("rate_limit_error", RateLimited), ("api_error", ProviderError),
     ("invalid_request_error", InvalidRequest), ("authentication_error", ProviderError), ("new_error", ProviderError)],
)  # fmt: skip
def test_error_events(kind: str, error: type[GhostError]) -> None:
    raw = sse(
        {"type": "message_start", "message": START}, {"type": "error", "error": {"type": kind, "message": "Boom"}}
    )
    with pytest.raises(error, match="Boom") as exc:
        decode(raw)
    assert type(exc.value) is error


@pytest.mark.parametrize("raw", [b"data: nope\n\n", b"data: 42\n\n", b'data: {"type": "content_block_delta"}\n\n'])
def test_bad_events_are_provider_errors(raw: bytes) -> None:
    with pytest.raises(ProviderError):
        decode(raw)


# ------------------------------------------------------------------ errors, models


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, InvalidRequest), (401, ProviderError), (403, ProviderError), (404, ProviderError),
     (413, PayloadTooLarge), (429, RateLimited), (500, ProviderError), (504, UpstreamTimeout),
     (529, ServiceUnavailable)],
)  # fmt: skip
def test_error_statuses(status: int, kind: type[GhostError]) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "x", "message": "Their words"}, "request_id": "req_1"})
    err = T.error(status, body, {"retry-after": "20"})
    assert type(err) is kind and "Their words" in err.message and "claude" in err.message
    assert err.http_status != 401
    if status == 429:
        assert err.retry_after == "20"


def test_models() -> None:
    assert T.models_path() == "/v1/models?limit=1000"
    listing = {"data": [{"id": "claude-a", "type": "model"}, {"id": "claude-b", "type": "model"}], "has_more": False}
    assert T.models(orjson.dumps(listing)) == ["claude-a", "claude-b"]
    with pytest.raises(ProviderError):
        T.models(b'{"data": 1}')
