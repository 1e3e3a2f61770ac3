"""One chat request through the gateway with the openai SDK, and what came back.

The SDK parses (that is what clients run); a tee under its HTTP client keeps the wire
bytes too, so a test can also see framing (`data: [DONE]`) and validate every chunk
against OpenAI's published schemas (the tee is an httpx2 transport: the client the SDK is
built on). A stream is accumulated into the shape of a non-streaming completion so both
modes are judged by the same expectations.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httpx2
import openai
from openai.types.chat import ChatCompletionChunk

from tests.support.auth import ADMIN_KEY
from tests.support.openapi import validate

Json = dict[str, Any]


class _TeeStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, sink: bytearray) -> None:
        self.inner, self.sink = inner, sink

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.inner:
            self.sink += piece
            yield piece

    def close(self) -> None:
        self.inner.close()


class TeeTransport(httpx2.BaseTransport):
    """An HTTP transport that keeps the body of the last response as the SDK reads it."""

    def __init__(self) -> None:
        self.inner = httpx2.HTTPTransport()
        self.last = bytearray()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        self.last = bytearray()
        assert isinstance(response.stream, httpx2.SyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_TeeStream(response.stream, self.last),
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        self.inner.close()


class Client:
    """The openai SDK pointed at a stack, with the tee underneath."""

    def __init__(self, base_url: str, key: str = ADMIN_KEY, timeout: float = 30.0) -> None:
        self.tee = TeeTransport()
        self.sdk = openai.OpenAI(
            base_url=base_url,
            api_key=key,
            max_retries=0,
            timeout=timeout,
            http_client=httpx2.Client(transport=self.tee, timeout=timeout),
        )

    def close(self) -> None:
        self.sdk.close()

    def send(self, request: Mapping[str, Any]) -> Answer:
        """`request` as a client sends it: streamed when it says so."""
        body = dict(request)
        stream = bool(body.get("stream"))
        try:
            if stream:
                return self._stream(body)
            raw = self.sdk.chat.completions.with_raw_response.create(**body)
            completion = raw.parse().to_dict()
            return Answer(raw.status_code, _headers(raw.headers), bytes(self.tee.last), completion=completion)
        except openai.APIStatusError as err:
            return Answer(err.status_code, _headers(err.response.headers), bytes(self.tee.last), error=_error(err))

    def _stream(self, body: Json) -> Answer:
        with self.sdk.chat.completions.with_streaming_response.create(**body) as response:
            chunks: list[Json] = []
            stream_error: Json | None = None
            try:
                # The streaming wrapper's parse() is typed for the unstreamed answer.
                stream = cast("openai.Stream[ChatCompletionChunk]", response.parse())
                for chunk in stream:
                    chunks.append(chunk.to_dict())
            except openai.APIStatusError:
                raise
            except openai.APIError as err:
                stream_error = err.body if isinstance(err.body, dict) else {"message": err.message}
            answer = Answer(response.status_code, _headers(response.headers), b"", chunks=chunks)
        answer.raw = bytes(self.tee.last)
        answer.stream_error = stream_error
        answer.completion, answer.fragments, answer.problems = accumulate(chunks)
        return answer


def _headers(headers: httpx2.Headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _error(err: openai.APIStatusError) -> Json:
    try:
        body = err.response.json()
    except ValueError:
        return {"error": {"message": err.response.text}}
    return body if isinstance(body, dict) else {"error": body}


@dataclass
class Answer:
    """What the client got. `completion`: the non-streaming body, or the accumulated stream."""

    status: int
    headers: dict[str, str]
    raw: bytes
    completion: Json | None = None
    # The error body of a non-success status.
    error: Json | None = None
    chunks: list[Json] | None = None
    # An in-band error event of a stream that had started (its `error` object).
    stream_error: Json | None = None
    # Streams: argument fragments per tool call index, and what the deltas got wrong.
    fragments: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def streamed(self) -> bool:
        return self.chunks is not None

    def events(self) -> list[str]:
        """The data payloads of the SSE body, in order."""
        text = self.raw.decode(errors="replace").replace("\r\n", "\n")
        return [line[5:].strip() for line in text.split("\n") if line.startswith("data:")]

    def schema_problems(self) -> list[str]:
        """Every way the wire answer departs from OpenAI's published response schemas."""
        try:
            if self.status >= 400 or self.error is not None:
                validate("ErrorResponse", json.loads(self.raw))
            elif not self.streamed:
                validate("CreateChatCompletionResponse", json.loads(self.raw))
            else:
                for event in self.events():
                    if event != "[DONE]" and not event.startswith('{"error"'):
                        validate("CreateChatCompletionStreamResponse", json.loads(event))
        except ValueError as err:
            return [f"schema: not JSON ({err})"]
        except AssertionError as err:
            # One line per violation; the instance itself is left out (it is the answer).
            lines = str(err).splitlines()
            return [
                f"schema: {lines[0].split(' of OpenAI schema ')[-1].rstrip(':')}{line.strip()[2:]}"
                for line in lines
                if line.startswith("  at ")
            ]
        return []


def accumulate(chunks: list[Json]) -> tuple[Json, dict[int, int], list[str]]:
    """The chunks of one stream as a chat.completion: content joined, tool calls merged by
    index, the last finish_reason, the usage chunk's usage; with the number of argument
    fragments per call, and what the deltas got wrong (a call whose first delta has no id,
    an id or type that changes)."""
    message: Json = {}
    finish: Any = None
    usage: Any = None
    calls: dict[int, Json] = {}
    fragments: dict[int, int] = {}
    problems: list[str] = []
    for chunk in chunks:
        if chunk.get("usage") is not None:
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("role") is not None:
                message.setdefault("role", delta["role"])
            if delta.get("content") is not None:
                message["content"] = message.get("content", "") + delta["content"]
            if delta.get("refusal") is not None:
                message["refusal"] = message.get("refusal", "") + delta["refusal"]
            for tc in delta.get("tool_calls") or []:
                _merge_call(calls, fragments, tc, problems)
            if choice.get("finish_reason") is not None:
                finish = choice["finish_reason"]
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    completion: Json = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if chunks:
        completion["id"] = chunks[0].get("id")
        completion["model"] = chunks[0].get("model")
    if usage is not None:
        completion["usage"] = usage
    return completion, fragments, problems


def _merge_call(calls: dict[int, Json], fragments: dict[int, int], tc: Json, problems: list[str]) -> None:
    index = tc.get("index")
    if not isinstance(index, int):
        problems.append(f"tool call delta without an index: {tc}")
        return
    fn = tc.get("function") or {}
    call = calls.get(index)
    if call is None:
        call = calls[index] = {"index": index, "function": {"arguments": ""}}
        if tc.get("id") is None:
            problems.append(f"tool call {index}: its first delta has no id")
    for key in ("id", "type"):
        if tc.get(key) is not None:
            if key in call and call[key] != tc[key]:
                problems.append(f"tool call {index}: {key} changed from {call[key]!r} to {tc[key]!r}")
            call[key] = tc[key]
    if fn.get("name") is not None:
        call["function"]["name"] = call["function"].get("name", "") + fn["name"]
    if fn.get("arguments") is not None:
        call["function"]["arguments"] += fn["arguments"]
        fragments[index] = fragments.get(index, 0) + (fn["arguments"] != "")
