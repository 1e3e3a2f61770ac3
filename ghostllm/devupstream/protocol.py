"""Minimal HTTP/1.1 server connection: httptools parsing, keep-alive, pipelining, raw writes.

Handlers answer synchronously when they can (the fast path writes one buffer per response and
creates no task); anything that must wait returns a coroutine, which the connection runs as its
single in-flight task while later pipelined requests queue behind it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import httptools

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Request:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool


Handler = Callable[[Request, "Connection"], Coroutine[Any, Any, None] | None]

_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode() for s in HTTPStatus}
_COMMON = b"server: ghostllm-dev\r\n"
JSON = b"application/json"


def head(status: int, headers: bytes, keep_alive: bool) -> bytes:
    """Status line and headers up to and including the blank line; ``headers`` is raw CRLF lines."""
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()
    return line + _COMMON + headers + (b"\r\n" if keep_alive else b"connection: close\r\n\r\n")


def response(status: int, body: bytes, keep_alive: bool, content_type: bytes = JSON, headers: bytes = b"") -> bytes:
    return (
        head(
            status,
            b"content-type: " + content_type + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n" + headers,
            keep_alive,
        )
        + body
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


class Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, registry: set[Connection]) -> None:
        self._handler = handler
        self._registry = registry
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._target: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._keep_alive = True
        self._expect_continue = False
        self._queue: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._task_keep_alive = True
        self._drained: asyncio.Future[None] | None = None
        self.closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._registry.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.close()
        except httptools.HttpParserError:
            self.write(
                response(
                    400,
                    b'{"error":{"message":"Malformed HTTP request.","type":"invalid_request_error",'
                    b'"param":null,"code":null}}',
                    keep_alive=False,
                )
            )
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._registry.discard(self)
        self._queue.clear()
        self.resume_writing()
        if self._task is not None:
            self._task.cancel()

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._target = []
        self._headers = []
        self._body = []
        self._expect_continue = False

    def on_url(self, url: bytes) -> None:
        self._target.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        # curl sends Expect for bodies over 1 KiB and would otherwise stall a second before sending.
        if len(name) == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        if self._expect_continue:
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.closed:
            return
        request = Request(
            self._parser.get_method(),
            b"".join(self._target),
            self._headers,
            b"".join(self._body),
            self._keep_alive,
        )
        if self._task is not None or self._queue:
            self._queue.append(request)
        else:
            self._dispatch(request)

    # used by handlers

    def write(self, data: bytes) -> None:
        if not self.closed and self._transport is not None:
            self._transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark (for answers too large
        to buffer); returns at once on the fast path, and when the connection is gone."""
        if self._drained is not None:
            await self._drained

    def close(self) -> None:
        """Close after flushing what was written (a FIN, not a reset)."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def reset(self) -> None:
        """Drop the connection with a TCP RST."""
        if self._transport is None:
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    # internals

    def _dispatch(self, request: Request) -> None:
        try:
            pending = self._handler(request, self)
        except Exception:
            log.exception("dev-upstream handler failed")
            self.write(
                response(
                    500,
                    b'{"error":{"message":"dev-upstream handler failed","type":"server_error",'
                    b'"param":null,"code":null}}',
                    keep_alive=False,
                )
            )
            self.close()
            return
        if pending is None:
            if not request.keep_alive:
                self.close()
            return
        self._task_keep_alive = request.keep_alive
        self._task = asyncio.get_running_loop().create_task(pending)
        self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("dev-upstream handler failed", exc_info=exc)
            self.abort()
            return
        if not self._task_keep_alive:
            self.close()
            return
        while self._queue and self._task is None and not self.closed:
            self._dispatch(self._queue.popleft())
