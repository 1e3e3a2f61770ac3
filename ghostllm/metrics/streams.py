"""Streams in flight: the pipeline's last admit stage counts a streaming request in, its
settle counts it out. Keyed like the limits' tickets (request id, arrival time), since a
usage record is all settle hands a sink; a stream refused before this stage was never
counted in, so its record counts nothing out."""

from __future__ import annotations

from ghostllm.gateway.exchange import Exchange
from ghostllm.gateway.pipeline import MAX_FIELD_CHARS
from ghostllm.gateway.usage import UsageRecord


class ActiveStreams:
    def __init__(self) -> None:
        self.count = 0
        # (request id as recorded, arrival time) -> streams admitted under it and not yet settled.
        self._open: dict[tuple[str, float], int] = {}

    async def __call__(self, ex: Exchange) -> None:
        if not ex.stream:
            return
        key = (ex.ctx.request_id[:MAX_FIELD_CHARS], ex.ctx.started_at)
        self._open[key] = self._open.get(key, 0) + 1
        self.count += 1

    def settle(self, record: UsageRecord) -> None:
        if not record.stream:
            return
        key = (record.request_id, record.started_at)
        n = self._open.get(key)
        if n is None:
            return
        if n == 1:
            del self._open[key]
        else:
            self._open[key] = n - 1
        self.count -= 1
