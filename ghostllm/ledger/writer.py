"""The ledger sink: settle hands it each usage record; a background task writes them in
batches, every `interval_s` or as soon as a batch is full. A batch is one
`Store.insert_rows`: all or nothing, so a refused batch can be spooled whole; a row
already there is skipped, so one written twice is counted once (on PostgreSQL a COPY and
one INSERT ... SELECT, a fraction of the CPU of an INSERT per row, ours and the server's).

When the store refuses a batch, the batch goes to the spool (on disk, fsynced) and the
request path never notices; every later flush first replays what was spooled (a
restarted worker at once). A spooled file the store refuses while it answers holds a row
it cannot take: its rows are written one by one, and the ones refused on their own are
set aside (`Spool.reject`), so one bad row never holds back the rows around it.

On shutdown (`close`, bounded by its timeout overall) what is buffered goes to the spool
first, before anything is awaited, and is then written from there if the store takes it
in time: a worker killed during its shutdown loses nothing. So nothing is lost but, on a
crash (SIGKILL), the records of at most the last `interval_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from ghostllm.background import pause
from ghostllm.gateway.usage import UsageRecord
from ghostllm.ledger import rows
from ghostllm.ledger.spool import Spool
from ghostllm.store import Store

log = logging.getLogger(__name__)

BATCH_ROWS = 500
# Rows kept in memory at most while a write is in flight; beyond, they are spooled at once.
MAX_PENDING_ROWS = 20_000
# A warning at most this often while the store is away.
WARN_EVERY_S = 60.0
# A refused spooled batch is written row by row to find a bad row; this many refused in a
# row with none taken means the table cannot be written at all (not a bad row).
ISOLATE_PROBES = 8


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
        self._closed = False
        # A write succeeded in the current flush (so the table can be written).
        self._took = False
        self._warned_at = -WARN_EVERY_S
        self._spooled = self.spool.count() > 0
        # Counters, for tests, metrics and the bench.
        self.written = 0
        self.spooled_rows = 0
        self.rejected_rows = 0

    @property
    def queued(self) -> int:
        """Rows in memory not yet written (waiting, or in the write in flight)."""
        return len(self._pending) + len(self._inflight)

    def __call__(self, record: UsageRecord) -> None:
        if self._closed:
            # Settled after close (a call the server cancelled late): straight to disk.
            self._spool([rows.row(record)])
            return
        self._pending.append(rows.row(record))
        if len(self._pending) >= self.batch_rows:
            self._wake.set()
            if len(self._pending) >= MAX_PENDING_ROWS:
                # A write is stuck (a store that takes its time to fail): memory stays bounded,
                # the oldest rows go to disk now (a few ms of fsync, once per MAX_PENDING_ROWS).
                self._spool([self._pending.popleft() for _ in range(len(self._pending) - self.batch_rows)])

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger")

    async def _run(self) -> None:
        if self._spooled:
            await self.flush()  # what an earlier run left in the spool, now rather than in interval_s
        # The flag as well as the cancel: a driver may swallow a cancel (see ghostllm.background).
        while not self._closed:
            await pause(self._wake, self.interval_s)
            self._wake.clear()
            if not self._closed:
                await self.flush()

    def _take(self) -> list[tuple[Any, ...]]:
        return [self._pending.popleft() for _ in range(min(self.batch_rows, len(self._pending)))]

    async def flush(self) -> None:
        """Write what is buffered (and, if the store takes it, what was spooled)."""
        self._took = False
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

    async def _write(self, batch: list[tuple[Any, ...]], *, quiet: bool = False) -> bool:
        try:
            await self.store.insert_rows(rows.TABLE, rows.COLUMNS, batch, conflict=rows.CONFLICT)
        except Exception as exc:
            now = time.monotonic()
            if not quiet and now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning("usage rows cannot be written (%s); keeping them in %s", exc, self.spool.directory)
            return False
        self.written += len(batch)
        self._took = True
        return True

    async def _answers(self) -> bool:
        """Whether the store answers at all (a refused write: the store away, or a bad row)."""
        try:
            await self.store.fetch_all("SELECT 1")
        except Exception:
            return False
        return True

    def _spool(self, batch: list[tuple[Any, ...]]) -> None:
        try:
            self.spool.write(batch)
        except (OSError, TypeError):  # TypeError: orjson's JSONEncodeError
            log.exception("usage rows could not be spooled either; %d kept in memory", len(batch))
            self._pending.extendleft(reversed(batch))
            return
        self._spooled = True
        self.spooled_rows += len(batch)

    async def _replay(self) -> None:
        for path in self.spool.claim():
            try:
                done = await self._replay_file(path)
            except BaseException:
                # Cancelled (shutdown) or failed mid-file: the file is not lost with us.
                self.spool.unclaim(path)
                raise
            if not done:
                # The store is away: back to the pool for whoever can write next (this
                # worker included); what was written of it is skipped then (ON CONFLICT).
                self.spool.unclaim(path)
                return
            path.unlink()
        self._spooled = self.spool.count() > 0

    async def _replay_file(self, path: Path) -> bool:
        found = [rows.current(r) for r in self.spool.read(path)]
        for start in range(0, len(found), self.batch_rows):
            chunk = found[start : start + self.batch_rows]
            if not await self._write(chunk) and not await self._isolate(chunk):
                return False
        log.info("replayed %d spooled usage row(s) from %s", len(found), path.name)
        return True

    async def _isolate(self, chunk: list[tuple[Any, ...]]) -> bool:
        """The store refused `chunk`: if it answers, each row alone, and the ones it refuses
        on their own are set aside. A row counts as refused on its own only when the store
        took other rows meanwhile (or earlier in this flush) and still answers after: a
        table it cannot write at all, or a store that went away, is no bad row (False: the
        chunk waits)."""
        if not await self._answers():
            return False
        proven = self._took  # the table took rows in this flush: it can be written
        refused: list[tuple[Any, ...]] = []
        taken = 0
        for r in chunk:
            if await self._write([r], quiet=True):
                taken += 1
                continue
            refused.append(r)
            if not (taken or proven) and len(refused) >= ISOLATE_PROBES:
                return False  # nothing goes in: the table, not the rows
        if not (taken or proven) or (refused and not await self._answers()):
            return False
        if refused:
            where = self.spool.reject(refused)
            self.rejected_rows += len(refused)
            log.error("the store refused %d usage row(s) on their own; set aside in %s", len(refused), where)
        return True

    async def close(self, timeout_s: float = 5.0) -> None:
        """On shutdown, within `timeout_s` overall: everything buffered is in the spool before
        anything is awaited, then written from there if the store takes it in time (what it
        does not stays spooled, for the next start)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self._spool_buffered()
        if task is not None:
            # Cancelling a write in flight may take the driver a while (a query cancel): not
            # past the deadline. Its batch is spooled already.
            await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
        self._spool_buffered()
        self._took = False
        try:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                await self._replay()
        except TimeoutError:
            log.warning("the store did not take the spooled usage rows in time; they wait in %s", self.spool.directory)
        except Exception:
            log.exception("usage rows could not be replayed on shutdown; they wait in %s", self.spool.directory)

    def _spool_buffered(self) -> None:
        left = self._inflight + list(self._pending)
        self._inflight = []
        self._pending.clear()
        if left:
            self._spool(left)
