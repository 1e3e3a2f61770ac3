"""A sloppy provider and long strings never yield anything but our own, bounded errors (issue 6):
answers of the wrong shape and oversized answers are a 502, a provider's ~31 KB error message is
cut (its start kept) instead of breaking the trailer path, and a ~31 KB model name is a 404. Each
reached the upstream once (Envoy never retries a request a worker took, and routing does not
ask again for an answer it could not use) but the 500, which routing retries once on the same
deployment (routing.retries), and no worker restarted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import openai
import pytest
from google.protobuf import struct_pb2

from ghostllm.config import parse_config
from ghostllm.devupstream.faults import LONG_ERROR_CHARS, LONG_ERROR_END, LONG_ERROR_START
from ghostllm.v1 import chat_pb2, chat_pb2_grpc, embeddings_pb2, embeddings_pb2_grpc, openai_pb2
from tests.support.auth import authorized
from tests.support.http import Reply, check_error, request, upstream_stats
from tests.support.procs import Stack

HELLO = [{"role": "user", "content": "hi"}]
MIB = 1024 * 1024
# Far below the ~31 KB that broke the trailer path, far above any message we write ourselves.
MESSAGE_BOUND = 2048
LONG_NAME = "m" * (31 * 1024)


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with authorized(grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")) as ch:
        yield ch


@pytest.fixture(autouse=True)
def no_worker_restarts(stack: Stack) -> Iterator[None]:
    """Every test here leaves the same worker processes running."""
    workers = range(int(stack.config["server"]["workers"]))
    before = [stack.worker_pid(i) for i in workers]
    yield
    assert [stack.worker_pid(i) for i in workers] == before, "a worker restarted"


def reset(stack: Stack) -> None:
    assert request(stack.upstream_url + "/_dev/reset", b"").status == 200


def upstream_requests(stack: Stack) -> int:
    return int(upstream_stats(stack.upstream_url)["requests"])


def post(stack: Stack, path: str, body: dict[str, Any]) -> Reply:
    return request(stack.base_url + path, body, timeout=60)


def user(text: str) -> openai_pb2.ChatMessage:
    return openai_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value=text))


def chat_request(model: str) -> chat_pb2.ChatCompletionRequest:
    return chat_pb2.ChatCompletionRequest(model=model, messages=[user("x")])


# answers of the wrong shape


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", {"model": "wrong-shape", "messages": HELLO}),
        ("/chat/completions", {"model": "wrong-shape", "messages": HELLO, "stream": True}),
        ("/completions", {"model": "wrong-shape", "prompt": "x"}),
        ("/embeddings", {"model": "wrong-shape", "input": "x"}),
    ],
)
def test_wrong_shape_is_provider_error(stack: Stack, path: str, body: dict[str, Any]) -> None:
    reset(stack)
    err = check_error(post(stack, path, body), 502, "provider_error")
    assert "malformed" in err["message"]
    assert upstream_requests(stack) == 1


def test_wrong_shape_with_the_sdk(client: openai.OpenAI, stack: Stack) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="wrong-shape", messages=HELLO)
    assert exc.value.status_code == 502
    with pytest.raises(openai.InternalServerError) as exc:
        client.embeddings.create(model="wrong-shape", input="x")
    assert exc.value.status_code == 502


def test_wrong_shape_over_grpc(channel: grpc.Channel, stack: Stack) -> None:
    chat = chat_pb2_grpc.ChatServiceStub(channel)
    for call in (
        lambda: chat.CreateChatCompletion(chat_request("wrong-shape")),
        lambda: list(chat.StreamChatCompletion(chat_request("wrong-shape"))),
        lambda: embeddings_pb2_grpc.EmbeddingServiceStub(channel).CreateEmbedding(
            embeddings_pb2.EmbeddingRequest(model="wrong-shape", input=struct_pb2.Value(string_value="x"))
        ),
    ):
        reset(stack)
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert upstream_requests(stack) == 1


# oversized answers


def test_oversized_scenarios_exceed_the_limit(stack: Stack) -> None:
    """The scenario models are just over the gateway's answer limit for this stack's config."""
    assert parse_config(stack.config, env={}).server.max_response_bytes < 65 * MIB


@pytest.mark.parametrize("model", ["oversized-65", "oversized-chunked-65"])
@pytest.mark.parametrize(
    ("path", "body"),
    [("/chat/completions", {"messages": HELLO}), ("/embeddings", {"input": "x"})],
    ids=["chat", "embeddings"],
)
def test_oversized_answer_is_provider_error(stack: Stack, model: str, path: str, body: dict[str, Any]) -> None:
    reset(stack)
    err = check_error(post(stack, path, {"model": model, **body}), 502, "provider_error")
    assert "limit" in err["message"]
    assert upstream_requests(stack) == 1


# a provider's ~31 KB error message


@pytest.mark.parametrize("stream", [False, True])
def test_long_provider_error_is_bounded(stack: Stack, stream: bool) -> None:
    reset(stack)
    err = check_error(
        post(stack, "/chat/completions", {"model": "long-error-500", "messages": HELLO, "stream": stream}),
        502,
        "provider_error",
    )
    # The start of the provider's message is kept; its end (31 KB later) is not.
    assert LONG_ERROR_START in err["message"]
    assert LONG_ERROR_END not in err["message"]
    assert upstream_requests(stack) == 2  # the 500 and its one retry


def test_long_provider_error_with_the_sdk(client: openai.OpenAI, stack: Stack) -> None:
    reset(stack)
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="long-error-500", messages=HELLO)
    assert exc.value.status_code == 502
    assert LONG_ERROR_START in exc.value.message and len(exc.value.message) <= MESSAGE_BOUND
    assert upstream_requests(stack) == 2  # the 500 and its one retry


def test_long_provider_error_over_grpc(channel: grpc.Channel, stack: Stack) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    for call in (
        lambda: stub.CreateChatCompletion(chat_request("long-error-500")),
        lambda: list(stub.StreamChatCompletion(chat_request("long-error-500"))),
    ):
        reset(stack)
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        details = exc.value.details() or ""
        assert LONG_ERROR_START in details and len(details) <= MESSAGE_BOUND < LONG_ERROR_CHARS
        assert upstream_requests(stack) == 2  # the 500 and its one retry


# a ~31 KB model name


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", {"messages": HELLO}),
        ("/chat/completions", {"messages": HELLO, "stream": True}),
        ("/completions", {"prompt": "x"}),
        ("/embeddings", {"input": "x"}),
    ],
)
def test_long_model_name_is_not_found(stack: Stack, path: str, body: dict[str, Any]) -> None:
    reset(stack)
    err = check_error(post(stack, path, {"model": LONG_NAME, **body}), 404, "invalid_request_error", "model_not_found")
    assert err["param"] is None or len(err["param"]) <= 256
    assert upstream_requests(stack) == 0


def test_long_model_name_with_the_sdk(client: openai.OpenAI, stack: Stack) -> None:
    reset(stack)
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model=LONG_NAME, messages=HELLO)
    assert exc.value.code == "model_not_found" and len(exc.value.message) <= MESSAGE_BOUND
    assert upstream_requests(stack) == 0


def test_long_model_name_over_grpc(channel: grpc.Channel, stack: Stack) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    for call in (
        lambda: stub.CreateChatCompletion(chat_request(LONG_NAME)),
        lambda: list(stub.StreamChatCompletion(chat_request(LONG_NAME))),
        lambda: embeddings_pb2_grpc.EmbeddingServiceStub(channel).CreateEmbedding(
            embeddings_pb2.EmbeddingRequest(model=LONG_NAME, input=struct_pb2.Value(string_value="x"))
        ),
    ):
        reset(stack)
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(exc.value.details() or "") <= MESSAGE_BOUND
        assert upstream_requests(stack) == 0
