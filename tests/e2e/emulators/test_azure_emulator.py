"""The Azure OpenAI emulator is faithful: the official `openai` SDK's AzureOpenAI client parses
every answer and stream it sends (tool-call fragments, usage, embeddings, listing), maps its
errors to its exception types, and it follows the emulators' behaviour contract."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.procs import Upstream, emulator_received, reset_emulator
from tests.support.tools import TIME_TZ, WEATHER_BARE

# The emulator under test (the `upstream` fixture in conftest.py).
EMULATOR = "azure"
API_VERSION = "2024-10-21"


@pytest.fixture(scope="module")
def client(upstream: Upstream) -> Iterator[openai.AzureOpenAI]:
    with openai.AzureOpenAI(
        azure_endpoint=upstream.url, api_key="az-key", api_version=API_VERSION, max_retries=0, timeout=20
    ) as c:
        yield c


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


def test_chat_whole(client: openai.AzureOpenAI) -> None:
    r = client.chat.completions.create(
        model="azure-small", messages=[{"role": "system", "content": "Be brief now"}, *user("hello there")]
    )
    assert r.object == "chat.completion" and r.model == "gpt-4o-mini-2024-07-18"
    assert r.choices[0].message.content == "You said: hello there" and r.choices[0].finish_reason == "stop"
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (5, 4, 9)
    extra = r.model_extra or {}
    assert extra["prompt_filter_results"][0]["prompt_index"] == 0


def test_stream_with_usage(client: openai.AzureOpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="azure-small", messages=user("one two"), stream=True, stream_options={"include_usage": True}
        )
    )
    # Azure's opening chunk: no choices, only the prompt filter results.
    assert chunks[0].choices == [] and chunks[0].id == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: one two"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6


@pytest.mark.parametrize("text", ["weather please", "parallel please"])
def test_tool_calls_streamed_in_fragments_equal_the_whole_answer(client: openai.AzureOpenAI, text: str) -> None:
    whole = client.chat.completions.create(model="azure-small", messages=user(text), tools=[WEATHER_BARE, TIME_TZ])
    assert whole.choices[0].finish_reason == "tool_calls"
    calls = whole.choices[0].message.tool_calls or []
    with client.chat.completions.stream(model="azure-small", messages=user(text), tools=[WEATHER_BARE, TIME_TZ]) as s:
        fragments = sum(1 for e in s if e.type == "tool_calls.function.arguments.delta")
        final = s.get_final_completion()
    streamed = final.choices[0].message.tool_calls or []
    assert fragments >= 2 * len(calls)
    expected = [("get_weather", {"city": "x"})] + ([("get_time", {"tz": "x"})] if "parallel" in text else [])
    for got in (calls, streamed):
        assert [(c.function.name, json.loads(c.function.arguments)) for c in got] == expected  # type: ignore[union-attr]
        assert all(c.id.startswith("call_") for c in got)
    assert final.choices[0].finish_reason == "tool_calls"


def test_contract_json_stop_length(client: openai.AzureOpenAI) -> None:
    r = client.chat.completions.create(
        model="azure-small", messages=user("json now"), response_format={"type": "json_object"}
    )
    assert json.loads(r.choices[0].message.content or "") == {"answer": "You said: json now"}
    r = client.chat.completions.create(model="azure-small", messages=user("alpha beta gamma"), stop=["gamma"])
    assert (r.choices[0].message.content or "").rstrip() == "You said: alpha beta" and r.choices[
        0
    ].finish_reason == "stop"
    r = client.chat.completions.create(model="azure-small", messages=user("one two three four"), max_tokens=3)
    assert r.choices[0].message.content == "You said: one" and r.choices[0].finish_reason == "length"


def test_completions_embeddings_and_models(client: openai.AzureOpenAI) -> None:
    c = client.completions.create(model="azure-small", prompt="hi you")
    assert c.choices[0].text == "You said: hi you"
    # The SDK asks base64 by default and decodes it; floats when asked.
    e = client.embeddings.create(model="azure-embed", input=["a b", "c"])
    f = client.embeddings.create(model="azure-embed", input=["a b", "c"], encoding_format="float")
    for decoded, floats in zip(e.data, f.data, strict=True):
        assert decoded.embedding == pytest.approx(floats.embedding, abs=1e-6)
    assert len(e.data[0].embedding) == 8 and e.usage.prompt_tokens == 3
    assert {"azure-small", "azure-large", "azure-embed"} <= {m.id for m in client.models.list()}


@pytest.mark.parametrize(
    ("deployment", "kind"),
    [
        ("error-400", openai.BadRequestError),
        ("error-401", openai.AuthenticationError),
        ("error-404", openai.NotFoundError),
        ("error-429", openai.RateLimitError),
        ("error-500", openai.InternalServerError),
        ("error-503", openai.InternalServerError),
    ],
)
def test_scenario_errors(client: openai.AzureOpenAI, deployment: str, kind: type[Exception]) -> None:
    with pytest.raises(kind) as exc:
        client.chat.completions.create(model=deployment, messages=user("x"))
    err = exc.value
    assert isinstance(err, openai.APIStatusError) and err.message
    if deployment == "error-429":
        assert err.response.headers["retry-after"] == "7"


def test_access_needs_key_and_api_version(upstream: Upstream) -> None:
    url = f"{upstream.url}/openai/deployments/azure-small/chat/completions"
    r = httpx.post(url, params={"api-version": API_VERSION}, json={"messages": user("x")})
    assert r.status_code == 401 and "Access denied" in r.json()["error"]["message"]
    r = httpx.post(url, headers={"api-key": "k"}, json={"messages": user("x")})
    assert r.status_code == 404 and r.json() == {"error": {"code": "404", "message": "Resource not found"}}
    r = httpx.post(url, params={"api-version": API_VERSION}, headers={"authorization": "Bearer entra"},
                   json={"messages": user("x")})  # fmt: skip
    assert r.status_code == 200


def test_stream_error_raises(client: openai.AzureOpenAI) -> None:
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="server had an error"):
        for chunk in client.chat.completions.create(model="stream-error", messages=user("a b c d"), stream=True):
            seen.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(seen) == "You said: "


def test_requests_are_recorded(upstream: Upstream, client: openai.AzureOpenAI) -> None:
    reset_emulator(upstream)
    client.chat.completions.create(model="azure-large", messages=user("recorded"))
    found = emulator_received(upstream)
    assert len(found) == 1
    assert found[0]["path"] == f"/openai/deployments/azure-large/chat/completions?api-version={API_VERSION}"
    assert found[0]["headers"]["api-key"] == "az-key" and found[0]["body"]["messages"] == user("recorded")
