"""What the dev upstream has seen, exposed at GET /_dev/stats for tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ghostllm.devupstream.protocol import Request


@dataclass(slots=True)
class Stats:
    requests: int = 0
    active_streams: int = 0
    completed_streams: int = 0
    # Streams whose client went away before [DONE]; server-side cuts (cut-stream) are not counted.
    cancelled_streams: int = 0
    # Non-streaming requests (slow-*, hang) whose client went away before the answer.
    cancelled_requests: int = 0
    # A gauge, like active_streams: requests waiting before they answer (slow-*, hang, a
    # non-streaming stall-after-N).
    waiting_requests: int = 0
    last: Request | None = None

    def record(self, request: Request) -> None:
        self.requests += 1
        # Kept raw: decoding headers on every request would cost more than the rest of the fast path.
        self.last = request

    def reset(self) -> None:
        # active_streams and waiting_requests are gauges, not counters: they survive a reset.
        self.requests = self.completed_streams = self.cancelled_streams = self.cancelled_requests = 0
        self.last = None

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "active_streams": self.active_streams,
            "completed_streams": self.completed_streams,
            "cancelled_streams": self.cancelled_streams,
            "cancelled_requests": self.cancelled_requests,
            "waiting_requests": self.waiting_requests,
            "last_request": None if self.last is None else _describe(self.last),
        }


def _describe(request: Request) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in request.headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    try:
        body: object = orjson.loads(request.body) if request.body else None
    except orjson.JSONDecodeError:
        body = None
    return {
        "method": request.method.decode("latin-1"),
        "path": request.target.decode("latin-1"),
        "headers": headers,
        "body": body,
    }
