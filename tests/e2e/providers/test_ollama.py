"""`type: ollama` through the whole gateway: the openai SDK (sync, async, streaming) through
Envoy, a stack whose provider speaks Ollama's native API to the Ollama emulator. Both sides
are checked: what the client got, and what the emulator received (/_emulator/requests)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any, cast

import openai
import pytest

from tests.e2e.providers.gateway import (
    Gateway,
    check_async_chats,
    check_stream_error_after_relayed,
    check_upstream_error,
    fold,
    gateway,
    streamed_and_whole,
    user,
)
from tests.support.tools import TIME_TZ, WEATHER_BARE

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway(tmp_path_factory.mktemp("ollama-gateway"), "ollama", "ollama-small", "ollama-embed") as g:
        yield g


def last_chat(gw: Gateway) -> dict[str, Any]:
    sent = [r for r in gw.received() if r["path"] in ("/api/chat", "/api/generate", "/api/embed")]
    assert sent, "the emulator received nothing"
    return sent[-1]


def test_health_and_listing(gw: Gateway) -> None:
    # First in the module: health is checked once per 10 s, and nothing has reset the record yet.
    assert gw.health()["healthy"] is True
    assert any(r["path"] == "/api/tags" for r in gw.received())
    models = {m.id: m.to_dict() for m in gw.sdk.models.list()}
    assert models["ollama-chat"]["provider"] == "ollama"


def test_chat_sync_and_what_ollama_received(gw: Gateway) -> None:
    gw.reset()
    r = gw.sdk.chat.completions.create(
        model=gw.model("chat"),
        messages=[{"role": "system", "content": "Be brief now"}, *user("hello there")],
        temperature=0.2,
        seed=5,
    )
    assert r.model == "ollama-chat" and r.object == "chat.completion"
    assert r.choices[0].message.content == "You said: hello there" and r.choices[0].finish_reason == "stop"
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (5, 4, 9)
    sent = last_chat(gw)
    assert sent["path"] == "/api/chat" and sent["body"]["model"] == "ollama-small"
    assert sent["body"]["stream"] is False
    assert sent["body"]["options"] == {"temperature": 0.2, "seed": 5}
    assert sent["body"]["messages"] == [{"role": "system", "content": "Be brief now"}, *user("hello there")]
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-secret"


def test_chat_async(gw: Gateway) -> None:
    check_async_chats(gw)


@pytest.mark.parametrize(
    "request_",
    [
        {"messages": user("stream me please")},
        {"messages": user("weather in Oslo"), "tools": [WEATHER_BARE, TIME_TZ]},
        {"messages": user("parallel weather and time"), "tools": [WEATHER_BARE, TIME_TZ]},
        {"messages": user("one two three four five"), "max_tokens": 3},
        {"messages": user("alpha beta gamma delta"), "stop": ["gamma"]},
        {"messages": user("json please"), "response_format": {"type": "json_object"}},
    ],
    ids=["text", "tool_call", "parallel_tool_calls", "length", "stop", "json"],
)
def test_accumulated_stream_equals_the_whole_answer(gw: Gateway, request_: dict[str, Any]) -> None:
    streamed, answer, chunks = streamed_and_whole(gw, request_)
    assert streamed["roles"] == {"assistant"}
    assert streamed == answer
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_stream_without_include_usage_has_no_usage_chunk(gw: Gateway) -> None:
    chunks = list(gw.sdk.chat.completions.create(model=gw.model("chat"), messages=user("hi"), stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert fold(chunks)["content"] == "You said: hi"
    assert last_chat(gw)["body"]["stream"] is True


def test_tool_calls_and_round_trip(gw: Gateway) -> None:
    r = gw.sdk.chat.completions.create(model=gw.model("chat"), messages=user("weather in Oslo"), tools=[WEATHER_BARE])
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and not msg.content
    assert msg.tool_calls and msg.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    call = msg.tool_calls[0]
    assert json.loads(call.function.arguments) == {"city": "x"}  # type: ignore[union-attr]
    history: Any = [
        *user("weather in Oslo"),
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny"},
    ]
    gw.reset()
    r = gw.sdk.chat.completions.create(model=gw.model("chat"), messages=history, tools=[WEATHER_BARE])
    assert r.choices[0].message.content == "Tool said: Sunny" and r.choices[0].finish_reason == "stop"
    sent = last_chat(gw)["body"]["messages"]
    assert sent[1]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "x"}}}]
    assert sent[2] == {"role": "tool", "content": "Sunny", "tool_name": "get_weather"}


def test_image_and_options_reach_ollama_natively(gw: Gateway) -> None:
    gw.reset()
    content: Any = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    r = gw.sdk.chat.completions.create(
        model=gw.model("chat"),
        messages=[{"role": "user", "content": content}],
        max_completion_tokens=50,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
    )
    assert json.loads(r.choices[0].message.content or "") == {"answer": "You said: what is this [1 image]"}
    body = last_chat(gw)["body"]
    assert body["messages"] == [{"role": "user", "content": "what is this", "images": [PNG]}]
    assert body["options"] == {"num_predict": 50} and body["format"] == {"type": "object"}
    assert "max_completion_tokens" not in body and "response_format" not in body


def test_thinking_is_never_content(gw: Gateway) -> None:
    r = gw.sdk.chat.completions.create(model=gw.model("chat"), messages=user("think first"), reasoning_effort="low")
    assert r.choices[0].message.content == "You said: think first"
    assert (r.choices[0].message.model_extra or {}).get("reasoning_content")
    assert last_chat(gw)["body"]["think"] == "low"
    chunks = list(
        gw.sdk.chat.completions.create(
            model=gw.model("chat"), messages=user("think first"), reasoning_effort="low", stream=True
        )
    )
    assert fold(chunks)["content"] == "You said: think first"


def test_embeddings_and_completions(gw: Gateway) -> None:
    e = gw.sdk.embeddings.create(model=gw.model("embed"), input=["a b", "c"])
    assert [d.index for d in e.data] == [0, 1] and all(len(d.embedding) == 8 for d in e.data)
    assert e.usage.prompt_tokens == 3
    assert last_chat(gw)["body"] == {"model": "ollama-embed", "input": ["a b", "c"]}
    # Ollama answers floats: packed as OpenAI's base64 for a client that names it.
    plain = gw.sdk.embeddings.create(model=gw.model("embed"), input=["a b", "c"], encoding_format="float")
    packed = gw.sdk.embeddings.create(model=gw.model("embed"), input=["a b", "c"], encoding_format="base64")
    for floats, item in zip(plain.data, packed.data, strict=True):
        raw = base64.b64decode(cast(str, item.embedding))
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(floats.embedding, rel=1e-6)
    c = gw.sdk.completions.create(model=gw.model("chat"), prompt="once upon", max_tokens=4)
    assert c.choices[0].text == "You said: once upon" and c.usage is not None and c.usage.completion_tokens == 4
    assert last_chat(gw)["path"] == "/api/generate"
    streamed = list(gw.sdk.completions.create(model=gw.model("chat"), prompt="once upon", stream=True))
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == "You said: once upon"


@pytest.mark.parametrize(
    ("scenario", "status", "etype"),
    [
        ("error-400", 400, "invalid_request_error"),
        ("error-401", 502, "provider_error"),
        ("error-404", 502, "provider_error"),
        ("error-429", 429, "rate_limit_error"),
        ("error-500", 502, "provider_error"),
        ("error-503", 503, "server_error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors(gw: Gateway, scenario: str, status: int, etype: str, stream: bool) -> None:
    check_upstream_error(gw, scenario, status, etype, stream=stream)


def test_stream_error_is_in_band_after_what_was_relayed(gw: Gateway) -> None:
    check_stream_error_after_relayed(gw, "unexpected EOF")


def test_what_ollama_cannot_do_is_a_400_and_nothing_goes_upstream(gw: Gateway) -> None:
    gw.reset()
    content: Any = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(openai.BadRequestError) as exc:
        gw.sdk.chat.completions.create(model=gw.model("chat"), messages=[{"role": "user", "content": content}])
    assert "not supported by provider ollama (ollama)" in exc.value.message
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        gw.sdk.chat.completions.create(
            model=gw.model("chat"), messages=user("x"), tools=[WEATHER_BARE], tool_choice="required"
        )
    assert [r for r in gw.received() if r["method"] == "POST"] == []
