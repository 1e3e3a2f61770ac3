"""Incremental newline-delimited JSON framing for upstream streams (Ollama's)."""

from __future__ import annotations

from ghostllm.errors import ProviderError


class NDJSONFramer:
    """Splits a byte stream into its lines, each one JSON value.

    Fed whatever one socket read returned; returns every line completed by it
    (without its `\\n` or `\\r\\n`; blank lines skipped). A line that grows past
    `max_line_bytes` without ending is the upstream's fault, not a reason to
    buffer without bound.
    """

    __slots__ = ("_parts", "_size", "max_line_bytes")

    def __init__(self, max_line_bytes: int = 64 * 1024 * 1024) -> None:
        # The unfinished line, as the reads that brought it: joined only once it ends,
        # so a long line costs linear time, not a rescan per read.
        self._parts: list[bytes] = []
        self._size = 0
        self.max_line_bytes = max_line_bytes

    def feed(self, data: bytes) -> list[bytes]:
        if b"\n" not in data:
            if data:
                self._size += len(data)
                if self._size > self.max_line_bytes:
                    raise ProviderError(f"upstream stream line longer than {self.max_line_bytes} bytes")
                self._parts.append(data)
            return []
        parts = self._parts
        buf = b"".join((*parts, data)) if parts else data
        lines = buf.split(b"\n")
        rest = lines.pop()
        self._parts = [rest] if rest else []
        self._size = len(rest)
        if self._size > self.max_line_bytes:
            raise ProviderError(f"upstream stream line longer than {self.max_line_bytes} bytes")
        out: list[bytes] = []
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if line.strip():
                out.append(line)
        return out
