"""Native gRPC clients (grpcio) through Envoy: typed RPCs, health and reflection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.internal import encoder
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from ghostllm.v1 import (
    chat_pb2,
    chat_pb2_grpc,
    completions_pb2,
    completions_pb2_grpc,
    embeddings_pb2,
    embeddings_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    openai_pb2,
)
from tests.support.auth import authorized
from tests.support.procs import Stack


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with authorized(grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")) as ch:
        yield ch


def text(value: str) -> struct_pb2.Value:
    return struct_pb2.Value(string_value=value)


def user(text: str) -> openai_pb2.ChatMessage:
    return openai_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value=text))


def test_unary_chat(channel: grpc.Channel) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    reply = stub.CreateChatCompletion(chat_pb2.ChatCompletionRequest(model="dev-echo", messages=[user("hi grpc")]))
    assert reply.model == "dev-echo" and reply.object == "chat.completion"
    assert reply.choices[0].message.content.endswith("hi grpc")
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0


def test_streaming_chat(channel: grpc.Channel) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    req = chat_pb2.ChatCompletionRequest(
        model="dev-echo", messages=[user("hi grpc")], stream_options=openai_pb2.StreamOptions(include_usage=True)
    )
    chunks = list(stub.StreamChatCompletion(req))
    text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    assert text.endswith("hi grpc")
    assert chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices


def test_streaming_tool_calls(channel: grpc.Channel) -> None:
    params = struct_pb2.Struct()
    params.update({"type": "object", "properties": {"city": {"type": "string"}}})
    tool = openai_pb2.Tool(type="function", function=openai_pb2.FunctionDefinition(name="weather", parameters=params))
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    chunks = list(
        stub.StreamChatCompletion(
            chat_pb2.ChatCompletionRequest(model="dev-echo", messages=[user("Oslo")], tools=[tool])
        )
    )
    args = "".join(tc.function.arguments for c in chunks for ch in c.choices for tc in ch.delta.tool_calls)
    assert args == '{"city": "Oslo"}' or args.replace(" ", "") == '{"city":"Oslo"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_completion_models_embeddings(channel: grpc.Channel) -> None:
    comp = completions_pb2_grpc.CompletionServiceStub(channel).CreateCompletion(
        completions_pb2.CompletionRequest(model="dev-echo", prompt=struct_pb2.Value(string_value="hello"))
    )
    assert comp.choices[0].text
    models = models_pb2_grpc.ModelServiceStub(channel).ListModels(models_pb2.ListModelsRequest())
    assert "dev-echo" in [m.id for m in models.data]
    emb = embeddings_pb2_grpc.EmbeddingServiceStub(channel).CreateEmbedding(
        embeddings_pb2.EmbeddingRequest(model="dev-embed", input=struct_pb2.Value(string_value="x"))
    )
    assert len(emb.data[0].embedding) == 8


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("nope", grpc.StatusCode.NOT_FOUND),
        ("error-429", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("error-500", grpc.StatusCode.UNAVAILABLE),
        ("too-slow", grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_status_codes(channel: grpc.Channel, model: str, code: grpc.StatusCode) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    with pytest.raises(grpc.RpcError) as exc:
        stub.CreateChatCompletion(chat_pb2.ChatCompletionRequest(model=model, messages=[user("x")]))
    assert exc.value.code() == code
    with pytest.raises(grpc.RpcError) as exc:
        list(stub.StreamChatCompletion(chat_pb2.ChatCompletionRequest(model=model, messages=[user("x")])))
    assert exc.value.code() == code


def test_invalid_argument(channel: grpc.Channel) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    with pytest.raises(grpc.RpcError) as exc:
        stub.CreateChatCompletion(chat_pb2.ChatCompletionRequest(model="dev-echo", temperature=9, messages=[user("x")]))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "temperature" in (exc.value.details() or "")


def test_health(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "ghostllm.v1.ChatService"):
        assert (
            stub.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
        )


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection(channel: grpc.Channel, version: str) -> None:
    # grpcurl asks v1 first; grpcio-reflection's stub speaks v1alpha, whose messages are v1's on the wire.
    info: Any = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"ghostllm.v1.ChatService", "ghostllm.v1.CompletionService", "grpc.health.v1.Health"} <= names
    # The REST bridge is internal: not advertised to gRPC clients.
    assert "ghostllm.v1.RestBridge" not in names


def test_typed_streaming_completion(channel: grpc.Channel) -> None:
    stub = completions_pb2_grpc.CompletionServiceStub(channel)
    chunks = list(stub.StreamCompletion(completions_pb2.CompletionRequest(model="dev-echo", prompt=text("Say hi"))))
    assert chunks and all(c.object == "text_completion" and c.model == "dev-echo" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def send_raw(channel: grpc.Channel, payload: bytes) -> grpc.StatusCode:
    """CreateChatCompletion with these bytes as the request message; the status it fails with."""
    raw: Any = channel.unary_unary(
        "/ghostllm.v1.ChatService/CreateChatCompletion",
        request_serializer=lambda b: b,
        response_deserializer=chat_pb2.ChatCompletion.FromString,
    )
    with pytest.raises(grpc.RpcError) as exc:
        raw(payload)
    code: grpc.StatusCode = exc.value.code()
    return code


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff garbage",
        # field 1 (model), a string holding invalid UTF-8
        b"\x0a\x02\xc3\x28",
    ],
)
def test_undecodable_request_is_invalid_argument(channel: grpc.Channel, payload: bytes) -> None:
    assert send_raw(channel, payload) == grpc.StatusCode.INVALID_ARGUMENT


def test_too_deep_request_is_invalid_argument(channel: grpc.Channel) -> None:
    # 120 levels of list nesting, beyond protobuf's decode depth (100), written as raw bytes
    # because the client's own protobuf refuses to build it.
    def field(number: int, payload: bytes) -> bytes:
        return bytes(encoder._VarintBytes(number << 3 | 2) + encoder._VarintBytes(len(payload)) + payload)

    deep = b""
    for _ in range(120):
        deep = field(6, field(1, deep))  # Value.list_value -> ListValue.values -> Value
    message = field(1, b"user") + field(2, deep)
    payload = field(1, b"dev-echo") + field(2, message)
    assert send_raw(channel, payload) == grpc.StatusCode.INVALID_ARGUMENT
