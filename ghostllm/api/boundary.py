"""The gRPC boundary: every RPC handler is wrapped by `unary` or `streaming`.

The wrapper builds the call's RequestContext once, from the metadata Envoy
passes along, and is the one place an exception becomes a status: a GhostError
aborts the call with its gRPC code plus trailing metadata carrying the HTTP
status and the OpenAI-shaped body (which Envoy's Lua filter turns into the REST
error); anything else is logged and becomes a 500.

Every answer carries the gateway's own overhead, `x-ghostllm-overhead-ms`: the call's time in
the worker so far minus the time it waited on upstreams, in milliseconds. A unary answer sends
it in its headers (initial metadata), computed just before the answer leaves; an error in its
trailers (which a REST client gets as headers); a stream in its headers until its first chunk,
and the whole stream's in its trailers.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, NoReturn, TypeAlias, TypeVar

from grpc import aio

from ghostllm.errors import GhostError, InternalError, InvalidRequest
from ghostllm.gateway.context import RequestContext
from ghostllm.tracing.w3c import TRACEPARENT, TRACESTATE, valid_traceparent, valid_tracestate

log = logging.getLogger(__name__)

T = TypeVar("T")
Context: TypeAlias = aio.ServicerContext[Any, Any]
HTTP_STATUS_KEY = "ghostllm-http-status"
ERROR_BODY_KEY = "ghostllm-error"
OVERHEAD_HEADER = "x-ghostllm-overhead-ms"
# Trailers are headers to Envoy: keep what we put there far below its header
# limits, whatever the client sent or the provider said.
MAX_MESSAGE_CHARS = 1000


class Undecodable:
    """Stands for a request message grpc could not decode (see api/services.py)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def undecodable_safe(decode: Callable[[bytes], T]) -> Callable[[bytes], T | Undecodable]:
    def safe(data: bytes) -> T | Undecodable:
        try:
            return decode(data)
        except Exception as exc:  # DecodeError, RecursionError: whatever the bytes provoke
            return Undecodable(str(exc) or type(exc).__name__)

    return safe


def _undecodable(request: Any) -> GhostError | None:
    if type(request) is Undecodable:
        return InvalidRequest(f"The request message could not be decoded: {request.reason}", code="invalid_message")
    return None


def request_context(context: Context) -> RequestContext:
    rc = RequestContext(started=time.monotonic(), started_at=time.time(), peer=context.peer())
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            rc.request_id = str(value)
        elif key == "x-client-ip":
            rc.client_ip = str(value)
        elif key == "user-agent":
            rc.user_agent = str(value)
        elif key == "authorization":
            rc.authorization = str(value)
        elif key == TRACEPARENT:
            rc.traceparent = valid_traceparent(str(value))
        elif key == TRACESTATE:
            rc.tracestate = valid_tracestate(str(value))
    if rc.tracestate and not rc.traceparent:
        rc.tracestate = ""  # it means nothing without a traceparent
    remaining = context.time_remaining()
    if remaining is not None:
        rc.deadline = rc.started + remaining
    return rc


def overhead_header(rc: RequestContext) -> tuple[str, str]:
    """The gateway's own time on the call so far (the worker's, less its upstream waits), in ms."""
    ms = (time.monotonic() - rc.started - rc.upstream_s) * 1000
    return OVERHEAD_HEADER, f"{ms:.3f}" if ms > 0 else "0.000"


def as_ghost_error(exc: Exception, rc: RequestContext | None = None) -> GhostError:
    if isinstance(exc, GhostError):
        return exc
    tags = f"request_id={rc.request_id or '-'} client={rc.client_ip or '-'}" if rc else ""
    log.exception("unhandled error in handler %s", tags)
    return InternalError("The server had an error while processing your request.")


def bounded(err: GhostError) -> GhostError:
    """The error with a message short enough for trailers (the start of it is kept)."""
    if len(err.message) > MAX_MESSAGE_CHARS:
        err.message = err.message[:MAX_MESSAGE_CHARS] + "..."
    if err.param is not None and len(err.param) > 200:
        err.param = err.param[:200]
    return err


async def abort(context: Context, err: GhostError, rc: RequestContext | None = None) -> NoReturn:
    err = bounded(err)
    metadata: list[tuple[str, str]] = [
        (HTTP_STATUS_KEY, str(err.http_status)),
        (ERROR_BODY_KEY, err.to_json()),
    ]
    if rc is not None:
        metadata.append(overhead_header(rc))
    if err.retry_after:
        metadata.append(("retry-after", err.retry_after[:100]))
    # Ours, short and ASCII (x-ratelimit-*): Envoy passes them to REST clients as headers.
    metadata += err.headers
    await context.abort(err.grpc_code, err.message, trailing_metadata=tuple(metadata))
    raise AssertionError("unreachable")  # context.abort always raises


async def send_headers(context: Context, rc: RequestContext) -> None:
    headers = (*rc.response_headers, overhead_header(rc))
    if rc.http_status is not None:
        headers += ((HTTP_STATUS_KEY, str(rc.http_status)),)
    await context.send_initial_metadata(headers)


def unary(
    fn: Callable[[Any, Any, RequestContext], Awaitable[T]],
) -> Callable[[Any, Any, Context], Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Context) -> T:
        rc = request_context(context)
        try:
            bad = _undecodable(request)
            if bad is not None:
                raise bad
            reply = await fn(self, request, rc)
        except aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, as_ghost_error(exc, rc), rc)
        await send_headers(context, rc)
        return reply

    return wrapper


def streaming(
    fn: Callable[[Any, Any, RequestContext], AsyncGenerator[T]],
) -> Callable[[Any, Any, Context], AsyncIterator[T]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Context) -> AsyncIterator[T]:
        rc = request_context(context)
        first = True
        try:
            bad = _undecodable(request)
            if bad is not None:
                raise bad
            # Closed explicitly, so the handler's exchange settles now, not at garbage collection.
            async with aclosing(fn(self, request, rc)) as items:
                async for item in items:
                    if first:
                        first = False
                        await send_headers(context, rc)
                    yield item
        except aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, as_ghost_error(exc, rc), rc)
        # The whole stream's (its headers left with the first chunk): a gRPC client reads it here.
        context.set_trailing_metadata((overhead_header(rc),))

    return wrapper
