"""Relaying provider answers to REST clients as google.api.HttpBody messages.

Chat and text completions share this: one application/json body for
stream:false; for stream:true, SSE bytes where every chunk decoded from one
upstream read goes out in one message (relaying per event costs about 3x more
gateway CPU when chunks arrive together). The client's model id replaces the
upstream's, and usage chunks the client did not ask for (we always ask the
upstream, to account every token) are dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from google.api import httpbody_pb2

from ghostllm.api.status import as_ghost_error
from ghostllm.providers.base import Batch, Json
from ghostllm.providers.sse import DONE

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
_DONE_EVENT = b"data: [DONE]\n\n"


def json_body(data: Json, model: str) -> httpbody_pb2.HttpBody:
    data["model"] = model
    return httpbody_pb2.HttpBody(content_type=JSON, data=orjson.dumps(data))


def client_chunk(chunk: Json, model: str, include_usage: bool) -> Json | None:
    """The chunk as the client should see it, or None when it asked for no usage
    and this is the usage-only chunk we requested for accounting."""
    if not include_usage:
        if not chunk.get("choices"):
            return None
        chunk.pop("usage", None)
    chunk["model"] = model
    return chunk


def sse_events(batch: Batch, model: str, include_usage: bool) -> bytes:
    out = bytearray()
    for chunk in batch:
        if chunk is DONE:
            out += _DONE_EVENT
            break
        if client_chunk(chunk, model, include_usage) is not None:
            out += b"data: "
            out += orjson.dumps(chunk)
            out += b"\n\n"
    return bytes(out)


async def whole(messages: AsyncIterator[httpbody_pb2.HttpBody]) -> httpbody_pb2.HttpBody:
    """A bridge's answer as one message, for the unary REST bridges. stream:false
    is one message already; stream:true only arrives there when Envoy's check for
    it was fooled (an escaped key, say), and then gets all its events in one body."""
    parts = [message async for message in messages]
    if len(parts) == 1:
        return parts[0]
    return httpbody_pb2.HttpBody(content_type=EVENT_STREAM, data=b"".join(part.data for part in parts))


async def sse_stream(
    stream: AsyncIterator[Batch], model: str, include_usage: bool
) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """Relay a provider stream; errors before the first byte propagate (the
    client then gets a real HTTP status), errors after it become an in-band
    OpenAI error event, which the openai SDK raises as APIError."""
    content_type = EVENT_STREAM
    started = False
    try:
        async for batch in stream:
            data = sse_events(batch, model, include_usage)
            if data:
                # Envoy takes the content type from the first message only.
                yield httpbody_pb2.HttpBody(content_type=content_type, data=data)
                content_type = ""
                started = True
    except Exception as exc:
        if not started:
            raise
        err = as_ghost_error(exc)
        yield httpbody_pb2.HttpBody(data=b"data: " + orjson.dumps(err.to_dict()) + b"\n\n")
