"""Credentials for tests: every stack started by tests/support/procs.py accepts
ADMIN_KEY as its master admin key (GHOSTLLM_ADMIN_KEY)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

ADMIN_KEY = "sk-test"
AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
METADATA = (("authorization", f"Bearer {ADMIN_KEY}"),)


class _AddAuthorization(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
):
    """Adds `authorization` to every call that does not carry one already."""

    def __init__(self, value: str) -> None:
        self.value = value

    def _details(self, details: Any) -> Any:
        metadata: Sequence[tuple[str, str | bytes]] = tuple(details.metadata or ())
        if any(k == "authorization" for k, _ in metadata):
            return details
        return details._replace(metadata=(*metadata, ("authorization", self.value)))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


def authorized(channel: grpc.Channel, key: str = ADMIN_KEY) -> grpc.Channel:
    """`channel` with `Bearer key` on every call (a call's own authorization wins)."""
    return grpc.intercept_channel(channel, _AddAuthorization(f"Bearer {key}"))
