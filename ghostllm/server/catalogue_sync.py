"""Keeps a worker's catalogue in step with the store, off the request path.

When it reloads:
- on a poll, every `catalogue.poll_s` (`poll_pushed_s` while the Redis change feed is
  subscribed): one small query (how many providers and models there are, and their latest
  updated_at); a different answer means something changed (and at least every minute
  whatever it says);
- at once on a "catalogue" message of the change feed (published by whichever worker or
  CLI made the change), on this worker's own admin API changes (Worker.changed), and when
  the feed (re)subscribes (it may have missed messages meanwhile).

A reload reads every provider and model row, decrypts the stored provider keys (in memory
only; never logged), merges them with the config (routing/merge.py: the store wins) and
swaps the result in (routing/live.py). A store that cannot be read is logged once and the
catalogue stays as last loaded; that it answers again is logged too.

The models providers list (discovery) come from `serve`, which asks them again every
`catalogue.discovery_interval_s` and replaces one file when a list changed
(server/discovery.py). The loop reads that file every `catalogue.poll_s` (also while pushed
changes slow the store's poll) and, when its lists changed, rebuilds the
catalogue from the last merge with the new lists: no store round trip, so a store outage
does not hold discovered models back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import orjson

from ghostllm.accounts.cipher import SecretCipher, SecretError
from ghostllm.accounts.keyring import load_cipher
from ghostllm.accounts.models import ModelRepository
from ghostllm.accounts.providers import ProviderRepository
from ghostllm.accounts.records import ProviderRecord
from ghostllm.background import pause, stop_task
from ghostllm.config import Config
from ghostllm.errors import ConfigError
from ghostllm.routing.live import LiveCatalogue
from ghostllm.routing.merge import Merged, StoredProvider, merge
from ghostllm.store import Store

log = logging.getLogger(__name__)
# How long stopping waits for a check in flight (a query being cancelled).
STOP_S = 2.0

FINGERPRINT = (
    "SELECT (SELECT COUNT(*) FROM providers), (SELECT MAX(updated_at) FROM providers),"
    " (SELECT COUNT(*) FROM models), (SELECT MAX(updated_at) FROM models)"
)
# A store that does not answer within this long counts as failing (the poll carries on).
TIMEOUT_S = 5.0
# A full reload at least this often, whatever the fingerprint says: it misses a change whose
# updated_at is not the latest (a replica's clock behind the others', a row edited by hand).
RELOAD_EVERY_S = 60.0


class DiscoveredFile:
    """The supervisor's discovery result ({provider id: [model names]}), parsed again only when
    its bytes changed. Reading a few KB per poll costs next to nothing and, unlike a stat,
    cannot miss a rewrite (one may keep the size, a reused inode and, within a clock tick,
    the mtime)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._last: bytes | None = None

    def read(self) -> dict[str, list[str]] | None:
        """Its lists when they are new since the last read (the first read included), else None."""
        if self.path is None:
            return None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("catalogue: cannot read %s (%s); the discovered models stay as they are", self.path, exc)
            return None
        if raw == self._last:
            return None
        self._last = raw  # a broken file is said once, not at every poll
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            log.warning("catalogue: %s is not JSON (%s); the discovered models stay as they are", self.path, exc)
            return None
        if not isinstance(data, dict):
            return {}
        return {str(k): [str(n) for n in v] for k, v in data.items() if isinstance(v, list)}


class CatalogueSync:
    def __init__(
        self,
        config: Config,
        store: Store,
        live: LiveCatalogue,
        *,
        timeout_s: float = TIMEOUT_S,
        discovered: DiscoveredFile | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.live = live
        self.timeout_s = timeout_s
        self.poll_s = config.catalogue.poll_s
        self.discovered = discovered
        # The last merge of the store with the config: what a new discovery result is applied to.
        self._merged: Merged | None = None
        self._next_poll = 0.0
        self._wake = asyncio.Event()
        self._forced = False
        self._fingerprint: tuple[Any, ...] | None = None
        self._failing = False
        self._warned: frozenset[str] = frozenset()
        self._cipher: SecretCipher | None = None
        self._task: asyncio.Task[None] | None = None
        self._loaded_at = -1e9
        self.reloads = 0

    def trigger(self) -> None:
        """Reload now (a change was announced); safe to call from any callback on the loop."""
        self._forced = True
        self._wake.set()

    def feed_state(self, up: bool) -> None:
        """The change feed (un)subscribed: pushed changes let the poll slow down; a fresh
        subscription may have missed some, so it reloads."""
        catalogue = self.config.catalogue
        self.poll_s = catalogue.poll_pushed_s if up else catalogue.poll_s
        if up:
            self.trigger()
        else:
            self._next_poll = 0.0  # poll now, then on the short interval
            self._wake.set()

    async def start(self) -> None:
        """The first load, before the worker serves (so a restarted worker never answers
        without the store's models), then the background loop."""
        await self._attempt(forced=True)
        self._task = asyncio.create_task(self._run(), name="catalogue-sync")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task, STOP_S)

    def _sleep_s(self) -> float:
        until_poll = max(0.0, self._next_poll - time.monotonic())
        watching = self.discovered is not None and self.discovered.path is not None
        return min(until_poll, self.config.catalogue.poll_s) if watching else until_poll

    async def _run(self) -> None:
        while True:
            await pause(self._wake, self._sleep_s())
            self._wake.clear()
            await self.follow_discovery()
            forced, self._forced = self._forced, False
            if not forced and time.monotonic() < self._next_poll:
                continue
            stale = time.monotonic() - self._loaded_at > RELOAD_EVERY_S
            await self._attempt(forced=forced or stale)

    async def follow_discovery(self) -> None:
        """A new discovery result, applied to the last merge (the config alone until the store
        has been read)."""
        found = self.discovered.read() if self.discovered is not None else None
        if found is None or found == self.live.discovered:
            return
        self.live.discovered = found
        try:
            changes = await self.live.apply(self._merged or merge(self.config, [], []))
        except Exception as exc:  # a provider that fails to start: the next reload tries again
            log.warning("catalogue: discovered models not applied (%s: %s)", type(exc).__name__, exc)
            return
        if changes:
            log.info(
                "catalogue reloaded (discovery): %s (%d models)", changes.describe(), len(self.live.catalogue.models)
            )

    async def _attempt(self, *, forced: bool) -> None:
        self._next_poll = time.monotonic() + self.poll_s
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._check(forced)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever the store or a bad row raises: the worker serves on
            if not self._failing:
                log.warning(
                    "catalogue: cannot read providers and models from the store (%s: %s); serving the catalogue"
                    " as last loaded until it answers",
                    type(exc).__name__,
                    exc,
                )
                self._failing = True
            return
        if self._failing:
            log.warning("catalogue: the store answers again")
            self._failing = False

    async def _check(self, forced: bool) -> None:
        # Taken before the rows are read: a change made meanwhile shows in the next poll.
        found = await self.store.fetch_all(FINGERPRINT)
        fingerprint = tuple(found[0]) if found else ()
        if forced or fingerprint != self._fingerprint:
            await self.reload()
            self._fingerprint = fingerprint

    async def reload(self) -> None:
        """Read the store, merge, swap; logs what changed and what was left out."""
        warnings: list[str] = []
        providers = [await self._stored(p, warnings) for p in await ProviderRepository(self.store).list_providers()]
        models = [m.to_config() for m in await ModelRepository(self.store).list_models()]
        merged = merge(self.config, [p for p in providers if p is not None], models)
        changes = await self.live.apply(merged)
        self._merged = merged
        self.reloads += 1
        self._loaded_at = time.monotonic()
        # Each problem once, while it lasts (a later reload still having it says nothing new).
        current = frozenset((*warnings, *merged.warnings))
        for warning in sorted(current - self._warned):
            log.warning("catalogue: %s", warning)
        self._warned = current
        if changes:
            log.info("catalogue reloaded: %s (%d models)", changes.describe(), len(self.live.catalogue.models))

    async def _stored(self, record: ProviderRecord, warnings: list[str]) -> StoredProvider | None:
        """The row as the merge takes it; None when its stored key cannot be decrypted (the
        row is then not used: the config's definition of that provider, if any, stands)."""
        key: str | None = None
        if record.enabled and record.has_key:
            try:
                key = await self._key(record.id)
            except (ConfigError, SecretError) as exc:
                warnings.append(f"provider {record.id}: the stored API key cannot be decrypted ({exc}); row not used")
                return None
        return StoredProvider(
            record.id, record.enabled, record.provider_type, record.base_url, dict(record.config), key or ""
        )

    async def _key(self, provider_id: str) -> str | None:
        if self._cipher is not None:
            with contextlib.suppress(SecretError):
                return await ProviderRepository(self.store, self._cipher).get_key(provider_id)
        # First use, or the key may have been rotated (`secrets rotate` replaced the key file): load it again.
        self._cipher = load_cipher(self.config)
        return await ProviderRepository(self.store, self._cipher).get_key(provider_id)
