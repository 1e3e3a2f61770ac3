"""The ledger sink: settle hands it each usage record; a background task writes them,
one prepared statement and one transaction per batch, every `interval_s` or as soon as a batch is full.

When the store refuses a batch, the batch goes to the spool (on disk, fsynced) and the
request path never notices; every later successful write first replays what was
spooled. On shutdown what is buffered is written, or spooled. So nothing is lost but,
on a crash (SIGKILL), the records of at most the last `interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from ghostllm.gateway.usage import UsageRecord
from ghostllm.ledger import rows
from ghostllm.ledger.spool import Spool
from ghostllm.store import Store

log = logging.getLogger(__name__)

BATCH_ROWS = 500
# A warning at most this often while the store is away.
WARN_EVERY_S = 60.0


class Ledger:
    def __init__(self, store: Store, spool_dir: Path, *, interval_s: float = 0.5, batch_rows: int = BATCH_ROWS) -> None:
        self.store = store
        self.spool = Spool(spool_dir)
        self.interval_s = interval_s
        self.batch_rows = batch_rows
        self._pending: deque[tuple[Any, ...]] = deque()
        # The batch being written: spooled on shutdown if the write did not finish (the
        # write may have landed, so spooled rows may repeat: ON CONFLICT makes that harmless).
        self._inflight: list[tuple[Any, ...]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._warned_at = -WARN_EVERY_S
        self._spooled = self.spool.count() > 0
        # Counters, for tests, metrics and the bench.
        self.written = 0
        self.spooled_rows = 0

    def __call__(self, record: UsageRecord) -> None:
        self._pending.append(rows.row(record))
        if len(self._pending) >= self.batch_rows:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            await self.flush()

    def _take(self) -> list[tuple[Any, ...]]:
        return [self._pending.popleft() for _ in range(min(self.batch_rows, len(self._pending)))]

    async def flush(self) -> None:
        """Write what is buffered (and, if the store takes it, what was spooled)."""
        while self._pending:
            batch = self._inflight = self._take()
            ok = await self._write(batch)
            self._inflight = []
            if not ok:
                # The store is away: spool this and the rest, and do not hammer it.
                rest = list(self._pending)
                self._pending.clear()
                self._spool(batch + rest)
                return
        if self._spooled:
            await self._replay()

    async def _write(self, batch: list[tuple[Any, ...]]) -> bool:
        try:
            await self.store.execute_many(rows.INSERT, batch)
        except Exception as exc:
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning("usage rows cannot be written (%s); keeping them in %s", exc, self.spool.directory)
            return False
        self.written += len(batch)
        return True

    def _spool(self, batch: list[tuple[Any, ...]]) -> None:
        try:
            self.spool.write(batch)
        except OSError:
            log.exception("usage rows could not be spooled either; %d kept in memory", len(batch))
            self._pending.extendleft(reversed(batch))
            return
        self._spooled = True
        self.spooled_rows += len(batch)

    async def _replay(self) -> None:
        for path in self.spool.claim():
            rows_ = self.spool.read(path)
            for start in range(0, len(rows_), self.batch_rows):
                if not await self._write(rows_[start : start + self.batch_rows]):
                    # Back to the pool for whoever can write next (this worker included).
                    os.rename(path, path.with_name(path.name.split(".claimed-")[0]))
                    return
            path.unlink()
            log.info("replayed %d spooled usage row(s) from %s", len(rows_), path.name)
        self._spooled = self.spool.count() > 0

    async def close(self, timeout_s: float = 5.0) -> None:
        """On shutdown: everything buffered is written, or spooled."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self.flush(), timeout_s)
        left = self._inflight + list(self._pending)
        self._inflight = []
        self._pending.clear()
        if left:
            self._spool(left)
