"""A per-worker cache of store lookups (keys by digest, users by id) so a request
never waits on the store while its entry is fresh.

An entry older than the TTL is looked up again before it is trusted (one lookup per
key at a time, however many requests wait on it), so a change in the store is seen
within the TTL. When the store cannot answer, a cached entry is used as it was: an
outage never turns a valid key into a 401. An entry never cached gets the
`Unavailable` the caller maps to 503. Absent values (an unknown key) are cached
too, so garbage keys cannot hammer the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

MAX_ENTRIES = 100_000


class Unavailable(Exception):
    """The store could not answer for an entry not cached."""


class LookupCache(Generic[K, V]):
    def __init__(
        self,
        lookup: Callable[[K], Awaitable[V | None]],
        *,
        ttl_s: float,
        timeout_s: float,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.max_entries = max_entries
        self._clock = clock
        # key -> (value, fetched at); oldest first, so the least recently fetched goes first.
        self._entries: OrderedDict[K, tuple[V | None, float]] = OrderedDict()
        self._inflight: dict[K, asyncio.Future[V | None]] = {}
        self._outage_logged = False
        # Lookups answered from a fresh entry, and the others (for metrics).
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry[1] < self.ttl_s:
            self.hits += 1
            return entry[0]
        self.misses += 1
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(key))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _f: self._inflight.pop(key, None))
        # Shielded: a caller that goes away must not cancel the lookup others wait on.
        return await asyncio.shield(pending)

    async def _fetch(self, key: K) -> V | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                value = await self._lookup(key)
        except Exception as exc:
            entry = self._entries.get(key)
            if not self._outage_logged:
                self._outage_logged = True
                log.warning("the store cannot be reached (%s): cached keys keep working, new ones get 503", exc)
            if entry is None:
                raise Unavailable(str(exc) or type(exc).__name__) from exc
            # Trusted for another TTL before the store is tried again: requests during an
            # outage must not each wait out the timeout.
            self._entries[key] = (entry[0], self._clock())
            return entry[0]
        if self._outage_logged:
            self._outage_logged = False
            log.warning("the store answers again")
        # Whatever it was, a fresh lookup makes the entry current (dropped first so it moves to the end).
        self._entries.pop(key, None)
        self._entries[key] = (value, self._clock())
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget everything (a change was pushed): the next use of each entry looks it up.
        Entries stay usable as the outage fallback, marked as stale."""
        for key, (value, _at) in self._entries.items():
            self._entries[key] = (value, float("-inf"))
