"""The Anthropic emulator is faithful: the official `anthropic` SDK parses every answer and
stream it sends (text, images, tools, parallel and streamed tool use, tool results, JSON
output, stop sequences, max_tokens, thinking, prompt caching, model listing), and its errors
raise the SDK's typed errors. The answers follow the contract in ghostllm.emulators."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types import RawContentBlockDeltaEvent, RawMessageStartEvent, TextBlock, ThinkingBlock, ToolUseBlock

from tests.support.http import request
from tests.support.procs import Upstream, emulator_received, reset_emulator

# The emulator under test (the `upstream` fixture in conftest.py).
EMULATOR = "anthropic"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME: Any = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


@pytest.fixture(scope="module")
def client(upstream: Upstream) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=upstream.url, api_key="sk-ant-test", max_retries=0) as c:
        yield c


def create(client: anthropic.Anthropic, **kw: Any) -> anthropic.types.Message:
    params: Any = {"model": "anthropic-small", "max_tokens": 256, **kw}
    msg: anthropic.types.Message = client.messages.create(**params)
    return msg


def stream(client: anthropic.Anthropic, **kw: Any) -> tuple[list[Any], anthropic.types.Message]:
    params: Any = {"model": "anthropic-small", "max_tokens": 256, **kw}
    with client.messages.stream(**params) as s:
        events = list(s)
        return events, s.get_final_message()


def user(content: Any) -> list[Any]:
    return [{"role": "user", "content": content}]


def texts(msg: anthropic.types.Message) -> str:
    return "".join(b.text for b in msg.content if isinstance(b, TextBlock))


def calls(msg: anthropic.types.Message) -> list[ToolUseBlock]:
    return [b for b in msg.content if isinstance(b, ToolUseBlock)]


# ------------------------------------------------------------------ answers


def test_text_answer_and_usage(client: anthropic.Anthropic) -> None:
    msg = create(client, system="Be brief now", messages=user("hello there"))
    assert texts(msg) == "You said: hello there"
    assert msg.stop_reason == "end_turn" and msg.id.startswith("msg_") and msg.model == "anthropic-small"
    # Words in: 3 (system) + 2; words out: 4.
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (5, 4)
    assert msg.usage.cache_read_input_tokens == msg.usage.cache_creation_input_tokens == 0


def test_text_stream_adds_up_to_the_answer(client: anthropic.Anthropic) -> None:
    events, msg = stream(client, messages=user("one two three"))
    assert isinstance(events[0], RawMessageStartEvent)
    deltas = [e for e in events if isinstance(e, RawContentBlockDeltaEvent)]
    assert len(deltas) == 5  # one per word of "You said: one two three"
    assert texts(msg) == "You said: one two three" and msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (3, 5)


def test_raw_event_sequence(client: anthropic.Anthropic) -> None:
    params: Any = {"model": "anthropic-small", "max_tokens": 50, "messages": user("hi"), "stream": True}
    kinds = [e.type for e in client.messages.create(**params)]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_images_base64_and_url(client: anthropic.Anthropic) -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "text", "text": "what is this"},
    ]
    assert texts(create(client, messages=user(content))) == "You said: what is this [2 image(s)]"


def test_multi_turn_answers_the_last_user_turn(client: anthropic.Anthropic) -> None:
    turns = [*user("first"), {"role": "assistant", "content": "ok"}, *user("second")]
    assert texts(create(client, messages=turns)) == "You said: second"


def test_tool_use_whole_and_streamed(client: anthropic.Anthropic) -> None:
    msg = create(client, tools=[WEATHER, TIME], messages=user("weather please"))
    assert msg.stop_reason == "tool_use"
    (call,) = calls(msg)
    assert call.name == "get_weather" and call.input == {"city": "x"} and call.id.startswith("toolu_")
    events, streamed = stream(client, tools=[WEATHER, TIME], messages=user("weather please"))
    fragments = [
        e.delta.partial_json
        for e in events
        if isinstance(e, RawContentBlockDeltaEvent) and e.delta.type == "input_json_delta" and e.delta.partial_json
    ]
    assert len(fragments) >= 2
    (call,) = calls(streamed)
    assert call.input == {"city": "x"} and streamed.stop_reason == "tool_use"


def test_parallel_named_and_no_tools(client: anthropic.Anthropic) -> None:
    both = create(client, tools=[WEATHER, TIME], messages=user("parallel please"))
    assert [c.name for c in calls(both)] == ["get_weather", "get_time"]
    _, streamed = stream(client, tools=[WEATHER, TIME], messages=user("parallel please"))
    assert [(c.name, c.input) for c in calls(streamed)] == [("get_weather", {"city": "x"}), ("get_time", {})]
    one = create(
        client,
        tools=[WEATHER, TIME],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=user("parallel please"),
    )
    assert len(calls(one)) == 1
    named = create(client, tools=[WEATHER, TIME], tool_choice={"type": "tool", "name": "get_time"}, messages=user("x"))
    assert [c.name for c in calls(named)] == ["get_time"]
    none = create(client, tools=[WEATHER], tool_choice={"type": "none"}, messages=user("just talk"))
    assert texts(none) == "You said: just talk" and not calls(none)


def test_tool_result_round_trip(client: anthropic.Anthropic) -> None:
    first = create(client, tools=[WEATHER], messages=user("weather"))
    (call,) = calls(first)
    turns = [
        *user("weather"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}]},
        *user([{"type": "tool_result", "tool_use_id": call.id, "content": "sunny and warm"}]),
    ]
    msg = create(client, tools=[WEATHER], messages=turns)
    assert texts(msg) == "Tool said: sunny and warm" and msg.stop_reason == "end_turn"


def test_json_output_stop_sequences_and_max_tokens(client: anthropic.Anthropic) -> None:
    fmt = {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    assert texts(create(client, output_config=fmt, messages=user("hi"))) == '{"answer": "You said: hi"}'
    stopped = create(client, stop_sequences=["two"], messages=user("one two three"))
    assert texts(stopped) == "You said: one "
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "two")
    cut = create(client, max_tokens=3, messages=user("one two three"))
    assert texts(cut) == "You said: one" and cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    _, streamed = stream(client, max_tokens=3, messages=user("one two three"))
    assert texts(streamed) == "You said: one" and streamed.stop_reason == "max_tokens"


def test_thinking_blocks_whole_and_streamed(client: anthropic.Anthropic) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    msg = create(client, max_tokens=2048, thinking=thinking, messages=user("ponder"))
    assert isinstance(msg.content[0], ThinkingBlock) and msg.content[0].signature
    assert texts(msg) == "You said: ponder"
    assert msg.usage.output_tokens == 3 + 3
    assert msg.usage.output_tokens_details is not None and msg.usage.output_tokens_details.thinking_tokens == 3
    _, streamed = stream(client, max_tokens=2048, thinking=thinking, messages=user("ponder"))
    first = streamed.content[0]
    assert isinstance(first, ThinkingBlock) and first.thinking == "Thinking about: ponder" and first.signature
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        create(client, max_tokens=1024, thinking=thinking, messages=user("ponder"))


def test_prompt_cache_written_then_read(client: anthropic.Anthropic) -> None:
    system: Any = [{"type": "text", "text": "a long shared prefix here", "cache_control": {"type": "ephemeral"}}]
    first = create(client, system=system, messages=user("cache me"))
    second = create(client, system=system, messages=user("cache me"))
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (5, 0)
    assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (0, 5)
    assert first.usage.input_tokens == second.usage.input_tokens == 2


def test_models_listed_and_retrieved(client: anthropic.Anthropic) -> None:
    assert [m.id for m in client.models.list()] == ["anthropic-small", "anthropic-large"]
    assert client.models.retrieve("anthropic-large").display_name
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("nope")


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("model", "kind", "status"),
    [
        ("error-400", anthropic.BadRequestError, 400),
        ("error-401", anthropic.AuthenticationError, 401),
        ("error-404", anthropic.NotFoundError, 404),
        ("error-429", anthropic.RateLimitError, 429),
        ("error-500", anthropic.InternalServerError, 500),
        ("error-503", anthropic.InternalServerError, 503),
        ("overloaded", anthropic.OverloadedError, 529),
    ],
)
def test_scenario_errors_are_the_sdks_typed_errors(
    client: anthropic.Anthropic, model: str, kind: type[anthropic.APIStatusError], status: int
) -> None:
    for streamed in (False, True):
        with pytest.raises(kind) as exc:
            if streamed:
                stream(client, model=model, messages=user("x"))
            else:
                create(client, model=model, messages=user("x"))
        assert exc.value.status_code == status
        assert exc.value.body["error"]["message"]  # type: ignore[index]
        if status == 429:
            assert exc.value.response.headers["retry-after"] == "7"


def test_stream_error_mid_stream(client: anthropic.Anthropic) -> None:
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as exc:
        params: Any = {"model": "stream-error", "max_tokens": 50, "messages": user("x y z"), "stream": True}
        for event in client.messages.create(**params):
            seen.append(event.type)
    assert seen[0] == "message_start" and "content_block_delta" in seen
    assert exc.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_invalid_requests_are_refused_as_the_api_does(client: anthropic.Anthropic, upstream: Upstream) -> None:
    orphan = user([{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError, match="unexpected `tool_use_id`"):
        create(client, messages=orphan)
    with pytest.raises(anthropic.BadRequestError, match="Extra inputs"):
        create(client, messages=user("x"), extra_body={"frequency_penalty": 1})
    with pytest.raises(anthropic.BadRequestError, match="role"):
        create(client, messages=[{"role": "system", "content": "x"}])
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    no_max = request(upstream.url + "/v1/messages", {"model": "m", "messages": user("x")}, headers=headers, key=None)
    assert no_max.status == 400 and "max_tokens" in no_max.json()["error"]["message"]
    keyless = request(upstream.url + "/v1/models", key=None)
    assert keyless.status == 401 and keyless.json()["error"]["type"] == "authentication_error"


def test_async_client_parses_streams(upstream: Upstream) -> None:
    async def go() -> anthropic.types.Message:
        async with anthropic.AsyncAnthropic(base_url=upstream.url, api_key="k", max_retries=0) as c:
            params: Any = {"model": "anthropic-small", "max_tokens": 50, "messages": user("hi"), "tools": [WEATHER]}
            async with c.messages.stream(**params) as s:
                return await s.get_final_message()

    assert calls(asyncio.run(go()))[0].input == {"city": "x"}


def test_requests_recorded_and_reset(client: anthropic.Anthropic, upstream: Upstream) -> None:
    reset_emulator(upstream)
    create(client, messages=user("recorded"))
    (seen,) = emulator_received(upstream)
    assert seen["method"] == "POST" and seen["path"] == "/v1/messages"
    assert seen["headers"]["anthropic-version"] and seen["body"]["messages"] == user("recorded")
