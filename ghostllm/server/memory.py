"""Giving memory back after large requests.

A request body near the 32 MiB limit passes through several buffers in a worker
(gRPC's, the bytes, the parsed JSON, the upstream body). glibc keeps most of
what those free on its heap, so a worker that served a burst of large requests
would stay hundreds of MB above its baseline. This sink asks glibc to return the
free heap (malloc_trim) shortly after such a request has ended; small requests,
the hot path, never trigger it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
from collections.abc import Callable

from ghostllm.gateway.usage import UsageRecord

LARGE_BODY_BYTES = 1024 * 1024
# Long enough for the request's own buffers to be freed once its handler has returned.
TRIM_DELAY_S = 0.2


def _malloc_trim() -> Callable[[int], int] | None:
    with contextlib.suppress(OSError, AttributeError):
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
        return trim
    return None


class ReleaseMemory:
    def __init__(self, large_body_bytes: int = LARGE_BODY_BYTES) -> None:
        self.large_body_bytes = large_body_bytes
        self._trim = _malloc_trim()
        self._pending: asyncio.TimerHandle | None = None

    def __call__(self, record: UsageRecord) -> None:
        if record.request_bytes < self.large_body_bytes or self._trim is None:
            return
        if self._pending is not None:
            self._pending.cancel()
        self._pending = asyncio.get_running_loop().call_later(TRIM_DELAY_S, self._release)

    def _release(self) -> None:
        self._pending = None
        if self._trim is not None:
            self._trim(0)
