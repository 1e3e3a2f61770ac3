"""POST /v1/chat/completions through Envoy with the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import openai
import pytest

from tests.support.auth import ADMIN_KEY
from tests.support.http import envoy_counter, request, upstream_last_request
from tests.support.openapi import validate
from tests.support.procs import Stack

HELLO = [{"role": "user", "content": "hi there"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


def test_non_streaming(client: openai.OpenAI, stack: Stack) -> None:
    raw = client.chat.completions.with_raw_response.create(model="dev-echo", messages=HELLO)
    validate("CreateChatCompletionResponse", json.loads(raw.content))
    assert raw.headers["content-type"] == "application/json"
    assert "grpc-status" not in raw.headers and "grpc-message" not in raw.headers
    completion = raw.parse()
    assert completion.model == "dev-echo"
    assert completion.choices[0].message.content and "hi there" in completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    # numbers are JSON numbers, not strings
    body = json.loads(raw.content)
    assert isinstance(body["created"], int) and isinstance(body["usage"]["prompt_tokens"], int)


def test_alias_and_upstream_credentials(client: openai.OpenAI, stack: Stack) -> None:
    completion = client.chat.completions.create(model="gpt-test", messages=HELLO)
    assert completion.model == "gpt-test"
    seen = upstream_last_request(stack.upstream_url)
    assert seen["body"]["model"] == "dev-echo"
    # The provider's own key goes upstream, never the client's.
    assert seen["headers"]["authorization"] == "Bearer sk-upstream-secret"


def test_streaming_matches_non_streaming(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="dev-echo", messages=HELLO)
    stream = client.chat.completions.create(model="dev-echo", messages=HELLO, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    assert all(c.model == "dev-echo" for c in chunks)


def test_stream_wire_format(stack: Stack) -> None:
    reply = request(stack.base_url + "/chat/completions", {"model": "dev-echo", "messages": HELLO, "stream": True})
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream"
    events = reply.events()
    assert events[-1] == "[DONE]"
    for e in events[:-1]:
        validate("CreateChatCompletionStreamResponse", json.loads(e))
    # Usage was asked upstream (to account every token) but the client did not ask for it.
    assert all("usage" not in json.loads(e) for e in events[:-1])
    assert upstream_last_request(stack.upstream_url)["body"]["stream_options"] == {"include_usage": True}


def test_stream_flag_spellings(stack: Stack) -> None:
    """Envoy sends stream:false to a unary bridge by looking for a plain "stream": true
    in the body; every other spelling still gets the answer its JSON means."""
    url = stack.base_url + "/chat/completions"
    messages = json.dumps(HELLO)
    streamed = [
        '{"model": "dev-echo", "stream" :\n true, "messages": %s}',
        '{"model": "dev-echo", "\\u0073tream": true, "messages": %s}',
    ]
    for raw in streamed:
        reply = request(url, (raw % messages).encode())
        assert reply.status == 200 and reply.headers["content-type"] == "text/event-stream", raw
        events = reply.events()
        assert events[-1] == "[DONE]"
        for e in events[:-1]:
            validate("CreateChatCompletionStreamResponse", json.loads(e))
    schema = {"name": "s", "schema": {"type": "object", "properties": {"stream": True}}}
    for body in [
        {"model": "dev-echo", "messages": HELLO, "stream": False},
        {"model": "dev-echo", "messages": HELLO, "response_format": {"type": "json_schema", "json_schema": schema}},
    ]:
        reply = request(url, body)
        assert reply.status == 200 and reply.headers["content-type"] == "application/json", body
        validate("CreateChatCompletionResponse", reply.json())
    # A failing Lua script leaves every request on the streaming bridge, which still answers.
    assert envoy_counter(stack.admin_url, "http.ghostllm.lua.errors") == 0


def test_large_prompt_and_answer(client: openai.OpenAI) -> None:
    """Bodies past Envoy's 1 MiB connection buffers, both ways, in both modes (the echo repeats the prompt)."""
    big = "x" * (3 * 1024 * 1024)
    messages = [{"role": "user", "content": big}]
    answer = client.chat.completions.create(model="dev-echo", messages=messages).choices[0].message.content
    assert answer is not None and answer.endswith(big)
    chunks = client.chat.completions.create(model="dev-echo", messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).endswith(big)


def test_unary_bridge_is_not_public(stack: Stack) -> None:
    reply = request(stack.base_url.removesuffix("/v1") + "/_ghostllm/unary/v1/chat/completions", {"model": "dev-echo"})
    assert reply.status == 404
    validate("ErrorResponse", reply.json())


def test_stream_include_usage(client: openai.OpenAI, stack: Stack) -> None:
    chunks = list(
        client.chat.completions.create(
            model="dev-echo",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    reply = request(
        stack.base_url + "/chat/completions",
        {"model": "dev-echo", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}},
    )
    for e in reply.events()[:-1]:
        validate("CreateChatCompletionStreamResponse", json.loads(e))


def test_tool_calls_non_streaming(client: openai.OpenAI, stack: Stack) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="dev-echo",
        messages=[{"role": "user", "content": "Paris"}],
        tools=[WEATHER_TOOL],
    )
    validate("CreateChatCompletionResponse", json.loads(raw.content))
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Paris"
    assert upstream_last_request(stack.upstream_url)["body"]["tools"] == [WEATHER_TOOL]


def test_tool_calls_streaming_with_helper(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="dev-echo",
        messages=[{"role": "user", "content": "Paris"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        deltas = [e for e in stream if e.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    assert len(deltas) > 1, "arguments should arrive as several deltas"
    call = final.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 1}
    assert final.choices[0].finish_reason == "tool_calls"


def test_tool_result_round_trip(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Paris"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    completion = client.chat.completions.create(model="dev-echo", messages=messages, tools=[WEATHER_TOOL])
    assert completion.choices[0].message.content == "Tool said: sunny"


def test_full_request_surface_reaches_upstream(client: openai.OpenAI, stack: Stack) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    client.chat.completions.create(
        model="dev-echo",
        messages=[
            {"role": "system", "content": "sys"},
            {"role": "developer", "content": "dev"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                ],
            },
        ],
        temperature=0.5,
        top_p=0.9,
        n=2,
        stop=["x", "y"],
        seed=42,
        max_completion_tokens=50,
        max_tokens=60,
        presence_penalty=0.1,
        frequency_penalty=-0.1,
        logit_bias={"50256": -100},
        logprobs=True,
        top_logprobs=2,
        user="u-1",
        metadata={"team": "a"},
        parallel_tool_calls=False,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}},
    )
    body = upstream_last_request(stack.upstream_url)["body"]
    assert body["messages"][2]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
    }
    assert [m["role"] for m in body["messages"]] == ["system", "developer", "user"]
    expected = {
        "temperature": 0.5,
        "top_p": 0.9,
        "n": 2,
        "stop": ["x", "y"],
        "seed": 42,
        "max_completion_tokens": 50,
        "max_tokens": 60,
        "presence_penalty": 0.1,
        "frequency_penalty": -0.1,
        "logit_bias": {"50256": -100},
        "logprobs": True,
        "top_logprobs": 2,
        "user": "u-1",
        "metadata": {"team": "a"},
        "parallel_tool_calls": False,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    assert {k: body[k] for k in expected} == expected
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert isinstance(body["seed"], int) and isinstance(body["n"], int)


def test_n_choices_and_stop_string(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="dev-echo", messages=HELLO, n=2, stop="upstream")
    assert [c.index for c in completion.choices] == [0, 1]
    assert "upstream" not in (completion.choices[0].message.content or "")


def test_max_tokens_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="dev-echo", messages=HELLO, max_tokens=2)
    assert completion.choices[0].finish_reason == "length"


def test_async_client(aclient: openai.AsyncOpenAI) -> None:
    async def go() -> tuple[str, str]:
        async with aclient:
            full = await aclient.chat.completions.create(model="dev-echo", messages=HELLO)
            stream = await aclient.chat.completions.create(model="dev-echo", messages=HELLO, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return full.choices[0].message.content or "", text

    full, streamed = asyncio.run(go())
    assert full == streamed and full


def test_async_concurrent_streams(aclient: openai.AsyncOpenAI) -> None:
    async def one(i: int) -> str:
        stream = await aclient.chat.completions.create(
            model="dev-echo", messages=[{"role": "user", "content": f"n{i}"}], stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def go() -> list[str]:
        async with aclient:
            return await asyncio.gather(*(one(i) for i in range(20)))

    for i, text in enumerate(asyncio.run(go())):
        assert text.endswith(f"n{i}")


def test_request_id_generated_and_kept(stack: Stack) -> None:
    body = {"model": "dev-echo", "messages": HELLO}
    generated = request(stack.base_url + "/chat/completions", body)
    assert generated.headers.get("x-request-id")
    kept = request(stack.base_url + "/chat/completions", body, headers={"x-request-id": "req-abc-123"})
    assert kept.headers["x-request-id"] == "req-abc-123"


@pytest.mark.parametrize("stream", [False, True])
def test_http2_rest_has_no_grpc_trailers(stack: Stack, stream: bool) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is needed for an HTTP/2 REST client")
    body = json.dumps({"model": "dev-echo", "messages": HELLO, "stream": stream})
    out = subprocess.run(
        [
            curl,
            "-sv",
            "--http2-prior-knowledge",
            "-H",
            "content-type: application/json",
            "-H",
            f"authorization: Bearer {ADMIN_KEY}",
            "-d",
            body,
            stack.base_url + "/chat/completions",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    received = [line[2:].lower() for line in out.stderr.splitlines() if line.startswith("< ")]
    assert received[0].startswith("http/2 200")
    assert not [h for h in received if h.startswith("grpc-")], received
    assert "dev-echo" in out.stdout


@pytest.mark.parametrize("stream", [False, True])
def test_request_id_reaches_the_upstream(stack: Stack, stream: bool) -> None:
    body = {"model": "dev-echo", "messages": HELLO, "stream": stream}
    reply = request(stack.base_url + "/chat/completions", body, headers={"x-request-id": f"trace-{stream}"})
    assert reply.status == 200
    assert upstream_last_request(stack.upstream_url)["headers"]["x-request-id"] == f"trace-{stream}"
    generated = request(stack.base_url + "/chat/completions", body)
    assert upstream_last_request(stack.upstream_url)["headers"]["x-request-id"] == generated.headers["x-request-id"]
