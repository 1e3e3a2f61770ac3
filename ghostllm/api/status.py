"""Turning exceptions into gRPC statuses (and, through Envoy's Lua filter, REST errors).

Every handler is wrapped by `unary` or `streaming`: a GhostError aborts the call
with its gRPC code plus trailing metadata carrying the HTTP status and the
OpenAI-shaped body; anything else is logged and becomes a 500. Nothing else in
the package decides what status a client sees.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias, TypeVar

from grpc import aio

from ghostllm.errors import GhostError, InternalError

log = logging.getLogger(__name__)

T = TypeVar("T")
Context: TypeAlias = aio.ServicerContext[Any, Any]
HTTP_STATUS_KEY = "ghostllm-http-status"
ERROR_BODY_KEY = "ghostllm-error"


def request_tags(context: Context | None) -> str:
    """The request id and client address Envoy passes along, for log lines."""
    if context is None:
        return ""
    md = dict(context.invocation_metadata() or ())
    return f"request_id={md.get('x-request-id', '-')} client={md.get('x-client-ip', '-')}"


def as_ghost_error(exc: Exception, context: Context | None = None) -> GhostError:
    if isinstance(exc, GhostError):
        return exc
    log.exception("unhandled error in handler %s", request_tags(context))
    return InternalError("The server had an error while processing your request.")


async def abort(context: Context, err: GhostError) -> NoReturn:
    metadata: list[tuple[str, str]] = [
        (HTTP_STATUS_KEY, str(err.http_status)),
        (ERROR_BODY_KEY, err.to_json()),
    ]
    if err.retry_after:
        metadata.append(("retry-after", err.retry_after))
    await context.abort(err.grpc_code, err.message, trailing_metadata=tuple(metadata))
    raise AssertionError("unreachable")  # context.abort always raises


def unary(
    fn: Callable[[Any, Any, Context], Awaitable[T]],
) -> Callable[[Any, Any, Context], Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Context) -> T:
        try:
            return await fn(self, request, context)
        except aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, as_ghost_error(exc, context))

    return wrapper


def streaming(
    fn: Callable[[Any, Any, Context], AsyncIterator[T]],
) -> Callable[[Any, Any, Context], AsyncIterator[T]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Context) -> AsyncIterator[T]:
        try:
            async for item in fn(self, request, context):
                yield item
        except aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, as_ghost_error(exc, context))

    return wrapper
