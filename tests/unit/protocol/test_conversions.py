"""ghostllm.protocol: typed requests to OpenAI JSON (checked by the rules REST bodies are), and
upstream JSON to typed replies."""

from __future__ import annotations

import base64
import struct

import pytest
from google.protobuf import json_format

from ghostllm.errors import InvalidRequest, ProviderError
from ghostllm.protocol.chat import (
    chat_chunk_to_proto,
    chat_completion_to_proto,
    chat_request_from_proto,
    check_chat_request,
)
from ghostllm.protocol.common import Json, from_upstream, parse_json_body
from ghostllm.protocol.embeddings import (
    as_base64,
    check_embedding_request,
    embedding_request_from_proto,
    embedding_response_to_proto,
)
from ghostllm.v1 import chat_pb2, embeddings_pb2


def chat_request_to_openai(req: chat_pb2.ChatCompletionRequest) -> Json:
    return check_chat_request(chat_request_from_proto(req))


def embedding_request_to_openai(req: embeddings_pb2.EmbeddingRequest) -> Json:
    return check_embedding_request(embedding_request_from_proto(req))


def parse(body: dict[str, object]) -> chat_pb2.ChatCompletionRequest:
    # json_format parses like Envoy's transcoder does (proto3 JSON mapping).
    return json_format.ParseDict(body, chat_pb2.ChatCompletionRequest())


def test_request_round_trip_keeps_types() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": None},
        ],
        "seed": 7,
        "n": 1,
        "temperature": 0,
        "stop": "x",
        "tool_choice": "auto",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
    }
    out = chat_request_to_openai(parse(body))
    assert out["messages"] == body["messages"]
    assert out["seed"] == 7 and isinstance(out["seed"], int)
    assert out["temperature"] == 0  # an explicit zero is kept
    assert out["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert "top_p" not in out and "stream" not in out


def test_unset_optional_fields_are_not_sent() -> None:
    out = chat_request_to_openai(parse({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
    assert out == {"model": "m", "messages": [{"role": "user", "content": "x"}]}


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 1.5},
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}},
    ],
)
def test_invalid(body: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        chat_request_to_openai(parse(body))


def test_embedding_input_shapes() -> None:
    for good in ("a", ["a", "b"], [1, 2], [[1], [2, 3]]):
        req = json_format.ParseDict({"model": "e", "input": good}, embeddings_pb2.EmbeddingRequest())
        assert embedding_request_to_openai(req)["input"] == good
    bad_inputs: list[object] = [[], [[]], ["a", 1], {"a": 1}]
    for bad in bad_inputs:
        req = json_format.ParseDict({"model": "e", "input": bad}, embeddings_pb2.EmbeddingRequest())
        with pytest.raises(InvalidRequest):
            embedding_request_to_openai(req)


def test_typed_replies() -> None:
    reply = chat_completion_to_proto(
        {
            "id": "c",
            "created": 5,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                    },
                }
            ],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
        }
    )
    assert not reply.choices[0].message.HasField("content")
    assert reply.choices[0].message.tool_calls[0].function.name == "f"
    assert reply.usage.total_tokens == 5
    chunk = chat_chunk_to_proto({"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": None}]})
    assert chunk.choices[0].delta.HasField("content") and chunk.choices[0].finish_reason == ""
    emb = embedding_response_to_proto({"data": [{"index": 0, "embedding": "AACAPw=="}]})  # base64 of 1.0f
    assert list(emb.data[0].embedding) == [1.0]


def test_malformed_upstream_answers_are_provider_errors() -> None:
    with pytest.raises(ProviderError):
        from_upstream(chat_completion_to_proto, {"choices": "nope"})


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 1.5},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
        {"model": 5, "messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "messages": ["x"]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
    ],
)
def test_rest_bodies_are_checked_like_typed_requests(body: Json) -> None:
    with pytest.raises(InvalidRequest):
        check_chat_request(body)


def test_extra_parameters_become_top_level_fields() -> None:
    req = parse({"model": "m", "messages": [{"role": "user", "content": "x"}], "extra": {"prediction": {"a": 1}}})
    assert chat_request_to_openai(req)["prediction"] == {"a": 1}
    clash = parse({"model": "m", "messages": [{"role": "user", "content": "x"}], "extra": {"temperature": 1}})
    with pytest.raises(InvalidRequest, match=r"extra\.temperature"):
        chat_request_to_openai(clash)


@pytest.mark.parametrize("raw", [b'{"model": "m",}', b'{"model": "\\q"}', b"[1]", b"", b"\xff"])
def test_rest_json_is_strict(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_json_body(raw)


def test_float_vectors_packed_as_base64_as_openai_does() -> None:
    vector = [0.5, -1.25, 3.0]
    reply = {"data": [{"index": 0, "embedding": vector}, {"index": 1, "embedding": "AAAAPw=="}]}
    packed = as_base64(reply)["data"]
    raw = base64.b64decode(packed[0]["embedding"])
    assert struct.unpack("<3f", raw) == (0.5, -1.25, 3.0)  # float32, little-endian
    assert packed[1]["embedding"] == "AAAAPw=="  # already base64: kept
    # What the typed reply decodes, the same vector back.
    assert list(embedding_response_to_proto({"data": packed[:1]}).data[0].embedding) == vector
