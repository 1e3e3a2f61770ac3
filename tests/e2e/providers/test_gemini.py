"""The gemini adapter end to end: the openai SDK (sync, async, streaming) drives a GhostLLM
stack through Envoy whose gemini providers point at the Gemini emulator; each test checks
the client's answer and what the emulator received (/_emulator/requests)."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.providers.gateway import async_sdk, sdk
from tests.fidelity.answer import accumulate
from tests.support.http import check_error, request
from tests.support.openapi import validate
from tests.support.procs import Stack, Upstream, emulator, emulator_received, running_stack, server_config
from tests.support.tools import TIME, WEATHER

HELLO: Any = [{"role": "user", "content": "hi there"}]
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode()
CAPS = ["chat", "streaming", "functions", "vision"]
SCENARIOS = ("error-400", "error-401", "error-404", "error-429", "error-500", "error-503", "stream-error")


def gemini_config(emu: Upstream, tmp: Path) -> dict[str, Any]:
    return {
        "server": server_config(tmp, 1, shutdown_grace_s=20),
        # Health is checked before the worker serves; no background rounds in the emulator's record.
        "routing": {"health_check_interval_s": 3600},
        "providers": [
            {"id": "gem", "type": "gemini", "base_url": emu.url, "api_key_env": "GHOSTLLM_TEST_UPSTREAM_KEY"},
            # Our credential, not the client's, is what Gemini refuses here (its 400 API_KEY_INVALID).
            {"id": "gem-badkey", "type": "gemini", "base_url": emu.url, "headers": {"x-goog-api-key": "bad-key"}},
        ],
        "models": [
            {"id": "gemini-small", "provider": "gem", "context_length": 1048576, "capabilities": CAPS},
            {"id": "gemini-large", "provider": "gem", "capabilities": CAPS},
            {"id": "gemini-embedding", "provider": "gem", "capabilities": ["embeddings"]},
            {"id": "gemini-badkey", "provider": "gem-badkey", "upstream_model": "gemini-small", "capabilities": CAPS},
            *({"id": m, "provider": "gem", "capabilities": CAPS} for m in SCENARIOS),
        ],
    }


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with emulator(tmp_path_factory.mktemp("gemini-emulator"), "gemini") as up:
        yield up


@pytest.fixture(scope="module")
def stack(emu: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("gemini-stack")
    with running_stack(gemini_config(emu, tmp), emu, tmp) as s:
        yield s


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with sdk(stack) as c:
        yield c


def last_sent(emu: Upstream) -> dict[str, Any]:
    return emulator_received(emu)[-1]


def both(client: openai.OpenAI, **kw: Any) -> tuple[Any, Any, list[Any]]:
    """The whole answer, the accumulated stream (its usage asked for) and the raw chunks."""
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    streamed, _, problems = accumulate([c.model_dump() for c in chunks])
    assert not problems, problems
    return whole.model_dump(), streamed, chunks


def same_answer(whole: Any, streamed: Any) -> None:
    """The accumulated stream says what the whole answer says (ids minted apart aside)."""
    w, s = whole["choices"][0], streamed["choices"][0]
    assert s["finish_reason"] == w["finish_reason"]
    assert (s["message"].get("content") or None) == (w["message"]["content"] or None)
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in w["message"]["tool_calls"] or []]
    got = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in s["message"].get("tool_calls", [])]
    assert got == calls

    def known(usage: Any) -> Any:
        return {k: v for k, v in usage.items() if v is not None}

    assert known(streamed["usage"]) == known(whole["usage"])


def test_plain_text_both_ways_and_what_went_upstream(client: openai.OpenAI, emu: Upstream) -> None:
    whole, streamed, chunks = both(client, model="gemini-small", messages=HELLO)
    assert whole["choices"][0]["message"] == {**whole["choices"][0]["message"], "role": "assistant",
                                              "content": "You said: hi there"}  # fmt: skip
    assert whole["choices"][0]["finish_reason"] == "stop" and whole["model"] == "gemini-small"
    assert whole["usage"]["prompt_tokens"] == 2 and whole["usage"]["completion_tokens"] == 4
    assert whole["usage"]["total_tokens"] == 6
    same_answer(whole, streamed)
    assert chunks[0].choices[0].delta.role == "assistant" and all(c.model == "gemini-small" for c in chunks)
    sent = emulator_received(emu)[-2:]
    assert [s["path"] for s in sent] == [
        "/v1beta/models/gemini-small:generateContent",
        "/v1beta/models/gemini-small:streamGenerateContent?alt=sse",
    ]
    for s in sent:
        # The provider's key goes upstream, never the client's.
        assert s["headers"]["x-goog-api-key"] == "sk-upstream-secret" and "authorization" not in s["headers"]
        assert s["body"] == {"contents": [{"role": "user", "parts": [{"text": "hi there"}]}]}


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gemini-small", messages=HELLO, stream=True))
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"
    assert [c.choices[0].finish_reason for c in chunks].count("stop") == 1


def test_async_client(stack: Stack) -> None:
    async def main() -> tuple[str | None, str]:
        async with async_sdk(stack) as c:
            whole = await c.chat.completions.create(model="gemini-small", messages=HELLO)
            text = ""
            async for chunk in await c.chat.completions.create(model="gemini-small", messages=HELLO, stream=True):
                text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            return whole.choices[0].message.content, text

    whole, streamed = asyncio.run(main())
    assert whole == streamed == "You said: hi there"


def test_system_prompt_and_multi_turn(client: openai.OpenAI, emu: Upstream) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "developer", "content": "really brief"},
        {"role": "user", "content": "second"},
    ]
    whole, streamed, _ = both(client, model="gemini-small", messages=messages)
    assert whole["choices"][0]["message"]["content"] == "You said: second"
    assert whole["usage"]["prompt_tokens"] == 2 + 1 + 1 + 2 + 1
    same_answer(whole, streamed)
    body = last_sent(emu)["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}, {"text": "really brief"}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]


def test_image_input(client: openai.OpenAI, emu: Upstream) -> None:
    content = [{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": PNG}}]
    whole, streamed, _ = both(client, model="gemini-small", messages=[{"role": "user", "content": content}])
    assert whole["choices"][0]["message"]["content"] == "You said: what is it [1 image]"
    same_answer(whole, streamed)
    assert last_sent(emu)["body"]["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/png", "data": PNG.split(",", 1)[1]}
    }


def test_tool_call_both_ways(client: openai.OpenAI, emu: Upstream) -> None:
    whole, streamed, _ = both(client, model="gemini-small", messages=HELLO, tools=[WEATHER, TIME])
    (call,) = whole["choices"][0]["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"x"}'}
    assert whole["choices"][0]["finish_reason"] == "tool_calls"
    same_answer(whole, streamed)
    assert last_sent(emu)["body"]["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather in a city",
         "parametersJsonSchema": WEATHER["function"]["parameters"]},
        {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {}}},
    ]}]  # fmt: skip


def test_parallel_tool_calls_stream_with_stable_ids_and_indexes(client: openai.OpenAI) -> None:
    kw: Any = {"model": "gemini-small", "messages": [{"role": "user", "content": "both in parallel"}],
               "tools": [WEATHER, TIME]}  # fmt: skip
    whole, streamed, chunks = both(client, **kw)
    calls = whole["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert len({c["id"] for c in calls}) == 2
    same_answer(whole, streamed)
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [(d.index, d.function.name) for d in deltas] == [(0, "get_weather"), (1, "get_time")]
    assert all(d.id and d.type == "function" for d in deltas)
    assert [c["id"] for c in streamed["choices"][0]["message"]["tool_calls"]] == [d.id for d in deltas]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("none", None), ("required", ["get_weather"]), ({"type": "function", "function": {"name": "get_time"}},
                                                     ["get_time"])],
)  # fmt: skip
def test_tool_choice(client: openai.OpenAI, choice: Any, expected: list[str] | None) -> None:
    r = client.chat.completions.create(model="gemini-small", messages=HELLO, tools=[WEATHER, TIME], tool_choice=choice)
    calls = r.choices[0].message.tool_calls
    assert ([c.function.name for c in calls] if calls else None) == expected  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["gemini-small", "gemini-large"])
def test_tool_result_round_trip(client: openai.OpenAI, emu: Upstream, model: str) -> None:
    """gemini-large signs its calls and refuses them back unsigned: the id carries the signature."""
    first = client.chat.completions.create(model=model, messages=HELLO, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    messages: Any = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "x"}'}}
        ]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]  # fmt: skip
    whole, streamed, _ = both(client, model=model, messages=messages, tools=[WEATHER])
    assert whole["choices"][0]["message"]["content"] == "Tool said: sunny"
    same_answer(whole, streamed)
    contents = last_sent(emu)["body"]["contents"]
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}
    ]}  # fmt: skip
    assert ("thoughtSignature" in contents[1]["parts"][0]) is (model == "gemini-large")


def test_thinking_tokens_count_in_completion_tokens(client: openai.OpenAI) -> None:
    whole, streamed, _ = both(client, model="gemini-large", messages=HELLO)
    usage = whole["usage"]
    assert usage["completion_tokens"] == 4 + 5 and usage["total_tokens"] == 2 + 4 + 5
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 5
    same_answer(whole, streamed)


def test_json_mode_and_schema(client: openai.OpenAI, emu: Upstream) -> None:
    whole, streamed, _ = both(client, model="gemini-small", messages=HELLO, response_format={"type": "json_object"})
    assert json.loads(whole["choices"][0]["message"]["content"]) == {"answer": "You said: hi there"}
    same_answer(whole, streamed)
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
    r = client.chat.completions.create(model="gemini-small", messages=HELLO, response_format=fmt)
    assert json.loads(r.choices[0].message.content or "") == {"answer": "You said: hi there"}
    assert last_sent(emu)["body"]["generationConfig"] == {"responseMimeType": "application/json",
                                                          "responseJsonSchema": schema}  # fmt: skip


def test_stop_sequence_and_length(client: openai.OpenAI, emu: Upstream) -> None:
    whole, streamed, _ = both(client, model="gemini-small", messages=HELLO, stop=["there"])
    assert whole["choices"][0]["message"]["content"] == "You said: hi "
    assert whole["choices"][0]["finish_reason"] == "stop"
    same_answer(whole, streamed)
    assert last_sent(emu)["body"]["generationConfig"] == {"stopSequences": ["there"]}
    whole, streamed, _ = both(client, model="gemini-small", messages=HELLO, max_tokens=2)
    assert whole["choices"][0]["message"]["content"] == "You said:"
    assert whole["choices"][0]["finish_reason"] == "length"
    same_answer(whole, streamed)
    assert last_sent(emu)["body"]["generationConfig"] == {"maxOutputTokens": 2}


def test_n_is_candidate_count(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gemini-small", messages=HELLO, n=2)
    assert [(c.index, c.message.content) for c in r.choices] == [(0, "You said: hi there"), (1, "You said: hi there")]


def test_embeddings(client: openai.OpenAI, emu: Upstream) -> None:
    one = client.embeddings.create(model="gemini-embedding", input="hello")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 8
    assert last_sent(emu)["path"] == "/v1beta/models/gemini-embedding:embedContent"
    many = client.embeddings.create(model="gemini-embedding", input=["hello", "world"], dimensions=4)
    assert [d.index for d in many.data] == [0, 1] and all(len(d.embedding) == 4 for d in many.data)
    assert many.data[0].embedding == pytest.approx(one.data[0].embedding[:4], abs=1.0)
    sent = last_sent(emu)
    assert sent["path"] == "/v1beta/models/gemini-embedding:batchEmbedContents"
    assert [r["content"]["parts"][0]["text"] for r in sent["body"]["requests"]] == ["hello", "world"]


def test_embeddings_in_base64_when_asked(client: openai.OpenAI) -> None:
    """Gemini answers floats; a client that names base64 gets OpenAI's packing of them (the SDK
    decodes only when it chose base64 itself, so here it hands the string over as it came)."""
    floats = client.embeddings.create(model="gemini-embedding", input="hello", encoding_format="float")
    packed = client.embeddings.create(model="gemini-embedding", input="hello", encoding_format="base64")
    text = packed.data[0].embedding
    assert isinstance(text, str)
    raw = base64.b64decode(text)
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(floats.data[0].embedding, rel=1e-6)
    # Not naming it: the SDK asks base64 and decodes it, floats again.
    assert client.embeddings.create(model="gemini-embedding", input="hello").data[0].embedding == pytest.approx(
        floats.data[0].embedding, rel=1e-6
    )


@pytest.mark.parametrize(
    ("model", "status", "etype"),
    [
        ("gemini-badkey", 502, "provider_error"),
        ("error-400", 400, "invalid_request_error"),
        ("error-401", 502, "provider_error"),
        ("error-404", 502, "provider_error"),
        ("error-500", 502, "provider_error"),
        ("error-503", 503, "server_error"),
    ],
)
def test_upstream_errors(stack: Stack, model: str, status: int, etype: str) -> None:
    for stream in (False, True):
        reply = request(stack.base_url + "/chat/completions", {"model": model, "messages": HELLO, "stream": stream})
        err = check_error(reply, status, etype)
        assert "gem" in err["message"]


def test_bad_key_is_our_fault_with_the_providers_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="gemini-badkey", messages=HELLO)
    assert exc.value.status_code == 502 and "API key not valid" in str(exc.value)


def test_rate_limit_passes_retry_after(client: openai.OpenAI, stack: Stack) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="error-429", messages=HELLO)
    assert exc.value.response.headers["retry-after"] == "7" and "quota" in str(exc.value)
    reply = request(stack.base_url + "/chat/completions", {"model": "error-429", "messages": HELLO, "stream": True})
    check_error(reply, 429, "rate_limit_error")
    assert reply.headers["retry-after"] == "7"


def test_an_error_mid_stream_is_an_error_event(client: openai.OpenAI, stack: Stack) -> None:
    reply = request(stack.base_url + "/chat/completions", {"model": "stream-error", "messages": HELLO, "stream": True})
    events = reply.events()
    assert reply.status == 200 and "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["type"] == "provider_error" and "internal error" in last["error"]["message"]
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="stream-error", messages=HELLO, stream=True):
            pass


def test_a_feature_gemini_lacks_is_a_400_naming_it(stack: Stack, emu: Upstream) -> None:
    before = len(emulator_received(emu))
    body = {"model": "gemini-small", "messages": HELLO, "logit_bias": {"1": 1}}
    err = check_error(request(stack.base_url + "/chat/completions", body), 400, "invalid_request_error")
    assert "logit_bias" in err["message"] and "gemini" in err["message"] and err["param"] == "logit_bias"
    assert len(emulator_received(emu)) == before


def test_models_are_listed_and_health_is_the_listing(client: openai.OpenAI, stack: Stack, emu: Upstream) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"gemini-small", "gemini-large", "gemini-embedding"} <= ids
    reply = request(f"http://127.0.0.1:{stack.rest_port}/health")
    providers = {p["id"]: p for p in reply.json()["providers"]}
    # The listing answers our key and refuses the bad one.
    assert providers["gem"]["healthy"] is True and providers["gem-badkey"]["healthy"] is False
    assert reply.status == 200 and reply.json()["status"] == "degraded"
    # /health reads the worker's background checks: the listings it made before it served.
    listings = [r for r in emulator_received(emu) if r["method"] == "GET"]
    assert listings and all(r["method"] == "GET" and r["path"] == "/v1beta/models?pageSize=1000" for r in listings)
    assert {r["headers"]["x-goog-api-key"] for r in listings} == {"sk-upstream-secret", "bad-key"}


@pytest.mark.parametrize(
    "extra",
    [{}, {"tools": [WEATHER, TIME], "messages": [{"role": "user", "content": "in parallel"}]}, {"n": 2},
     {"model": "gemini-large", "stream_options": {"include_usage": True}}],
)  # fmt: skip
def test_answers_and_chunks_follow_openais_schemas(stack: Stack, extra: dict[str, Any]) -> None:
    body = {"model": "gemini-small", "messages": HELLO, **extra}
    unary = {k: v for k, v in body.items() if k != "stream_options"}
    whole = request(stack.base_url + "/chat/completions", unary)
    assert whole.status == 200
    validate("CreateChatCompletionResponse", whole.json())
    streamed = request(stack.base_url + "/chat/completions", {**body, "stream": True})
    events = streamed.events()
    assert streamed.status == 200 and events[-1] == "[DONE]"
    for event in events[:-1]:
        validate("CreateChatCompletionStreamResponse", json.loads(event))
    embedded = request(stack.base_url + "/embeddings", {"model": "gemini-embedding", "input": ["a", "b"]})
    validate("CreateEmbeddingResponse", embedded.json())
