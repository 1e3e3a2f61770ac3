"""Routing and scenario handling for the dev upstream (HTTP framing lives in protocol.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from ghostllm.devupstream import faults, responses, streaming
from ghostllm.devupstream.generation import BadRequest, Generation, plan_chat, plan_completion
from ghostllm.devupstream.protocol import JSON, LAST_CHUNK, Connection, Request, chunk, head, response
from ghostllm.devupstream.scenarios import NORMAL, Kind, Scenario, scenario_for
from ghostllm.devupstream.stats import Stats

Pending = Coroutine[Any, Any, None] | None

_SSE = b"text/event-stream; charset=utf-8"
_SSE_HEADERS = b"content-type: " + _SSE + b"\r\ntransfer-encoding: chunked\r\ncache-control: no-cache\r\n"
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)
_GARBAGE = b"this is not json"
_CUT_AFTER = 3
# reset-after-N waits this long before the reset: the client's kernel may drop what it has not
# read when the reset arrives, and the scenario is a reset after the client had those events.
_RESET_PAUSE_S = 0.2
_MODELS_PREFIX = b"/v1/models/"
_OVERSIZED = (Kind.OVERSIZED, Kind.OVERSIZED_CHUNKED)
_BREAKS = (Kind.STALL, Kind.RESET_AFTER)
# Oversized answers go out in pieces of this size, each written once the previous one drained.
_PAD_PIECE = faults.PAD_BYTE * (256 * 1024)

_Planner = Callable[..., Generation]


def _nothing() -> Pending:
    return None


class App:
    def __init__(self, chunk_delay: float = 0.0) -> None:
        self.chunk_delay = chunk_delay
        self.stats = Stats()
        self.connections: set[Connection] = set()
        self._request_ids = itertools.count(1)
        self._routes: dict[bytes, tuple[bytes, Callable[[Request, Connection], Pending]]] = {
            b"/v1/chat/completions": (b"POST", self._chat),
            b"/v1/completions": (b"POST", self._completions),
            b"/v1/embeddings": (b"POST", self._embeddings),
            b"/v1/models": (b"GET", self._models),
            b"/_dev/stats": (b"GET", self._dev_stats),
            b"/_dev/reset": (b"POST", self._dev_reset),
        }

    def handle(self, request: Request, conn: Connection) -> Pending:
        path = request.target.partition(b"?")[0]
        if not path.startswith(b"/_dev/"):
            self.stats.record(request)
        route = self._routes.get(path)
        if route is None and path.startswith(_MODELS_PREFIX):
            route = (b"GET", self._model)
        if route is None:
            message = f"Unknown request URL: {request.method.decode()} {path.decode('latin-1')}."
            self._json(request, conn, 404, responses.error_body(message, "invalid_request_error", None, "not_found"))
            return None
        method, handler = route
        if request.method != method:
            message = f"Method {request.method.decode()} not allowed for {path.decode('latin-1')}."
            body = responses.error_body(message, "invalid_request_error", None, "method_not_allowed")
            self._json(request, conn, 405, body, b"allow: " + method + b"\r\n")
            return None
        return handler(request, conn)

    # replies

    def _json(self, request: Request, conn: Connection, status: int, obj: object, headers: bytes = b"") -> None:
        rid = b"x-request-id: req_dev_%d\r\n" % next(self._request_ids)
        conn.write(response(status, orjson.dumps(obj), request.keep_alive, headers=rid + headers))

    def _parse(self, request: Request, conn: Connection) -> dict[str, Any] | None:
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            return body
        self._json(request, conn, 400, responses.error_body(_BAD_JSON, "invalid_request_error"))
        return None

    # /v1 endpoints

    def _models(self, request: Request, conn: Connection) -> Pending:
        self._json(request, conn, 200, responses.model_list())
        return None

    def _model(self, request: Request, conn: Connection) -> Pending:
        path = request.target.partition(b"?")[0]
        model_id = urllib.parse.unquote(path[len(_MODELS_PREFIX) :].decode("latin-1"))
        if model_id in responses.MODEL_IDS:
            self._json(request, conn, 200, responses.model_object(model_id))
        else:
            self._json(request, conn, 404, responses.model_not_found(model_id))
        return None

    def _chat(self, request: Request, conn: Connection) -> Pending:
        return self._generate(request, conn, plan_chat)

    def _completions(self, request: Request, conn: Connection) -> Pending:
        return self._generate(request, conn, plan_completion)

    def _embeddings(self, request: Request, conn: Connection) -> Pending:
        body = self._parse(request, conn)
        if body is None:
            return None
        scenario = scenario_for(body.get("model"))
        if scenario.kind is Kind.NORMAL:
            return self._embed(request, conn, body, scenario)
        return self._scenario(request, conn, body, scenario, lambda: self._embed(request, conn, body, scenario))

    def _embed(self, request: Request, conn: Connection, body: dict[str, Any], scenario: Scenario) -> Pending:
        if scenario.kind is Kind.WRONG_SHAPE:
            conn.write(response(200, faults.WRONG_EMBEDDINGS, request.keep_alive))
            return None
        try:
            obj = responses.embeddings(body)
        except BadRequest as exc:
            self._bad_request(request, conn, exc)
            return None
        if scenario.kind in _OVERSIZED:
            obj["data"][0]["embedding"] = faults.PAD
            return self._oversized(request, conn, obj, scenario, event=False)
        if scenario.kind is Kind.CUT:
            self._cut_json(request, conn, obj)
        else:
            self._json(request, conn, 200, obj)
        return None

    def _generate(self, request: Request, conn: Connection, planner: _Planner) -> Pending:
        body = self._parse(request, conn)
        if body is None:
            return None
        scenario = scenario_for(body.get("model"))
        if scenario.kind is Kind.NORMAL:
            return self._answer(request, conn, body, planner, NORMAL)
        return self._scenario(
            request, conn, body, scenario, lambda: self._answer(request, conn, body, planner, scenario)
        )

    def _answer(
        self, request: Request, conn: Connection, body: dict[str, Any], planner: _Planner, scenario: Scenario
    ) -> Pending:
        stream = body.get("stream") is True
        chat = planner is plan_chat
        if scenario.kind is Kind.WRONG_SHAPE:
            return self._wrong_shape(request, conn, chat=chat, stream=stream)
        try:
            gen = planner(body, int(time.time()), pad=stream and scenario.kind is Kind.SLOW_CHUNKS)
        except BadRequest as exc:
            self._bad_request(request, conn, exc)
            return None
        if scenario.kind in _OVERSIZED:
            obj = faults.oversized_answer(gen, chat=chat, stream=stream)
            return self._oversized(request, conn, obj, scenario, event=stream)
        if not stream:
            obj = responses.chat_completion(gen) if chat else responses.text_completion(gen)
            if scenario.kind is Kind.CUT:
                self._cut_json(request, conn, obj)
                return None
            if scenario.kind in _BREAKS:
                payload = orjson.dumps(obj)
                full = response(200, payload, request.keep_alive)
                # The head and half the body: the client has begun reading the answer.
                return self._break(conn, full[: len(full) - len(payload) // 2], scenario.kind, stream=False)
            self._json(request, conn, 200, obj)
            return None
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = streaming.chat_events(gen, include_usage) if chat else streaming.completion_events(gen, include_usage)
        if scenario.kind in _BREAKS:
            start = head(200, _SSE_HEADERS, request.keep_alive)
            data = start + b"".join(map(chunk, events[: scenario.count]))
            return self._break(conn, data, scenario.kind, stream=True)
        if scenario.kind is Kind.SLOW_CHUNKS:
            return self._stream(request, conn, events, scenario.delay, None)
        return self._stream(request, conn, events, self.chunk_delay, _CUT_AFTER if scenario.kind is Kind.CUT else None)

    def _bad_request(self, request: Request, conn: Connection, exc: BadRequest) -> None:
        body = responses.error_body(exc.message, "invalid_request_error", exc.param, exc.code)
        self._json(request, conn, 400, body)

    # scenarios

    def _scenario(
        self,
        request: Request,
        conn: Connection,
        body: dict[str, Any],
        scenario: Scenario,
        normal: Callable[[], Pending],
    ) -> Pending:
        kind = scenario.kind
        if kind is Kind.ERROR:
            extra = b"retry-after: %d\r\n" % scenario.retry_after if scenario.status == 429 else b""
            self._json(request, conn, scenario.status, responses.simulated_error(scenario.status), extra)
            return None
        if kind is Kind.LONG_ERROR:
            self._json(request, conn, scenario.status, faults.long_error(scenario.status))
            return None
        if kind is Kind.RESET:
            conn.reset()
            return None
        if kind is Kind.HANG:
            # Nothing ever resolves this future: only the client going away (or shutdown) ends the wait.
            return self._wait(asyncio.get_running_loop().create_future(), normal)
        if kind is Kind.SLOW:
            return self._wait(asyncio.sleep(scenario.delay), normal)
        if kind is Kind.GARBAGE:
            if body.get("stream") is True:
                events = [b"data: " + _GARBAGE + b"\n\n", streaming.DONE]
                return self._stream(request, conn, events, self.chunk_delay, None)
            conn.write(response(200, _GARBAGE, request.keep_alive))
            return None
        return normal()

    async def _wait(self, waiting: Coroutine[Any, Any, Any] | asyncio.Future[Any], then: Callable[[], Pending]) -> None:
        stats = self.stats
        stats.waiting_requests += 1
        try:
            await waiting
        except asyncio.CancelledError:
            stats.cancelled_requests += 1
            raise
        finally:
            stats.waiting_requests -= 1
        pending = then()
        if pending is not None:
            await pending

    async def _break(self, conn: Connection, data: bytes, kind: Kind, *, stream: bool) -> None:
        """Send `data` (the start of an answer), then reset the connection (RESET_AFTER) or go
        silent, the connection open, until the client leaves (STALL)."""
        conn.write(data)
        if kind is Kind.RESET_AFTER:
            await asyncio.sleep(_RESET_PAUSE_S)
            conn.reset()
            return
        silence = asyncio.get_running_loop().create_future()
        if not stream:
            await self._wait(silence, _nothing)
            return
        stats = self.stats
        stats.active_streams += 1
        try:
            await silence
        except asyncio.CancelledError:
            stats.cancelled_streams += 1
            raise
        finally:
            stats.active_streams -= 1

    def _wrong_shape(self, request: Request, conn: Connection, *, chat: bool, stream: bool) -> Pending:
        if stream:
            event = faults.WRONG_CHAT_EVENT if chat else faults.WRONG_COMPLETION_EVENT
            return self._stream(request, conn, [event, streaming.DONE], self.chunk_delay, None)
        conn.write(response(200, faults.WRONG_CHAT if chat else faults.WRONG_COMPLETION, request.keep_alive))
        return None

    def _oversized(
        self, request: Request, conn: Connection, obj: dict[str, Any], scenario: Scenario, *, event: bool
    ) -> Pending:
        """``obj`` padded to the scenario's size: with a content-length, or chunked without one."""
        prefix, pad, suffix = faults.padded(obj, scenario.size, event=event)
        chunked = scenario.kind is Kind.OVERSIZED_CHUNKED
        framing = (
            b"transfer-encoding: chunked" if chunked else b"content-length: %d" % (len(prefix) + pad + len(suffix))
        )
        start = head(
            200, b"content-type: " + (_SSE if event else JSON) + b"\r\n" + framing + b"\r\n", request.keep_alive
        )
        conn.write(start + (chunk(prefix) if chunked else prefix))
        return self._pad(conn, pad, chunk(suffix) + LAST_CHUNK if chunked else suffix, chunked)

    async def _pad(self, conn: Connection, size: int, end: bytes, chunked: bool) -> None:
        while size > 0 and not conn.closed:
            piece = _PAD_PIECE if size >= len(_PAD_PIECE) else _PAD_PIECE[:size]
            if chunked:
                conn.write(b"%x\r\n" % len(piece))
            conn.write(piece)
            if chunked:
                conn.write(b"\r\n")
            size -= len(piece)
            # The client may stop reading at its limit: never buffer more than the transport's share.
            await conn.drain()
        conn.write(end)

    def _cut_json(self, request: Request, conn: Connection, obj: object) -> None:
        full = response(200, orjson.dumps(obj), request.keep_alive)
        conn.write(full[: len(full) - len(full) // 4])
        conn.close()

    def _stream(
        self, request: Request, conn: Connection, events: list[bytes], delay: float, cut_after: int | None
    ) -> Pending:
        start = head(200, _SSE_HEADERS, request.keep_alive)
        if delay <= 0:
            if cut_after is not None:
                conn.write(start + b"".join(map(chunk, events[:cut_after])))
                conn.close()
                return None
            conn.write(start + b"".join(map(chunk, events)) + LAST_CHUNK)
            self.stats.completed_streams += 1
            return None
        return self._stream_slowly(conn, start, events, delay, cut_after)

    async def _stream_slowly(
        self, conn: Connection, start: bytes, events: list[bytes], delay: float, cut_after: int | None
    ) -> None:
        stats = self.stats
        stats.active_streams += 1
        try:
            if cut_after is not None:
                events = events[:cut_after]
            last = len(events) - 1
            for i, ev in enumerate(events):
                if i:
                    await asyncio.sleep(delay)
                data = chunk(ev)
                if i == 0:
                    data = start + data
                if i == last and cut_after is None:
                    data += LAST_CHUNK
                conn.write(data)
            if cut_after is not None:
                conn.close()
            else:
                stats.completed_streams += 1
        except asyncio.CancelledError:
            stats.cancelled_streams += 1
            raise
        finally:
            stats.active_streams -= 1

    # /_dev endpoints

    def _dev_stats(self, request: Request, conn: Connection) -> Pending:
        # Open connections count the one asking, and clients' idle keep-alive ones.
        stats = {**self.stats.to_json(), "open_connections": len(self.connections)}
        conn.write(response(200, orjson.dumps(stats), request.keep_alive))
        return None

    def _dev_reset(self, request: Request, conn: Connection) -> Pending:
        self.stats.reset()
        conn.write(response(200, orjson.dumps(self.stats.to_json()), request.keep_alive))
        return None
