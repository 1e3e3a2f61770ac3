"""The access log sink: one JSON object per request (the usage record: ids, counts,
timings, statuses, the caller's address and user agent, W3C trace and span ids), never per
chunk, never prompt or completion text, never a key (only its id). Lines are buffered
and written once per event-loop turn, so a busy worker makes one write for many requests,
never one per request; each write holds whole lines and stays under PIPE_BUF, so workers
sharing stdout never interleave within a line."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import BinaryIO

import orjson

from ghostllm.gateway.usage import UsageRecord

PIPE_BUF = 4096


class AccessLog:
    def __init__(self, target: str) -> None:
        """`stdout`, or a file path (appended to)."""
        self._out: BinaryIO = sys.stdout.buffer if target == "stdout" else open(target, "ab")  # noqa: SIM115
        self._fd = self._out.fileno()
        self._pending: list[bytes] = []
        self._scheduled = False

    def __call__(self, record: UsageRecord) -> None:
        self._pending.append(orjson.dumps(record) + b"\n")
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        lines, self._pending = self._pending, []
        out = b""
        for line in lines:
            if out and len(out) + len(line) > PIPE_BUF:
                self._write(out)
                out = b""
            out += line
        if out:
            self._write(out)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        self.flush()
        if self._out is not sys.stdout.buffer:
            self._out.close()
