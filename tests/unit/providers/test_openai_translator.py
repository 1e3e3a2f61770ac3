"""ghostllm.providers.openai: the OpenAI wire format over recorded bytes, no sockets."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from ghostllm.config import ProviderConfig
from ghostllm.errors import (
    InvalidRequest,
    PayloadTooLarge,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
    UpstreamTimeout,
)
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.openai import OpenAITranslator

T = OpenAITranslator(ProviderConfig(id="up", base_url="http://x/v1"))

# A real OpenAI stream: role chunk, content, a streamed tool call, the finish
# chunk, then the usage-only chunk (stream_options.include_usage) and [DONE].
STREAM = b"".join(
    b"data: " + orjson.dumps(c) + b"\n\n"
    for c in [
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
         "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
         "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                           "function": {"name": "f", "arguments": "{\"a\""}}]},
                      "finish_reason": None}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
         "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13,
                   "prompt_tokens_details": {"cached_tokens": 2},
                   "completion_tokens_details": {"reasoning_tokens": 1}}},
    ]
) + b"data: [DONE]\n\n"  # fmt: skip


def decode(data: bytes, cut: int | None = None) -> tuple[list[Any], Usage | None, bool]:
    d = T.stream_decoder(Endpoint.CHAT)
    chunks = d.feed(data) if cut is None else d.feed(data[:cut]) + d.feed(data[cut:])
    return chunks, d.usage, d.done


def test_stream_decodes_chunks_usage_and_end() -> None:
    chunks, usage, done = decode(STREAM)
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [{"role": "assistant", "content": ""}, {"content": "Hel"}]
    assert chunks[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"a"'
    assert chunks[4]["choices"] == []
    assert usage == Usage(9, 4, 13, cached_tokens=2, reasoning_tokens=1)
    assert done


def test_stream_split_at_every_byte_offset_decodes_the_same() -> None:
    whole = decode(STREAM)
    for cut in range(len(STREAM) + 1):
        assert decode(STREAM, cut) == whole, cut


@pytest.mark.parametrize(
    "event",
    [
        b"data: 42\n\n",
        b"data: not json\n\n",
        b'data: {"choices": "x"}\n\n',
        b'data: {"error": {"message": "boom"}}\n\n',
    ],
)
def test_bad_stream_events_are_provider_errors(event: bytes) -> None:
    with pytest.raises(ProviderError):
        T.stream_decoder(Endpoint.CHAT).feed(event)


def test_request_never_changes_the_callers_body() -> None:
    body = {"model": "public", "messages": [{"role": "user", "content": "x"}], "stream": True,
            "stream_options": {"include_usage": False}, "prediction": {"type": "content", "content": "y"}}  # fmt: skip
    before = copy.deepcopy(body)
    streamed = orjson.loads(T.request(Endpoint.CHAT, body, "upstream-name", stream=True).body)
    whole = orjson.loads(T.request(Endpoint.CHAT, body, "upstream-name", stream=False).body)
    assert body == before
    assert streamed["model"] == whole["model"] == "upstream-name"
    # Usage is always asked for in streams, so every token is accounted.
    assert streamed["stream"] is True and streamed["stream_options"] == {"include_usage": True}
    # OpenAI refuses stream_options without stream.
    assert "stream" not in whole and "stream_options" not in whole
    # Fields we do not model go upstream as sent.
    assert streamed["prediction"] == whole["prediction"] == body["prediction"]


def test_too_deep_body_is_a_400_naming_the_field() -> None:
    deep: Any = {}
    for _ in range(300):
        deep = {"x": deep}
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": deep}
    with pytest.raises(InvalidRequest) as exc:
        T.request(Endpoint.CHAT, body, "m", stream=False)
    assert exc.value.param == "response_format" and exc.value.code == "too_deep"


def test_reply_checks_the_fields_we_rely_on() -> None:
    good = {"id": "c", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}  # fmt: skip
    reply = T.reply(Endpoint.CHAT, orjson.dumps(good))
    assert reply.data == good and reply.usage == Usage(1, 2, 3)
    for bad in (
        {"choices": [{"index": "a", "message": "oops"}]},
        {"choices": "nope"},
        {"choices": [{"index": 0, "message": {"content": 5}}]},
    ):
        with pytest.raises(ProviderError):
            T.reply(Endpoint.CHAT, orjson.dumps(bad))
    with pytest.raises(ProviderError):
        T.reply(Endpoint.EMBEDDINGS, orjson.dumps({"data": [{"embedding": 5}]}))
    with pytest.raises(ProviderError, match="not JSON"):
        T.reply(Endpoint.CHAT, b"<html>")


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, RateLimited), (400, InvalidRequest), (422, InvalidRequest), (413, PayloadTooLarge),
     (504, UpstreamTimeout), (401, ProviderError), (500, ProviderError), (503, ServiceUnavailable)],
)  # fmt: skip
def test_error_statuses(status: int, kind: type[Exception]) -> None:
    err = T.error(status, b'{"error": {"message": "' + b"m" * 40_000 + b'"}}', {"retry-after": "7"})
    assert type(err) is kind
    assert len(err.message) < 1200  # the start of a huge upstream message is kept, not all of it
    if status == 429:
        assert err.retry_after == "7"
