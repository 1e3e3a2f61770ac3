"""Provider model discovery in `serve`: once before the workers start, then every
`catalogue.discovery_interval_s` in the background, never on a request's path.

The lists go to one JSON file in the run directory ({provider id: [model names]}), which
every worker reads at start and follows (server/catalogue_sync.py), so all of them, also a
restarted one, serve the same catalogue. The file is replaced whole (written aside, then
renamed) and only when a list changed. A provider that does not answer keeps the list it had
(a blip never empties the catalogue); one that answers with fewer models loses the others.

The supervisor is one thread on purpose (it forks workers with a preexec_fn, which other
threads would make unsafe), so rounds run on an event loop of its own, which the supervisor
runs between its checks (`run_for`) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import orjson

from ghostllm.background import stop_task
from ghostllm.config import Config
from ghostllm.routing.catalogue import discover_configured

log = logging.getLogger(__name__)
# How long closing waits for a round in flight (its providers' connections being closed).
STOP_S = 2.0


def changed_lists(old: dict[str, list[str]], new: dict[str, list[str]]) -> list[str]:
    """What a round changed, for the log: per provider, the models added and gone."""
    out = []
    for provider in sorted(set(old) | set(new)):
        before, after = set(old.get(provider, ())), set(new.get(provider, ()))
        added, gone = sorted(after - before), sorted(before - after)
        if added or gone:
            parts = [f"added {', '.join(added)}"] * bool(added) + [f"gone {', '.join(gone)}"] * bool(gone)
            out.append(f"provider {provider}: {'; '.join(parts)}")
    return out


class Discovery:
    def __init__(self, config: Config, path: Path) -> None:
        self.config = config
        self.path = path
        self.interval_s = config.catalogue.discovery_interval_s
        # The lists as last written, by provider id.
        self.found: dict[str, list[str]] = {}
        self._loop = asyncio.new_event_loop() if any(p.discover_models for p in config.providers) else None
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        """Does any provider discover its models (else there is no file for workers to watch)?"""
        return self._loop is not None

    def start(self) -> None:
        """The first round, whose file the workers read when they start; then the rounds in the background."""
        if self._loop is None:
            self._write({})
            return
        self._loop.run_until_complete(self.refresh(first=True))
        self._task = self._loop.create_task(self._run(), name="discovery")

    def run_for(self, seconds: float) -> None:
        """The supervisor's pause: background rounds make progress meanwhile."""
        if self._loop is None:
            time.sleep(seconds)
        else:
            self._loop.run_until_complete(asyncio.sleep(seconds))

    def close(self) -> None:
        if self._loop is None:
            return
        self._loop.run_until_complete(stop_task(self._task, STOP_S))
        self._loop.close()
        self._loop = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except Exception:  # whatever a provider's listing raised: the lists stay, the next round tries again
                log.exception("model discovery failed; the last lists stay")

    async def refresh(self, *, first: bool = False) -> bool:
        """One round; whether the file changed."""
        answered = await discover_configured(self.config)
        found = {**self.found, **{pid: sorted(names) for pid, names in answered.items()}}
        silent = sorted(set(self.found) - set(answered))
        if silent:
            kept = "its last list stays" if len(silent) == 1 else "their last lists stay"
            log.info("model discovery: no answer from %s; %s", ", ".join(silent), kept)
        if found == self.found and not first:
            return False
        for line in changed_lists(self.found, found) if not first else ():
            log.info("model discovery: %s", line)
        self._write(found)
        self.found = found
        return True

    def _write(self, found: dict[str, list[str]]) -> None:
        aside = self.path.with_name(self.path.name + ".new")
        aside.write_bytes(orjson.dumps(found, option=orjson.OPT_SORT_KEYS))
        os.replace(aside, self.path)
