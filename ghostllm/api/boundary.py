"""The gRPC boundary: every RPC handler is wrapped by `unary` or `streaming`.

The wrapper builds the call's RequestContext once, from the metadata Envoy
passes along, and is the one place an exception becomes a status: a GhostError
aborts the call with its gRPC code plus trailing metadata carrying the HTTP
status and the OpenAI-shaped body (which Envoy's Lua filter turns into the REST
error); anything else is logged and becomes a 500.
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

log = logging.getLogger(__name__)

T = TypeVar("T")
Context: TypeAlias = aio.ServicerContext[Any, Any]
HTTP_STATUS_KEY = "ghostllm-http-status"
ERROR_BODY_KEY = "ghostllm-error"
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
    remaining = context.time_remaining()
    if remaining is not None:
        rc.deadline = rc.started + remaining
    return rc


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


async def abort(context: Context, err: GhostError) -> NoReturn:
    err = bounded(err)
    metadata: list[tuple[str, str]] = [
        (HTTP_STATUS_KEY, str(err.http_status)),
        (ERROR_BODY_KEY, err.to_json()),
    ]
    if err.retry_after:
        metadata.append(("retry-after", err.retry_after[:100]))
    # Ours, short and ASCII (x-ratelimit-*): Envoy passes them to REST clients as headers.
    metadata += err.headers
    await context.abort(err.grpc_code, err.message, trailing_metadata=tuple(metadata))
    raise AssertionError("unreachable")  # context.abort always raises


async def send_headers(context: Context, rc: RequestContext) -> None:
    headers = list(rc.response_headers)
    if rc.http_status is not None:
        headers.append((HTTP_STATUS_KEY, str(rc.http_status)))
    if headers:
        await context.send_initial_metadata(tuple(headers))


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
            await abort(context, as_ghost_error(exc, rc))
        if rc.response_headers or rc.http_status is not None:
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
                        if rc.response_headers or rc.http_status is not None:
                            await send_headers(context, rc)
                    yield item
        except aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, as_ghost_error(exc, rc))

    return wrapper
