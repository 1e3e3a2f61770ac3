"""ghostllm.v1.RestBridge: the OpenAI REST surface (POST /v1/chat/completions,
/v1/completions, /v1/embeddings) through Envoy's transcoder.

The request is the client's raw JSON (google.api.HttpBody), parsed strictly and
validated by the same rules as the typed gRPC requests; fields we do not model
go upstream as sent. Answers: one application/json body for stream:false; for
stream:true, SSE bytes where every chunk decoded from one upstream read goes out
in one message (relaying per event costs about 3x more gateway CPU when chunks
arrive together). Errors before the first byte abort with a status (the client
gets a real HTTP status); errors after it become an in-band OpenAI error event,
which the openai SDK raises as APIError.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable

import orjson
from google.api.httpbody_pb2 import HttpBody

from ghostllm.api.boundary import as_ghost_error, bounded, streaming, unary
from ghostllm.api.rawbody import RawHttpBody
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.protocol.chat import check_chat_request
from ghostllm.protocol.common import Json, parse_json_body
from ghostllm.protocol.completions import check_completion_request
from ghostllm.protocol.embeddings import check_embedding_request
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.v1 import rest_pb2_grpc

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
_DONE_EVENT = b"data: [DONE]\n\n"


def json_body(data: Json) -> HttpBody:
    return HttpBody(content_type=JSON, data=orjson.dumps(data))


def sse_events(chunks: list[Json], done: bool) -> bytes:
    out = bytearray()
    for chunk in chunks:
        out += b"data: "
        out += orjson.dumps(chunk)
        out += b"\n\n"
    if done:
        out += _DONE_EVENT
    return bytes(out)


def _decoder(rc: RequestContext, raw: memoryview, check: Callable[[Json], Json]) -> Callable[[], Json]:
    rc.request_bytes = len(raw)
    return lambda: check(parse_json_body(raw))


async def whole(messages: AsyncIterator[HttpBody]) -> HttpBody:
    """A bridge's answer as one message, for the unary bridges. stream:false is one
    message already; stream:true only arrives there when Envoy's check for it was
    fooled (an escaped key, say), and then gets all its events in one body."""
    parts = [message async for message in messages]
    if len(parts) == 1:
        return parts[0]
    return HttpBody(content_type=EVENT_STREAM, data=b"".join(part.data for part in parts))


class RestBridge(rest_pb2_grpc.RestBridgeServicer):
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def _serve(
        self, rc: RequestContext, endpoint: Endpoint, decode: Callable[[], Json]
    ) -> AsyncGenerator[HttpBody]:
        async with self.pipeline.exchange(rc, endpoint, decode) as ex:
            await ex.admit()
            if not ex.stream:
                yield json_body(await ex.complete())
                return
            content_type = EVENT_STREAM
            started = False
            try:
                async for chunks, done in ex.relay():
                    data = sse_events(chunks, done)
                    if data:
                        # Envoy takes the content type from the first message only.
                        yield HttpBody(content_type=content_type, data=data)
                        content_type = ""
                        started = True
            except Exception as exc:
                if not started:
                    raise
                err = bounded(as_ghost_error(exc, rc))
                ex.fail(err)
                yield HttpBody(data=b"data: " + orjson.dumps(err.to_dict()) + b"\n\n")

    @streaming
    def ChatCompletions(self, request: RawHttpBody, rc: RequestContext) -> AsyncGenerator[HttpBody]:
        return self._serve(rc, Endpoint.CHAT, _decoder(rc, request.data, check_chat_request))

    @unary
    async def ChatCompletionsUnary(self, request: RawHttpBody, rc: RequestContext) -> HttpBody:
        return await whole(self._serve(rc, Endpoint.CHAT, _decoder(rc, request.data, check_chat_request)))

    @streaming
    def Completions(self, request: RawHttpBody, rc: RequestContext) -> AsyncGenerator[HttpBody]:
        return self._serve(rc, Endpoint.COMPLETIONS, _decoder(rc, request.data, check_completion_request))

    @unary
    async def CompletionsUnary(self, request: RawHttpBody, rc: RequestContext) -> HttpBody:
        return await whole(self._serve(rc, Endpoint.COMPLETIONS, _decoder(rc, request.data, check_completion_request)))

    @unary
    async def Embeddings(self, request: RawHttpBody, rc: RequestContext) -> HttpBody:
        decode = _decoder(rc, request.data, check_embedding_request)
        async with self.pipeline.exchange(rc, Endpoint.EMBEDDINGS, decode, stream=False) as ex:
            await ex.admit()
            return json_body(await ex.complete())
