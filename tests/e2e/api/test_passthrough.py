"""Requests arrive whole: fields the proto does not model reach the upstream unchanged, JSON is
parsed strictly, and deep JSON is accepted up to a documented limit (issue 6)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import openai
import pytest
from google.protobuf import struct_pb2

from ghostllm.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    completions_pb2,
    completions_pb2_grpc,
    embeddings_pb2,
    embeddings_pb2_grpc,
    openai_pb2,
)
from tests.support.auth import authorized
from tests.support.http import check_error, request, upstream_last_request, upstream_stats
from tests.support.openapi import validate
from tests.support.procs import Stack

HELLO = [{"role": "user", "content": "hi there"}]
# A parameter OpenAI might add tomorrow: any JSON, forwarded as sent.
FUTURE = {"x_future_param": {"mode": "fast", "weights": [1, 2.5, None, True], "empty": {}, "text": "é✓"}}
FUNCTIONS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
# Chat fields the proto does not model, as the SDK sends them.
CHAT_EXTRAS: dict[str, Any] = {
    "functions": FUNCTIONS,
    "function_call": {"name": "get_weather"},
    "prediction": {"type": "content", "content": "Hello from the GhostLLM"},
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "wav"},
}


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with authorized(grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")) as ch:
        yield ch


def reset(stack: Stack) -> None:
    assert request(stack.upstream_url + "/_dev/reset", b"").status == 200


def upstream_requests(stack: Stack) -> int:
    return int(upstream_stats(stack.upstream_url)["requests"])


def upstream_body(stack: Stack) -> dict[str, Any]:
    seen = upstream_last_request(stack.upstream_url)
    assert seen is not None, "the upstream was not called"
    body: dict[str, Any] = seen["body"]
    return body


def assert_forwarded(stack: Stack, sent: dict[str, Any]) -> dict[str, Any]:
    """The upstream was called once and got every one of `sent`'s fields unchanged."""
    assert upstream_requests(stack) == 1
    body = upstream_body(stack)
    for key, value in sent.items():
        assert key in body, f"{key} did not reach the upstream"
        assert body[key] == value, key
    return body


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def user(text: str) -> openai_pb2.ChatMessage:
    return openai_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value=text))


# 1. fields we do not model, over REST


@pytest.mark.parametrize("stream", [False, True])
def test_chat_unmodelled_fields_reach_upstream(client: openai.OpenAI, stack: Stack, stream: bool) -> None:
    reset(stack)
    kwargs: dict[str, Any] = {"model": "gpt-test", "messages": HELLO, **CHAT_EXTRAS, "extra_body": FUTURE}
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        completion = client.chat.completions.create(**kwargs)
        assert completion.model == "gpt-test"
        text = completion.choices[0].message.content or ""
    assert "hi there" in text
    body = assert_forwarded(stack, {**CHAT_EXTRAS, **FUTURE, "messages": HELLO})
    # The model is still swapped for the upstream's name, and stream follows the client.
    assert body["model"] == "dev-echo"
    assert body.get("stream", False) is stream


@pytest.mark.parametrize("stream", [False, True])
def test_completions_unmodelled_fields_reach_upstream(client: openai.OpenAI, stack: Stack, stream: bool) -> None:
    reset(stack)
    extras = {**FUTURE, "x_provider_hint": ["a", {"b": 1}]}
    if stream:
        chunks = list(client.completions.create(model="dev-echo", prompt="say hi", stream=True, extra_body=extras))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    else:
        text = client.completions.create(model="dev-echo", prompt="say hi", extra_body=extras).choices[0].text
    assert "say hi" in text
    body = assert_forwarded(stack, {**extras, "prompt": "say hi"})
    assert body.get("stream", False) is stream


def test_embeddings_unmodelled_fields_reach_upstream(client: openai.OpenAI, stack: Stack) -> None:
    reset(stack)
    result = client.embeddings.create(model="dev-embed", input="x", extra_body=FUTURE)
    assert len(result.data) == 1
    assert_forwarded(stack, {**FUTURE, "input": "x"})


def test_raw_rest_body_is_forwarded_as_sent(stack: Stack) -> None:
    """Not only what the SDK knows: any top-level field of a raw body goes upstream."""
    reset(stack)
    sent = {"model": "dev-echo", "messages": HELLO, **CHAT_EXTRAS, **FUTURE, "user": "u-1"}
    reply = request(stack.base_url + "/chat/completions", sent)
    assert reply.status == 200, reply.body[:500]
    validate("CreateChatCompletionResponse", reply.json())
    assert_forwarded(stack, sent)


# 1. fields we do not model, over gRPC: the `extra` Struct


def test_grpc_chat_extra_is_sent_as_top_level_fields(channel: grpc.Channel, stack: Stack) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    extras = {**CHAT_EXTRAS, **FUTURE}
    req = chat_pb2.ChatCompletionRequest(model="gpt-test", messages=[user("hi grpc")], extra=struct(extras))

    reset(stack)
    reply = stub.CreateChatCompletion(req)
    assert reply.choices[0].message.content.endswith("hi grpc")
    body = assert_forwarded(stack, extras)
    assert "extra" not in body and body["model"] == "dev-echo"

    reset(stack)
    chunks = list(stub.StreamChatCompletion(req))
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices).endswith("hi grpc")
    body = assert_forwarded(stack, extras)
    assert "extra" not in body and body["stream"] is True


def test_grpc_completion_and_embedding_extra(channel: grpc.Channel, stack: Stack) -> None:
    reset(stack)
    completion = completions_pb2_grpc.CompletionServiceStub(channel).CreateCompletion(
        completions_pb2.CompletionRequest(
            model="dev-echo", prompt=struct_pb2.Value(string_value="hello"), extra=struct(FUTURE)
        )
    )
    assert completion.choices[0].text
    assert "extra" not in assert_forwarded(stack, FUTURE)

    reset(stack)
    embedding = embeddings_pb2_grpc.EmbeddingServiceStub(channel).CreateEmbedding(
        embeddings_pb2.EmbeddingRequest(
            model="dev-embed", input=struct_pb2.Value(string_value="x"), extra=struct(FUTURE)
        )
    )
    assert len(embedding.data) == 1
    assert "extra" not in assert_forwarded(stack, FUTURE)


@pytest.mark.parametrize("key", ["temperature", "messages", "model", "stream", "extra"])
def test_grpc_extra_naming_a_modelled_field_is_invalid(channel: grpc.Channel, stack: Stack, key: str) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    req = chat_pb2.ChatCompletionRequest(model="dev-echo", messages=[user("x")], extra=struct({key: 0.5}))
    reset(stack)
    with pytest.raises(grpc.RpcError) as exc:
        stub.CreateChatCompletion(req)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"extra.{key}" in (exc.value.details() or "")
    with pytest.raises(grpc.RpcError) as exc:
        list(stub.StreamChatCompletion(req))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert upstream_requests(stack) == 0


def test_grpc_extra_naming_a_modelled_completion_field_is_invalid(channel: grpc.Channel, stack: Stack) -> None:
    reset(stack)
    with pytest.raises(grpc.RpcError) as exc:
        completions_pb2_grpc.CompletionServiceStub(channel).CreateCompletion(
            completions_pb2.CompletionRequest(
                model="dev-echo", prompt=struct_pb2.Value(string_value="x"), extra=struct({"max_tokens": 3})
            )
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as exc:
        embeddings_pb2_grpc.EmbeddingServiceStub(channel).CreateEmbedding(
            embeddings_pb2.EmbeddingRequest(
                model="dev-embed", input=struct_pb2.Value(string_value="x"), extra=struct({"dimensions": 4})
            )
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert upstream_requests(stack) == 0


# 2. strict JSON


STRICT_CASES = [
    ("/chat/completions", b'{"model":"dev-echo","messages":[{"role":"user","content":"hi"}],}'),
    ("/chat/completions", b'{"model":"dev-echo","stream":true,"messages":[{"role":"user","content":"hi"}],}'),
    ("/chat/completions", b'{"model":"dev-echo","messages":[{"role":"user","content":"h\\qi"}]}'),
    ("/chat/completions", b'{"model":"dev-echo","stream":true,"messages":[{"role":"user","content":"h\\qi"}]}'),
    ("/completions", b'{"model":"dev-echo","prompt":"hi",}'),
    ("/completions", b'{"model":"dev-echo","prompt":"h\\qi"}'),
    ("/embeddings", b'{"model":"dev-embed","input":["a",],}'),
    ("/embeddings", b'{"model":"dev-embed","input":"\\q"}'),
]


@pytest.mark.parametrize(("path", "raw"), STRICT_CASES)
def test_strict_json(stack: Stack, path: str, raw: bytes) -> None:
    reset(stack)
    err = check_error(request(stack.base_url + path, raw), 400, "invalid_request_error", "invalid_json")
    assert err["param"] is None
    assert upstream_requests(stack) == 0


# 3. deep JSON


def nested_schema(levels: int) -> dict[str, Any]:
    """A JSON schema of `levels` nested objects (a deep structured-output schema)."""
    schema: dict[str, Any] = {"type": "string"}
    for i in range(levels):
        name = f"level{levels - i}"
        schema = {"type": "object", "properties": {name: schema}, "required": [name], "additionalProperties": False}
    return schema


DEEP_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "deep", "strict": True, "schema": nested_schema(64)},
}
DEEP_TOOL = {"type": "function", "function": {"name": "deep_tool", "parameters": nested_schema(64)}}


@pytest.mark.parametrize("stream", [False, True])
def test_deep_response_format(client: openai.OpenAI, stack: Stack, stream: bool) -> None:
    reset(stack)
    if stream:
        chunks = list(
            client.chat.completions.create(model="dev-echo", messages=HELLO, response_format=DEEP_FORMAT, stream=True)
        )
        assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    else:
        completion = client.chat.completions.create(model="dev-echo", messages=HELLO, response_format=DEEP_FORMAT)
        assert completion.choices[0].finish_reason == "stop"
    assert_forwarded(stack, {"response_format": DEEP_FORMAT})


def test_deep_tool_parameters(client: openai.OpenAI, stack: Stack) -> None:
    reset(stack)
    completion = client.chat.completions.create(model="dev-echo", messages=HELLO, tools=[DEEP_TOOL])
    calls = completion.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["deep_tool"]
    assert_forwarded(stack, {"tools": [DEEP_TOOL]})


def nested_list(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("x_future_param", nested_list(300)),
        (
            "response_format",
            '{"type":"json_schema","json_schema":{"name":"d","schema":{"a":' + nested_list(300) + "}}}",
        ),
        ("tools", '[{"type":"function","function":{"name":"f","parameters":{"a":' + nested_list(300) + "}}}]"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_too_deep_names_the_field(stack: Stack, field: str, value: str, stream: bool) -> None:
    head = json.dumps({"model": "dev-echo", "stream": stream, "messages": HELLO})[:-1]
    raw = f'{head}, "{field}": {value}}}'
    reset(stack)
    err = check_error(request(stack.base_url + "/chat/completions", raw.encode()), 400, "invalid_request_error")
    assert err["param"] == field, err
    assert err["code"] == "too_deep"
    assert field in err["message"]
    assert upstream_requests(stack) == 0


def test_grpc_deep_values_travel_in_extra_json(channel: grpc.Channel, stack: Stack) -> None:
    # A Struct this deep is beyond protobuf's decoder; as JSON text it is not.
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    extra = {"response_format": DEEP_FORMAT, "tools": [DEEP_TOOL]}
    req = chat_pb2.ChatCompletionRequest(model="dev-echo", messages=[user("deep")], extra_json=json.dumps(extra))
    reset(stack)
    reply = stub.CreateChatCompletion(req)
    assert reply.choices[0].finish_reason == "tool_calls"
    assert_forwarded(stack, extra)


@pytest.mark.parametrize(
    ("extra_json", "param"),
    [('{"temperature": 1}', "extra_json.temperature"), ("[1]", "extra_json"), ("{bad", "extra_json")],
)
def test_grpc_bad_extra_json_is_invalid(channel: grpc.Channel, stack: Stack, extra_json: str, param: str) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    req = chat_pb2.ChatCompletionRequest(model="dev-echo", messages=[user("x")], temperature=0.5, extra_json=extra_json)
    reset(stack)
    with pytest.raises(grpc.RpcError) as exc:
        stub.CreateChatCompletion(req)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and param in (exc.value.details() or "")
    assert upstream_requests(stack) == 0
