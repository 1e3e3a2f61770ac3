"""The Ollama emulator is faithful: the official `ollama` SDK parses every answer and stream
it sends (tool calls, thinking, embeddings, listing), its errors raise ResponseError, and it
follows the emulators' behaviour contract (ghostllm/emulators/__init__.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import ollama
import pytest

from tests.support.procs import Upstream, emulator_received, reset_emulator
from tests.support.tools import TIME_TZ, WEATHER

# The emulator under test (the `upstream` fixture in conftest.py).
EMULATOR = "ollama"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def client(upstream: Upstream) -> ollama.Client:
    return ollama.Client(host=upstream.url, timeout=20)


def user(text: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text, **extra}]


def test_chat_whole(client: ollama.Client) -> None:
    r = client.chat(
        model="ollama-small",
        messages=[{"role": "system", "content": "Be brief now"}, *user("hello there")],
        stream=False,
    )
    assert r.message.role == "assistant" and r.message.content == "You said: hello there"
    assert r.done is True and r.done_reason == "stop"
    assert (r.prompt_eval_count, r.eval_count) == (5, 4)


def test_chat_stream_one_line_per_word(client: ollama.Client) -> None:
    parts = list(client.chat(model="ollama-small", messages=user("one two three"), stream=True))
    assert [p.message.content for p in parts[:-1]] == ["You ", "said: ", "one ", "two ", "three"]
    last = parts[-1]
    assert last.done is True and last.done_reason == "stop" and last.message.content == ""
    assert (last.prompt_eval_count, last.eval_count) == (3, 5)
    assert not any(p.done for p in parts[:-1])


def test_images_are_counted(client: ollama.Client) -> None:
    r = client.chat(model="ollama-small", messages=user("look", images=[PNG, PNG]), stream=False)
    assert r.message.content == "You said: look [2 images]"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_whole_and_streamed(client: ollama.Client, stream: bool) -> None:
    def calls(text: str) -> list[tuple[str, dict[str, Any]]]:
        if stream:
            parts = list(client.chat(model="ollama-small", messages=user(text), tools=[WEATHER, TIME_TZ], stream=True))
            assert parts[-1].done and parts[-1].done_reason == "stop"
            found = [c for p in parts for c in (p.message.tool_calls or [])]
        else:
            r = client.chat(model="ollama-small", messages=user(text), tools=[WEATHER, TIME_TZ], stream=False)
            assert r.message.content == "" and r.done_reason == "stop"
            found = list(r.message.tool_calls or [])
        return [(c.function.name, dict(c.function.arguments)) for c in found]

    assert calls("weather in Paris") == [("get_weather", {"city": "x"})]
    assert calls("use parallel calls") == [("get_weather", {"city": "x"}), ("get_time", {"tz": "x"})]


def test_tool_result_round_trip(client: ollama.Client) -> None:
    messages = [
        *user("weather?"),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
        },
        {"role": "tool", "content": "Sunny", "tool_name": "get_weather"},
    ]
    r = client.chat(model="ollama-small", messages=messages, tools=[WEATHER], stream=False)
    assert r.message.content == "Tool said: Sunny" and not r.message.tool_calls


@pytest.mark.parametrize("fmt", ["json", {"type": "object", "properties": {"answer": {"type": "string"}}}])
def test_format(client: ollama.Client, fmt: Any) -> None:
    r = client.chat(model="ollama-small", messages=user("give JSON"), format=fmt, stream=False)
    assert json.loads(r.message.content or "") == {"answer": "You said: give JSON"}


def test_stop_and_num_predict(client: ollama.Client) -> None:
    r = client.chat(model="ollama-small", messages=user("alpha beta gamma"), options={"stop": ["gamma"]}, stream=False)
    assert r.message.content == "You said: alpha beta " and r.done_reason == "stop"
    r = client.chat(model="ollama-small", messages=user("one two three four"), options={"num_predict": 3}, stream=False)
    assert r.message.content == "You said: one" and r.done_reason == "length" and r.eval_count == 3


def test_thinking_is_apart_from_content(client: ollama.Client) -> None:
    r = client.chat(model="ollama-small", messages=user("hi"), think=True, stream=False)
    assert r.message.thinking and r.message.content == "You said: hi"
    parts = list(client.chat(model="ollama-small", messages=user("hi"), think=True, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == r.message.thinking
    assert "".join(p.message.content or "" for p in parts) == "You said: hi"


def test_generate(client: ollama.Client) -> None:
    r = client.generate(model="ollama-small", prompt="complete me", stream=False)
    assert r.response == "You said: complete me" and r.done
    parts = list(client.generate(model="ollama-small", prompt="complete me", stream=True))
    assert "".join(p.response for p in parts) == r.response and parts[-1].done


def test_embed_and_list(client: ollama.Client) -> None:
    r = client.embed(model="ollama-embed", input=["a b", "c"])
    assert len(r.embeddings) == 2 and all(len(v) == 8 for v in r.embeddings)
    assert r.embeddings[0] == client.embed(model="ollama-embed", input="a b").embeddings[0]
    assert r.prompt_eval_count == 3
    names = [m.model for m in client.list().models]
    assert {"ollama-small", "ollama-large", "ollama-embed"} <= set(names)


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
def test_scenario_errors_raise_response_error(client: ollama.Client, upstream: Upstream, status: int) -> None:
    with pytest.raises(ollama.ResponseError) as exc:
        client.chat(model=f"error-{status}", messages=user("x"), stream=False)
    assert exc.value.status_code == status and exc.value.error
    raw = httpx.post(f"{upstream.url}/api/chat", json={"model": f"error-{status}", "messages": user("x")})
    assert raw.status_code == status and isinstance(raw.json()["error"], str)
    assert raw.headers.get("retry-after") == ("7" if status == 429 else None)


def test_stream_error_mid_stream(client: ollama.Client) -> None:
    seen: list[str] = []
    with pytest.raises(ollama.ResponseError, match="unexpected EOF"):
        for part in client.chat(model="stream-error", messages=user("a b c d"), stream=True):
            seen.append(part.message.content or "")
    assert seen == ["You ", "said: "]


def test_rejects_what_ollama_rejects(upstream: Upstream) -> None:
    string_args = [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]
    data_url = user("x", images=["data:image/png;base64,AAAA"])
    for messages in (string_args, data_url):
        r = httpx.post(
            f"{upstream.url}/api/chat", json={"model": "ollama-small", "messages": messages, "stream": False}
        )
        assert r.status_code == 400 and r.json()["error"]
    assert httpx.post(f"{upstream.url}/api/chat", json={"messages": user("x")}).json() == {"error": "model is required"}


def test_requests_are_recorded(upstream: Upstream, client: ollama.Client) -> None:
    reset_emulator(upstream)
    client.chat(model="ollama-small", messages=user("recorded"), options={"seed": 3}, stream=False)
    found = emulator_received(upstream)
    assert len(found) == 1
    assert found[0]["method"] == "POST" and found[0]["path"] == "/api/chat"
    assert found[0]["headers"]["content-type"].startswith("application/json")
    assert found[0]["body"]["options"] == {"seed": 3} and found[0]["body"]["stream"] is False
