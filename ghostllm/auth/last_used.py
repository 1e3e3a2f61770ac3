"""`api_keys.last_used_at`, written off the request path: a request only notes its key
id in a set; a background task writes the set in one statement every few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ghostllm.accounts import rows
from ghostllm.accounts.repository import AccountRepository
from ghostllm.background import stop_task

log = logging.getLogger(__name__)

# Ids kept for the next flush while the store is down, at most.
MAX_PENDING = 100_000


class LastUsed:
    def __init__(self, repository: AccountRepository, interval_s: float) -> None:
        self._repository = repository
        self.interval_s = interval_s
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def touch(self, key_id: str) -> None:
        if len(self._pending) < MAX_PENDING:
            self._pending.add(key_id)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="last-used")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        ids, self._pending = self._pending, set()
        try:
            await self._repository.touch_keys(ids, rows.now())
        except Exception as exc:
            log.warning("could not record key use (%s); retrying with the next batch", exc)
            self._pending |= set(list(ids)[: MAX_PENDING - len(self._pending)])

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task, 1.0)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.flush()
