"""`type: azure` through the whole gateway: the openai SDK (sync, async, streaming) through
Envoy, a stack whose provider is the Azure OpenAI emulator. Both sides are checked: what the
client got, and what the emulator received (deployment URL, api-version, api-key)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.providers.gateway import (
    UPSTREAM_KEY,
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

API_VERSION = "2025-01-01-preview"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("azure-gateway")
    with gateway(tmp, "azure", "azure-small", "azure-embed", api_version=API_VERSION) as g:
        yield g


def last(gw: Gateway) -> dict[str, Any]:
    sent = [r for r in gw.received() if r["method"] == "POST"]
    assert sent, "the emulator received nothing"
    return sent[-1]


def test_health_and_listing(gw: Gateway) -> None:
    # First in the module: health is checked once per 10 s, and nothing has reset the record yet.
    assert gw.health()["healthy"] is True
    listed = [r for r in gw.received() if r["method"] == "GET"]
    assert listed and listed[0]["path"] == f"/openai/models?api-version={API_VERSION}"
    assert listed[0]["headers"]["api-key"] == UPSTREAM_KEY
    models = {m.id: m.to_dict() for m in gw.sdk.models.list()}
    assert models["azure-chat"]["provider"] == "azure"


def test_chat_sync_and_what_azure_received(gw: Gateway) -> None:
    gw.reset()
    r = gw.sdk.chat.completions.create(
        model=gw.model("chat"), messages=[{"role": "system", "content": "Be brief now"}, *user("hello there")]
    )
    assert r.model == "azure-chat"
    assert r.choices[0].message.content == "You said: hello there" and r.choices[0].finish_reason == "stop"
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (5, 4, 9)
    sent = last(gw)
    assert sent["path"] == f"/openai/deployments/azure-small/chat/completions?api-version={API_VERSION}"
    assert sent["headers"]["api-key"] == UPSTREAM_KEY and "authorization" not in sent["headers"]
    assert sent["body"]["messages"][1] == user("hello there")[0]


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
    ],
    ids=["text", "tool_call", "parallel_tool_calls", "length", "stop"],
)
def test_accumulated_stream_equals_the_whole_answer(gw: Gateway, request_: dict[str, Any]) -> None:
    streamed, answer, chunks = streamed_and_whole(gw, request_)
    # Azure's prompt-filter chunk (no choices, no usage) is not relayed: every chunk is OpenAI's.
    assert all(c.choices or c.usage is not None for c in chunks)
    assert streamed == answer


def test_streams_always_ask_azure_for_usage(gw: Gateway) -> None:
    gw.reset()
    chunks = list(gw.sdk.chat.completions.create(model=gw.model("chat"), messages=user("hi"), stream=True))
    assert all(c.usage is None for c in chunks) and fold(chunks)["content"] == "You said: hi"
    body = last(gw)["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_tool_round_trip(gw: Gateway) -> None:
    r = gw.sdk.chat.completions.create(model=gw.model("chat"), messages=user("weather in Oslo"), tools=[WEATHER_BARE])
    call = (r.choices[0].message.tool_calls or [])[0]
    assert json.loads(call.function.arguments) == {"city": "x"}  # type: ignore[union-attr]
    history: Any = [
        *user("weather in Oslo"),
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny"},
    ]
    r = gw.sdk.chat.completions.create(model=gw.model("chat"), messages=history, tools=[WEATHER_BARE])
    assert r.choices[0].message.content == "Tool said: Sunny"


def test_embeddings_and_completions(gw: Gateway) -> None:
    e = gw.sdk.embeddings.create(model=gw.model("embed"), input=["a b", "c"])
    f = gw.sdk.embeddings.create(model=gw.model("embed"), input=["a b", "c"], encoding_format="float")
    assert [len(d.embedding) for d in e.data] == [8, 8] and e.usage.prompt_tokens == 3
    for decoded, floats in zip(e.data, f.data, strict=True):
        assert decoded.embedding == pytest.approx(floats.embedding, abs=1e-6)
    assert last(gw)["path"] == f"/openai/deployments/azure-embed/embeddings?api-version={API_VERSION}"
    c = gw.sdk.completions.create(model=gw.model("chat"), prompt="once upon")
    assert c.choices[0].text == "You said: once upon"
    assert last(gw)["path"].startswith("/openai/deployments/azure-small/completions?api-version=")


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
    check_stream_error_after_relayed(gw, "server had an error")
