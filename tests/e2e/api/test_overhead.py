"""x-ghostllm-overhead-ms, through Envoy on the real stack: every answer carries the gateway's
own time (the worker's, less its waits on the upstream) as milliseconds with three decimals,
below the latency the client measured itself. REST and gRPC, unary and streamed, and errors;
a gRPC stream also gets the whole stream's in its trailers. Relations only, never a bound in
milliseconds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from ghostllm.v1 import chat_pb2, chat_pb2_grpc, models_pb2, models_pb2_grpc, openai_pb2
from tests.e2e.api.test_access_log import record_for
from tests.support.auth import authorized
from tests.support.http import Reply, request
from tests.support.procs import Stack

HEADER = "x-ghostllm-overhead-ms"


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with authorized(grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")) as ch:
        yield ch


def overhead(value: str | bytes | None) -> float:
    """The header's value: milliseconds, three decimals, never negative."""
    assert isinstance(value, str), value
    whole, _, decimals = value.partition(".")
    assert whole.isdigit() and len(decimals) == 3 and decimals.isdigit(), value
    return float(value)


def timed_post(url: str, body: bytes | dict[str, Any]) -> tuple[Reply, float]:
    """The reply and the client's own latency for it, in ms (sent to the whole body read)."""
    t0 = time.perf_counter()
    reply = request(url, body)
    return reply, (time.perf_counter() - t0) * 1000


def chat(model: str = "dev-echo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "overhead?"}], **extra}


def grpc_chat(model: str = "dev-echo") -> chat_pb2.ChatCompletionRequest:
    content = struct_pb2.Value(string_value="overhead?")
    return chat_pb2.ChatCompletionRequest(model=model, messages=[openai_pb2.ChatMessage(role="user", content=content)])


def test_rest_unary_and_stream(stack: Stack) -> None:
    url = stack.base_url + "/chat/completions"
    for body in (chat(), chat(stream=True)):
        reply, total_ms = timed_post(url, body)
        assert reply.status == 200
        assert 0 <= overhead(reply.headers.get(HEADER)) < total_ms


def test_rest_answers_that_call_no_model(stack: Stack) -> None:
    for path in ("/models", "/models/dev-echo"):
        t0 = time.perf_counter()
        reply = request(stack.base_url + path)
        total_ms = (time.perf_counter() - t0) * 1000
        assert reply.status == 200
        assert 0 <= overhead(reply.headers.get(HEADER)) < total_ms


def test_rest_errors_carry_it_too(stack: Stack) -> None:
    url = stack.base_url + "/chat/completions"
    # Refused by our own stages (the whole time is ours), and by the upstream (its time is not).
    for body, status in ((b'{"model": "dev-echo",', 400), (chat("nope"), 404), (chat("error-500"), 502)):
        reply, total_ms = timed_post(url, body)
        assert reply.status == status, reply.body
        assert 0 <= overhead(reply.headers.get(HEADER)) < total_ms


def test_grpc_unary(channel: grpc.Channel) -> None:
    chat_stub = chat_pb2_grpc.ChatServiceStub(channel)
    models_stub = models_pb2_grpc.ModelServiceStub(channel)
    for call_once in (
        lambda: chat_stub.CreateChatCompletion.with_call(grpc_chat()),
        lambda: models_stub.ListModels.with_call(models_pb2.ListModelsRequest()),
    ):
        t0 = time.perf_counter()
        _, call = call_once()
        total_ms = (time.perf_counter() - t0) * 1000
        assert 0 <= overhead(dict(call.initial_metadata()).get(HEADER)) < total_ms


def test_grpc_stream_headers_and_trailers(channel: grpc.Channel) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    t0 = time.perf_counter()
    call = stub.StreamChatCompletion(grpc_chat())
    chunks = list(call)
    total_ms = (time.perf_counter() - t0) * 1000
    assert chunks
    first = overhead(dict(call.initial_metadata()).get(HEADER))  # until the first chunk
    whole = overhead(dict(call.trailing_metadata()).get(HEADER))  # the whole stream's
    assert 0 <= first <= whole < total_ms


def test_grpc_errors_carry_it_in_trailers(channel: grpc.Channel) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    for call_once in (
        lambda: stub.CreateChatCompletion(grpc_chat("nope")),
        lambda: list(stub.StreamChatCompletion(grpc_chat("nope"))),
    ):
        t0 = time.perf_counter()
        with pytest.raises(grpc.RpcError) as err:
            call_once()
        total_ms = (time.perf_counter() - t0) * 1000
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        trailers: dict[str, str] = dict(err.value.trailing_metadata())
        assert 0 <= overhead(trailers.get(HEADER)) < total_ms


def test_the_upstreams_time_is_left_out(stack: Stack, channel: grpc.Channel) -> None:
    """A slow upstream stream: the worker's time minus the wait is what is reported, so the
    overhead stays within the client's latency less the upstream time the log records."""
    rid = str(uuid.uuid4())
    call = chat_pb2_grpc.ChatServiceStub(channel).StreamChatCompletion(
        grpc_chat("slow-chunks-100"), metadata=(("x-request-id", rid),)
    )
    t0 = time.perf_counter()
    assert list(call)
    total_ms = (time.perf_counter() - t0) * 1000
    whole = overhead(dict(call.trailing_metadata()).get(HEADER))
    upstream_ms = record_for(stack.log, rid)["upstream_ms"]
    assert upstream_ms > whole and whole < total_ms - upstream_ms
