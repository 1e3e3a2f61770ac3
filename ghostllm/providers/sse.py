"""Incremental server-sent-events decoding for upstream streams."""

from __future__ import annotations

import orjson

from ghostllm.errors import ProviderError

DONE = object()


class SSEDecoder:
    """Splits a byte stream into the JSON payloads of its `data:` events.

    Fed whatever one socket read returned; returns every complete event in it.
    Comments, `event:`/`id:` lines and keep-alives are skipped.
    """

    __slots__ = ("_buf", "done")

    def __init__(self) -> None:
        self._buf = b""
        self.done = False

    def feed(self, data: bytes) -> list[object]:
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        events = buf.split(b"\n\n")
        self._buf = events.pop()
        out: list[object] = []
        for event in events:
            payload = b""
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    piece = line[5:]
                    if piece.startswith(b" "):
                        piece = piece[1:]
                    payload = payload + b"\n" + piece if payload else piece
            if not payload:
                continue
            if payload == b"[DONE]":
                self.done = True
                out.append(DONE)
                break
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                obj = None
            if not isinstance(obj, dict):
                raise ProviderError(f"upstream sent an invalid stream event: {payload[:200]!r}")
            out.append(obj)
        return out
