"""Incremental server-sent-events framing for upstream streams."""

from __future__ import annotations

from ghostllm.errors import ProviderError


class SSEFramer:
    """Splits a byte stream into the `data` payloads of its events.

    Fed whatever one socket read returned; returns the payload of every event
    completed by it (multi-line data joined with newlines). Comments,
    `event:`/`id:` lines and keep-alives are skipped. An event that grows past
    `max_event_bytes` without ending is the upstream's fault, not a reason to
    buffer without bound.
    """

    __slots__ = ("_parts", "_size", "max_event_bytes")

    def __init__(self, max_event_bytes: int = 64 * 1024 * 1024) -> None:
        # The unfinished event, as the reads that brought it: joined only once it ends,
        # so a large event costs linear time, not a rescan per read.
        self._parts: list[bytes] = []
        self._size = 0
        self.max_event_bytes = max_event_bytes

    def feed(self, data: bytes) -> list[bytes]:
        parts = self._parts
        if parts and b"\r" not in data and b"\n\n" not in data and not (data[:1] == b"\n" and parts[-1][-1:] == b"\n"):
            self._size += len(data)
            if self._size > self.max_event_bytes:
                raise ProviderError(f"upstream stream event larger than {self.max_event_bytes} bytes")
            parts.append(data)
            return []
        buf = b"".join((*parts, data)) if parts else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        events = buf.split(b"\n\n")
        rest = events.pop()
        self._parts = [rest] if rest else []
        self._size = len(rest)
        if self._size > self.max_event_bytes:
            raise ProviderError(f"upstream stream event larger than {self.max_event_bytes} bytes")
        out: list[bytes] = []
        for event in events:
            payload = b""
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    piece = line[5:]
                    if piece.startswith(b" "):
                        piece = piece[1:]
                    payload = payload + b"\n" + piece if payload else piece
            if payload:
                out.append(payload)
        return out
