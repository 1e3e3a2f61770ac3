"""The dev upstream, driven over real sockets by the official openai SDK and by raw HTTP.

Every body and stream chunk is validated as wire bytes against OpenAI's published schemas, so
the upstream cannot drift from what the adapter will meet in production.
"""

from __future__ import annotations

import base64
import json
import math
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from tests.support.openapi import validate
from tests.support.procs import Upstream, free_port

GREETING = "Hello from the GhostLLM development upstream. You said:"
USER: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the weather in Paris"},
]
WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days", "metric", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_time",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}, "precise": {"type": ["boolean", "null"]}},
            "required": ["zone", "precise"],
            "additionalProperties": False,
        },
    },
}
WEATHER_ARGS = {"city": "What is the weather in Paris", "days": 1, "metric": True, "unit": "celsius"}
TIME_ARGS = {"zone": "What is the weather in Paris", "precise": True}


def _start(*extra: str) -> Upstream:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ghostllm.devupstream", "--port", str(port), *extra],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 10)
        line = process.stdout.readline().decode() if ready else ""
        assert line.strip() == (f"ghostllm dev-upstream (development only) listening on http://127.0.0.1:{port}/v1"), (
            f"dev upstream did not start: {line!r}"
        )
    except BaseException:
        _stop(process, signal.SIGKILL)
        raise
    return Upstream(port, process)


def _stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> int:
    if process.poll() is None:
        os.kill(process.pid, sig)
    try:
        return process.wait(5)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(5)
        raise
    finally:
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = _start()
    try:
        yield server
    finally:
        code = _stop(server.proc)
    assert code == 0, f"dev upstream exited with {code} on SIGTERM"


@pytest.fixture(scope="module")
def client(upstream: Upstream) -> Iterator[openai.OpenAI]:
    # Shadows the gateway client of tests/conftest.py: these tests talk to the upstream directly.
    with openai.OpenAI(base_url=f"{upstream.url}/v1", api_key="x", max_retries=0, timeout=5) as c:
        yield c


# helpers


def _http(
    upstream: Upstream, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(upstream.url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def _stats(upstream: Upstream) -> dict[str, Any]:
    status, _, raw = _http(upstream, "GET", "/_dev/stats")
    assert status == 200
    stats: dict[str, Any] = json.loads(raw)
    return stats


def _wait_for(upstream: Upstream, key: str, at_least: int) -> dict[str, Any]:
    deadline = time.monotonic() + 3
    while True:
        stats = _stats(upstream)
        if stats[key] >= at_least or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


def _raw_request(upstream: Upstream, body: object, path: str = "/v1/chat/completions") -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", upstream.port), timeout=5)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def _read_all(sock: socket.socket, until: bytes | None = None) -> bytes:
    """Everything until the peer closes, or until the bytes end with `until` (kept-alive connections)."""
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
        if until is not None and raw.endswith(until):
            break
    return raw


def _sse_payloads(lines: Iterator[str]) -> list[Any]:
    """JSON of each ``data:`` event, checking the stream ends with exactly one [DONE]."""
    data = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    assert data and data[-1] == "[DONE]", data[-3:]
    assert "[DONE]" not in data[:-1]
    return [json.loads(d) for d in data[:-1]]


def _chat_stream(client: openai.OpenAI, **kwargs: Any) -> list[Any]:
    with client.chat.completions.with_streaming_response.create(stream=True, **kwargs) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = _sse_payloads(response.iter_lines())
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    return chunks


# models


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    raw = client.models.with_raw_response.list()
    validate("ListModelsResponse", json.loads(raw.content))
    models = list(raw.parse())
    assert [m.id for m in models] == ["dev-echo", "dev-embed"]
    assert {m.owned_by for m in models} == {"ghostllm-dev"}

    one = client.models.with_raw_response.retrieve("dev-echo")
    validate("Model", json.loads(one.content))
    assert one.parse().id == "dev-echo"

    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    validate("ErrorResponse", missing.value.response.json())
    assert missing.value.code == "model_not_found"


# chat


def test_chat_non_stream(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="dev-echo", messages=USER, extra_headers={"x-trace": "t1"}
    )
    validate("CreateChatCompletionResponse", json.loads(raw.content))
    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-dev-")
    assert completion.model == "dev-echo"
    assert completion.system_fingerprint == "ghostllm-dev"
    choice = completion.choices[0]
    assert choice.message.content == f"{GREETING} What is the weather in Paris"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (8, 14)
    assert completion.usage.total_tokens == 22


def test_chat_n_max_tokens_and_stop(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="m", messages=USER, n=3, max_tokens=3)
    validate("CreateChatCompletionResponse", json.loads(raw.content))
    completion = raw.parse()
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {"Hello from the"}
    assert {c.finish_reason for c in completion.choices} == {"length"}
    assert completion.usage is not None and completion.usage.completion_tokens == 9

    stopped = client.chat.completions.create(
        model="m", messages=USER, stop=["upstream", "Hello"], max_completion_tokens=100
    )
    assert stopped.choices[0].message.content == ""
    assert stopped.choices[0].finish_reason == "stop"
    stopped = client.chat.completions.create(model="m", messages=USER, stop="weather")
    assert stopped.choices[0].message.content == f"{GREETING} What is the "


def test_chat_content_parts(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": "this"},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content == f"{GREETING} describe this"


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream(client: openai.OpenAI, include_usage: bool) -> None:
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = _chat_stream(client, model="dev-echo", messages=USER, **options)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert len({c["id"] for c in chunks}) == 1
    if include_usage:
        assert all("usage" in c for c in chunks)
        assert all(c["usage"] is None for c in chunks[:-1])
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["total_tokens"] == 22
        chunks = chunks[:-1]
    else:
        assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert pieces[:2] == ["Hello ", "from "]
    assert "".join(pieces) == f"{GREETING} What is the weather in Paris"

    # The SDK's own SSE parsing must accept the same stream.
    text = ""
    for chunk in client.chat.completions.create(model="dev-echo", messages=USER, stream=True, **options):
        text += "".join(c.delta.content or "" for c in chunk.choices)
    assert text == "".join(pieces)


def test_chat_stream_interleaves_choices(client: openai.OpenAI) -> None:
    chunks = _chat_stream(client, model="m", messages=USER, n=2, max_tokens=2)
    indexes = [c["choices"][0]["index"] for c in chunks]
    assert indexes == [0, 1] * (len(indexes) // 2)
    assert [c["choices"][0]["finish_reason"] for c in chunks[-2:]] == ["length", "length"]


# tools


def test_tool_call_non_stream(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="m", messages=USER, tools=[WEATHER])
    validate("CreateChatCompletionResponse", json.loads(raw.content))
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].type == "function"
    assert calls[0].id.startswith("call_dev_")
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == WEATHER_ARGS


def test_tool_choice_variants(client: openai.OpenAI) -> None:
    def names(**kwargs: Any) -> list[str]:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=USER, **kwargs)
        validate("CreateChatCompletionResponse", json.loads(raw.content))
        calls = raw.parse().choices[0].message.tool_calls or []
        return [c.function.name for c in calls if c.type == "function"]

    assert names(tools=[WEATHER, TIME]) == ["get_weather", "get_time"]
    assert names(tools=[WEATHER, TIME], parallel_tool_calls=False) == ["get_weather"]
    assert names(tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}}) == [
        "get_time"
    ]
    assert names(tools=[WEATHER, TIME], tool_choice="none") == []


def test_tool_result_answer(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m",
        tools=[WEATHER],
        messages=[
            *USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
        ],
    )
    assert completion.choices[0].message.content == "Tool said: sunny, 21C"
    assert completion.choices[0].finish_reason == "stop"


def test_tool_call_stream(client: openai.OpenAI) -> None:
    chunks = _chat_stream(client, model="m", messages=USER, tools=[WEATHER, TIME])
    first = chunks[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["content"] is None
    opening = {"index": 0, "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    assert first["tool_calls"] == [{**opening, "id": first["tool_calls"][0]["id"]}]
    second = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    assert [call["function"].get("name") for call in second if "id" in call] == ["get_time"]
    fragments = [
        call["function"]["arguments"]
        for c in chunks
        for call in c["choices"][0]["delta"].get("tool_calls", [])
        if call["index"] == 0 and "id" not in call
    ]
    assert all(len(f) <= 8 for f in fragments)
    assert json.loads("".join(fragments)) == WEATHER_ARGS
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    # The SDK's stream helper reassembles the fragments of both parallel calls.
    with client.chat.completions.stream(model="m", messages=USER, tools=[WEATHER, TIME]) as stream:
        done_events = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert [(e.name, e.parsed_arguments) for e in done_events] == [
        ("get_weather", WEATHER_ARGS),
        ("get_time", TIME_ARGS),
    ]
    calls = final.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments) for c in calls] == [WEATHER_ARGS, TIME_ARGS]
    assert final.choices[0].finish_reason == "tool_calls"


# legacy completions


def test_completions(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model="m", prompt=["one two", "three"], n=2)
    validate("CreateCompletionResponse", json.loads(raw.content))
    completion = raw.parse()
    assert completion.object == "text_completion"
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert [c.text for c in completion.choices][1:3] == [f"{GREETING} one two", f"{GREETING} three"]
    assert completion.usage is not None and completion.usage.prompt_tokens == 3


def test_completions_stream(client: openai.OpenAI) -> None:
    with client.completions.with_streaming_response.create(
        model="m", prompt="say hi", stream=True, max_tokens=4, stream_options={"include_usage": True}
    ) as response:
        chunks = _sse_payloads(response.iter_lines())
    for chunk in chunks:
        validate("CreateCompletionResponse", _as_final_completion(chunk))
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "Hello from the GhostLLM"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


def _as_final_completion(chunk: dict[str, Any]) -> dict[str, Any]:
    """The spec reuses the non-streaming schema for legacy completion chunks, so it cannot express
    the nulls OpenAI (and this upstream) send mid-stream: ``finish_reason`` until a choice ends
    and ``usage`` before the usage chunk. Everything else is validated as sent."""
    assert set(chunk) >= {"id", "object", "created", "model", "choices"}
    choices = [c if c["finish_reason"] is not None else {**c, "finish_reason": "stop"} for c in chunk["choices"]]
    snapshot = {**chunk, "choices": choices}
    if snapshot.get("usage", 0) is None:
        del snapshot["usage"]
    return snapshot


# embeddings


def test_embeddings_base64_default(client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="dev-embed", input=["alpha", "beta gamma"])
    assert json.loads(raw.http_request.content)["encoding_format"] == "base64"
    body = json.loads(raw.content)
    # The spec only models float arrays; base64 is the same little-endian float32 vector encoded.
    for item in body["data"]:
        packed = base64.b64decode(item["embedding"])
        item["embedding"] = list(struct.unpack(f"<{len(packed) // 4}f", packed))
    validate("CreateEmbeddingResponse", body)
    parsed = raw.parse()
    assert [len(d.embedding) for d in parsed.data] == [8, 8]
    assert math.isclose(sum(x * x for x in parsed.data[0].embedding), 1.0, rel_tol=1e-5)
    assert parsed.usage.prompt_tokens == 3

    floats = client.embeddings.with_raw_response.create(
        model="dev-embed", input=["alpha", "beta gamma"], encoding_format="float"
    )
    validate("CreateEmbeddingResponse", json.loads(floats.content))
    assert [d.embedding for d in floats.parse().data] == [d.embedding for d in parsed.data]


def test_embeddings_shapes(client: openai.OpenAI) -> None:
    tokens = client.embeddings.create(model="e", input=[1, 2, 3], dimensions=4, encoding_format="float")
    assert [len(d.embedding) for d in tokens.data] == [4]
    assert tokens.usage.prompt_tokens == 3
    batches = client.embeddings.create(model="e", input=[[1, 2], [3]], encoding_format="float")
    assert len(batches.data) == 2 and batches.data[0].embedding != batches.data[1].embedding
    again = client.embeddings.create(model="e", input=[[1, 2], [3]], encoding_format="float")
    assert [d.embedding for d in again.data] == [d.embedding for d in batches.data]


# errors and failure scenarios


def test_http_errors(upstream: Upstream) -> None:
    status, _, raw = _http(upstream, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400
    validate("ErrorResponse", json.loads(raw))
    status, _, raw = _http(upstream, "GET", "/v1/nothing-here")
    assert status == 404
    validate("ErrorResponse", json.loads(raw))
    assert json.loads(raw)["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [
        (400, "invalid_request_error", None),
        (401, "invalid_request_error", "invalid_api_key"),
        (429, "requests", "rate_limit_exceeded"),
        (500, "server_error", None),
        (503, "server_error", None),
    ],
)
def test_error_scenarios(upstream: Upstream, status: int, error_type: str, code: str | None) -> None:
    body = {"model": f"error-{status}", "messages": [{"role": "user", "content": "x"}]}
    got, headers, raw = _http(upstream, "POST", "/v1/chat/completions", body)
    assert got == status
    error = json.loads(raw)
    validate("ErrorResponse", error)
    assert (error["error"]["type"], error["error"]["code"]) == (error_type, code)
    assert headers.get("retry-after") == ("7" if status == 429 else None)


def test_sdk_maps_error_scenarios(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="error-429", messages=USER)
    with pytest.raises(openai.AuthenticationError):
        client.embeddings.create(model="error-401", input="x")
    with pytest.raises(openai.InternalServerError):
        client.completions.create(model="error-503", prompt="x")


def test_reset_sends_rst(upstream: Upstream) -> None:
    with _raw_request(upstream, {"model": "reset", "messages": USER}) as sock, pytest.raises(ConnectionResetError):
        _read_all(sock)


def test_cut_stream_ends_without_done(upstream: Upstream, client: openai.OpenAI) -> None:
    with _raw_request(upstream, {"model": "cut-stream", "messages": USER, "stream": True}) as sock:
        raw = _read_all(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.count(b"data: {") == 3
    assert b"[DONE]" not in raw and not raw.endswith(b"0\r\n\r\n")

    with pytest.raises(openai.APIConnectionError):
        for _ in client.chat.completions.create(model="cut-stream", messages=USER, stream=True):
            pass


def test_garbage_sse(upstream: Upstream) -> None:
    with _raw_request(upstream, {"model": "garbage-sse", "messages": USER, "stream": True}) as sock:
        sock.shutdown(socket.SHUT_WR)
        raw = _read_all(sock)
    assert b"data: this is not json\n\n" in raw and raw.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    status, headers, body = _http(upstream, "POST", "/v1/chat/completions", {"model": "garbage-sse", "messages": USER})
    assert status == 200 and headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


def test_slow_and_hang(upstream: Upstream) -> None:
    started = time.monotonic()
    status, _, _ = _http(upstream, "POST", "/v1/chat/completions", {"model": "slow-200", "messages": USER})
    assert status == 200 and time.monotonic() - started >= 0.2

    before = _stats(upstream)["cancelled_requests"]
    with _raw_request(upstream, {"model": "hang", "messages": USER}) as sock:
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)
    assert _wait_for(upstream, "cancelled_requests", before + 1)["cancelled_requests"] == before + 1


def test_client_disconnect_cancels_stream(upstream: Upstream) -> None:
    before = _stats(upstream)
    with _raw_request(upstream, {"model": "slow-chunks-50", "messages": USER, "stream": True}) as sock:
        assert b"data: {" in sock.recv(65536)
        assert _stats(upstream)["active_streams"] == before["active_streams"] + 1
    after = _wait_for(upstream, "cancelled_streams", before["cancelled_streams"] + 1)
    assert after["cancelled_streams"] == before["cancelled_streams"] + 1
    assert after["active_streams"] == before["active_streams"]
    assert after["completed_streams"] == before["completed_streams"]


def test_429_with_a_chosen_retry_after(upstream: Upstream) -> None:
    body = {"model": "error-429-after-2", "messages": USER}
    status, headers, _ = _http(upstream, "POST", "/v1/chat/completions", body)
    assert (status, headers.get("retry-after")) == (429, "2")


def _read_until_reset(sock: socket.socket) -> bytes:
    raw = b""
    with pytest.raises(ConnectionResetError):
        while chunk := sock.recv(65536):
            raw += chunk
    return raw


def test_reset_after_some_events(upstream: Upstream) -> None:
    with _raw_request(upstream, {"model": "reset-after-2", "messages": USER, "stream": True}) as sock:
        raw = _read_until_reset(sock)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.count(b"data: {") == 2 and b"[DONE]" not in raw
    with _raw_request(upstream, {"model": "reset-after-2", "messages": USER}) as sock:
        raw = _read_until_reset(sock)
    assert _part_of_an_answer(raw)


def _part_of_an_answer(raw: bytes) -> bool:
    """A 200 head and some of the body its content-length announces, not all of it."""
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head.startswith(b"HTTP/1.1 200 OK\r\n") and 0 < len(body) < length


def test_stall_after_some_events(upstream: Upstream) -> None:
    before = _stats(upstream)
    with _raw_request(upstream, {"model": "stall-after-3", "messages": USER, "stream": True}) as sock:
        raw = b""
        while raw.count(b"data: {") < 3:
            raw += sock.recv(65536)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # silence, the connection still open
        assert _stats(upstream)["active_streams"] == before["active_streams"] + 1
    after = _wait_for(upstream, "cancelled_streams", before["cancelled_streams"] + 1)
    assert after["cancelled_streams"] == before["cancelled_streams"] + 1
    assert after["active_streams"] == before["active_streams"]
    assert raw.count(b"data: {") == 3 and b"[DONE]" not in raw

    with _raw_request(upstream, {"model": "stall-after-3", "messages": USER}) as sock:
        raw = sock.recv(65536)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        assert _part_of_an_answer(raw)
        assert _stats(upstream)["waiting_requests"] == before["waiting_requests"] + 1
    after = _wait_for(upstream, "cancelled_requests", before["cancelled_requests"] + 1)
    assert after["cancelled_requests"] == before["cancelled_requests"] + 1
    assert after["waiting_requests"] == before["waiting_requests"]


def test_paced_stream_ends_in_one_write(upstream: Upstream) -> None:
    """Only generated chunks are paced: the usage chunk and [DONE] come with the last one."""
    body = {"model": "slow-chunks-50", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    with _raw_request(upstream, body) as sock:
        raw = _read_all(sock, until=b"0\r\n\r\n")
    http_chunks = raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n")[1::2]
    last_write = [e for e in http_chunks if e][-1]
    assert b'"finish_reason":"stop"' in last_write and b'"usage":{' in last_write
    assert last_write.endswith(b"data: [DONE]\n\n")


def test_keep_alive_and_pipelining(upstream: Upstream) -> None:
    request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", upstream.port), timeout=5) as sock:
        sock.sendall(request * 2 + b"GET /v1/models/dev-echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = _read_all(sock)
    assert raw.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert raw.endswith(b'"owned_by":"ghostllm-dev"}')


def test_dev_stats_records_last_request(upstream: Upstream) -> None:
    _http(upstream, "POST", "/_dev/reset")
    body = {"model": "dev-echo", "messages": [{"role": "user", "content": "hi"}]}
    _http(upstream, "POST", "/v1/chat/completions?trace=1", body, {"Authorization": "Bearer sk-test", "X-Extra": "1"})
    stats = _stats(upstream)
    assert stats["requests"] == 1
    last = stats["last_request"]
    assert (last["method"], last["path"], last["body"]) == ("POST", "/v1/chat/completions?trace=1", body)
    assert last["headers"]["authorization"] == "Bearer sk-test"
    assert last["headers"]["x-extra"] == "1"
    status, _, raw = _http(upstream, "POST", "/_dev/reset")
    assert status == 200 and json.loads(raw)["requests"] == 0 and json.loads(raw)["last_request"] is None


def test_chunk_delay_flag_and_sigint() -> None:
    server = _start("--chunk-delay-ms", "20")
    try:
        started = time.monotonic()
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=5) as client:
            chunks = _chat_stream(client, model="m", messages=USER, max_tokens=3)
        # Role chunk, three words, finish chunk and [DONE]: five pauses between six events.
        assert len(chunks) == 5 and time.monotonic() - started >= 0.1
        assert _stats(server)["completed_streams"] == 1
    finally:
        code = _stop(server.proc, signal.SIGINT)
    assert code == 0
