"""`type: anthropic` end to end: the openai SDK (sync, async, streaming) through Envoy and a
worker to the Anthropic emulator. Streamed tool-call deltas keep stable indexes and add up to
the non-streaming answer, usage (cache and thinking included) arrives in both modes, the
provider's errors become ours (its 401 our 502, 429 with retry-after, 529 a 503), and the
emulator's record shows what went upstream: the key and version headers, the system prompt,
merged turns, the max_tokens default."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e.providers.gateway import async_sdk, sdk, user
from tests.support.http import check_error, request
from tests.support.procs import (
    Stack,
    Upstream,
    emulator,
    emulator_received,
    reset_emulator,
    running_stack,
    server_config,
)
from tests.support.tools import TIME, WEATHER

CAPS = ["chat", "streaming", "functions", "vision", "structured_output"]
SCENARIOS = ("error-400", "error-401", "error-404", "error-429", "error-500", "overloaded", "stream-error")
SCHEMA = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with emulator(tmp_path_factory.mktemp("anthropic-upstream"), "anthropic") as up:
        yield up


@pytest.fixture(scope="module")
def stack(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("anthropic-stack")
    config = {
        "server": server_config(tmp, 1, shutdown_grace_s=5),
        "providers": [
            {"id": "claude", "type": "anthropic", "base_url": upstream.url, "api_key_env": "GHOSTLLM_TEST_UPSTREAM_KEY"}
        ],
        "models": [
            {"id": "claude-small", "provider": "claude", "upstream_model": "anthropic-small", "capabilities": CAPS},
            {
                "id": "claude-capped",
                "provider": "claude",
                "upstream_model": "anthropic-small",
                "max_output_tokens": 321,
            },
            {"id": "claude-plain", "provider": "claude", "upstream_model": "anthropic-large"},
            # Says it has what Anthropic has not, so the request reaches the adapter, which says no.
            {"id": "claude-all", "provider": "claude", "capabilities": ["chat", "embeddings", "completions"]},
            *(
                {"id": f"claude-{s}", "provider": "claude", "upstream_model": s, "capabilities": CAPS}
                for s in SCENARIOS
            ),
        ],
    }
    with running_stack(config, upstream, tmp) as s:
        yield s


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with sdk(stack) as c:
        yield c


def chat(client: openai.OpenAI, **kw: Any) -> Any:
    return client.chat.completions.create(**{"model": "claude-small", **kw})


def chat_stream(client: openai.OpenAI, **kw: Any) -> list[Any]:
    params = {"model": "claude-small", "stream": True, "stream_options": {"include_usage": True}, **kw}
    return list(client.chat.completions.create(**params))


def accumulate(chunks: list[Any]) -> dict[str, Any]:
    """What a stream of chunks adds up to, checking that tool calls keep their index."""
    content: str | None = None
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk" and chunk.model.startswith("claude-")
        if chunk.usage is not None:
            usage = chunk.usage.model_dump(exclude_none=True)
        for choice in chunk.choices:
            if choice.delta.content:
                content = (content or "") + choice.delta.content
            for tc in choice.delta.tool_calls or ():
                if tc.index not in calls:
                    # The first delta of a call names it; later ones only add arguments.
                    assert tc.id and tc.id.startswith("toolu_") and tc.function.name, tc
                    calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
                else:
                    assert tc.id is None or tc.id == calls[tc.index]["id"]
                calls[tc.index]["arguments"] += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    assert sorted(calls) == list(range(len(calls))), "tool-call indexes are not 0..n-1"
    return {"content": content, "calls": [calls[i] for i in sorted(calls)], "finish": finish, "usage": usage}


def whole(reply: Any) -> dict[str, Any]:
    choice = reply.choices[0]
    calls = [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in choice.message.tool_calls or ()
    ]
    return {
        "content": choice.message.content or None,
        "calls": calls,
        "finish": choice.finish_reason,
        "usage": reply.usage.model_dump(exclude_none=True),
    }


def same_answer(streamed: dict[str, Any], answer: dict[str, Any]) -> None:
    """Equal, but for the call ids each answer draws anew; arguments compared as JSON."""
    for side in (streamed, answer):
        for call in side["calls"]:
            assert call.pop("id").startswith("toolu_")
            call["arguments"] = json.loads(call["arguments"])
    assert streamed == answer


def sent(upstream: Upstream) -> list[dict[str, Any]]:
    return [r for r in emulator_received(upstream) if r["path"] == "/v1/messages"]


# ------------------------------------------------------------------ answers


def test_text_whole_and_streamed(client: openai.OpenAI) -> None:
    reply = chat(client, messages=user("hello there"))
    assert reply.model == "claude-small" and reply.choices[0].message.role == "assistant"
    answer = whole(reply)
    assert answer == {
        "content": "You said: hello there",
        "calls": [],
        "finish": "stop",
        "usage": {
            "prompt_tokens": 2,
            "completion_tokens": 4,
            "total_tokens": 6,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
    chunks = chat_stream(client, messages=user("hello there"))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 4  # a chunk per word
    same_answer(accumulate(chunks), answer)


def test_async_client_whole_and_streamed(stack: Stack) -> None:
    async def go() -> tuple[Any, list[Any]]:
        async with async_sdk(stack) as c:
            reply = await c.chat.completions.create(model="claude-small", messages=user("async please"))
            stream = await c.chat.completions.create(
                model="claude-small", messages=user("async please"), stream=True, stream_options={"include_usage": True}
            )
            return reply, [chunk async for chunk in stream]

    reply, chunks = asyncio.run(go())
    same_answer(accumulate(chunks), whole(reply))
    assert whole(reply)["content"] == "You said: async please"


def test_streamed_tool_calls_keep_their_indexes(client: openai.OpenAI) -> None:
    kw = {"tools": [WEATHER, TIME], "messages": user("parallel please")}
    answer = whole(chat(client, **kw))
    assert [c["name"] for c in answer["calls"]] == ["get_weather", "get_time"] and answer["finish"] == "tool_calls"
    assert answer["content"] is None
    chunks = chat_stream(client, **kw)
    fragments = [
        tc.function.arguments
        for c in chunks
        for ch in c.choices
        for tc in ch.delta.tool_calls or ()
        if tc.index == 0 and tc.function.arguments
    ]
    assert len(fragments) >= 2 and json.loads("".join(fragments)) == {"city": "x"}
    same_answer(accumulate(chunks), answer)


def test_tool_choice_and_parallel_tool_calls(client: openai.OpenAI) -> None:
    one = whole(chat(client, tools=[WEATHER, TIME], parallel_tool_calls=False, messages=user("parallel please")))
    assert [c["name"] for c in one["calls"]] == ["get_weather"]
    named = {"type": "function", "function": {"name": "get_time"}}
    chosen = whole(chat(client, tools=[WEATHER, TIME], tool_choice=named, messages=user("x")))
    assert [c["name"] for c in chosen["calls"]] == ["get_time"]
    none = whole(chat(client, tools=[WEATHER], tool_choice="none", messages=user("just talk")))
    assert none["content"] == "You said: just talk" and none["calls"] == []


def test_tool_result_round_trip(client: openai.OpenAI, upstream: Upstream) -> None:
    first = chat(client, tools=[WEATHER], messages=user("weather in Paris"))
    call = first.choices[0].message.tool_calls[0]
    turns = [
        *user("weather in Paris"),
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    reset_emulator(upstream)
    reply = whole(chat(client, tools=[WEATHER], messages=turns))
    assert reply["content"] == "Tool said: sunny" and reply["finish"] == "stop"
    (seen,) = sent(upstream)
    assert [m["role"] for m in seen["body"]["messages"]] == ["user", "assistant", "user"]
    assert seen["body"]["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}
    ]


def test_images_stop_sequences_and_length(client: openai.OpenAI) -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "what is this"},
    ]
    assert whole(chat(client, messages=user(parts)))["content"] == "You said: what is this [2 image(s)]"
    for stream in (False, True):
        kw = {"messages": user("one two three")}
        stopped = (
            accumulate(chat_stream(client, stop=["two"], **kw)) if stream else whole(chat(client, stop=["two"], **kw))
        )
        assert (stopped["content"], stopped["finish"]) == ("You said: one ", "stop")
        cut = accumulate(chat_stream(client, max_tokens=3, **kw)) if stream else whole(chat(client, max_tokens=3, **kw))
        assert (cut["content"], cut["finish"], cut["usage"]["completion_tokens"]) == ("You said: one", "length", 3)


def test_json_schema_only_where_the_model_has_structured_output(client: openai.OpenAI) -> None:
    reply = whole(chat(client, response_format=SCHEMA, messages=user("hi")))
    assert json.loads(reply["content"]) == {"answer": "You said: hi"}
    with pytest.raises(openai.BadRequestError, match=r"json_schema.*provider claude"):
        chat(client, model="claude-plain", response_format=SCHEMA, messages=user("hi"))
    with pytest.raises(openai.BadRequestError, match="json_object"):
        chat(client, response_format={"type": "json_object"}, messages=user("hi"))


def test_thinking_is_counted_never_shown(client: openai.OpenAI) -> None:
    answer = whole(chat(client, reasoning_effort="low", messages=user("ponder")))
    assert answer["content"] == "You said: ponder"
    # "Thinking about: ponder" (3 words) + the answer (3): inside completion_tokens, and said.
    assert answer["usage"]["completion_tokens"] == 6
    assert answer["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    streamed = accumulate(chat_stream(client, reasoning_effort="low", messages=user("ponder")))
    assert streamed["content"] == "You said: ponder" and streamed["usage"] == answer["usage"]


def test_cached_prompt_tokens_in_usage(client: openai.OpenAI) -> None:
    system = [{"type": "text", "text": "a long shared prefix of five", "cache_control": {"type": "ephemeral"}}]
    messages = [{"role": "system", "content": system}, *user("cache me")]
    first = whole(chat(client, messages=messages))["usage"]
    second = accumulate(chat_stream(client, messages=messages))["usage"]
    # Cached prompt tokens count inside prompt_tokens, as OpenAI counts them.
    assert first["prompt_tokens"] == second["prompt_tokens"] == 8
    assert first["prompt_tokens_details"] == {"cached_tokens": 0}
    assert second["prompt_tokens_details"] == {"cached_tokens": 6}


def test_unsupported_features_and_endpoints(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="logprobs is not supported by provider claude"):
        chat(client, logprobs=True, messages=user("x"))
    with pytest.raises(openai.BadRequestError, match="embeddings are not supported by provider claude"):
        client.embeddings.create(model="claude-all", input="x")
    with pytest.raises(openai.BadRequestError, match="text completions are not supported by provider claude"):
        client.completions.create(model="claude-all", prompt="x")


# ------------------------------------------------------------------ errors


def test_our_bad_upstream_key_is_a_502(client: openai.OpenAI, stack: Stack) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        chat(client, model="claude-error-401", messages=user("x"))
    assert exc.value.status_code == 502
    err = check_error(
        request(stack.base_url + "/chat/completions", {"model": "claude-error-401", "messages": user("x")}), 502
    )
    assert "invalid x-api-key" in err["message"]


def test_rate_limit_passes_retry_after(client: openai.OpenAI) -> None:
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as exc:
            (chat_stream if stream else chat)(client, model="claude-error-429", messages=user("x"))
        assert exc.value.response.headers["retry-after"] == "7"


def test_overloaded_is_a_503(client: openai.OpenAI) -> None:
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as exc:
            (chat_stream if stream else chat)(client, model="claude-overloaded", messages=user("x"))
        assert exc.value.status_code == 503 and "Overloaded" in exc.value.message


def test_upstream_400_keeps_its_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="emulated invalid request"):
        chat(client, model="claude-error-400", messages=user("x"))


def test_error_mid_stream_is_an_error_event(client: openai.OpenAI) -> None:
    got: list[Any] = []
    with pytest.raises(openai.APIError, match="Overloaded") as exc:
        for chunk in client.chat.completions.create(model="claude-stream-error", messages=user("a b c"), stream=True):
            got.append(chunk)
    # Never a normal end. When the start and the error arrive in one read, nothing was sent
    # yet and the client gets the 503 itself; otherwise an in-band error event follows them.
    assert all(c.choices == [] or c.choices[0].finish_reason is None for c in got)
    if not got:
        assert isinstance(exc.value, openai.APIStatusError) and exc.value.status_code == 503


# ------------------------------------------------------------------ what went upstream


def test_what_the_upstream_received(client: openai.OpenAI, upstream: Upstream) -> None:
    reset_emulator(upstream)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
    ]
    chat(client, messages=messages)
    chat(client, model="claude-capped", messages=messages)
    chat(client, model="claude-capped", max_tokens=50, messages=messages)
    chat_stream(client, messages=messages)
    default, capped, chosen, streamed = sent(upstream)
    for seen in (default, capped, chosen, streamed):
        assert seen["headers"]["x-api-key"] == "sk-upstream-secret"
        assert seen["headers"]["anthropic-version"] == "2023-06-01"
        assert "authorization" not in seen["headers"]
    body = default["body"]
    assert body == {
        "model": "anthropic-small",
        "max_tokens": 4096,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]}
        ],
    }
    assert (capped["body"]["max_tokens"], chosen["body"]["max_tokens"]) == (321, 50)
    assert streamed["body"]["stream"] is True and "stream_options" not in streamed["body"]
