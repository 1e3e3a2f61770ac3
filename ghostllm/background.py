"""Background loops (ledger writer, catalogue sync, last-used batches): how one waits
between rounds and how it is stopped, so a shutdown always ends.

Python 3.11's `asyncio.wait_for` can swallow a cancel that lands just as what it waits on
finishes (bpo-42130), and a loop that lost its cancel runs on while `await task` waits for
it forever. So loops wait with `asyncio.timeout`, which does not, and stopping waits a
bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


async def pause(wake: asyncio.Event, seconds: float) -> None:
    """Until `wake` is set or `seconds` have passed (a loop's wait between two rounds)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()


async def stop_task(task: asyncio.Task[None] | None, timeout_s: float) -> None:
    """Cancel a loop and wait at most `timeout_s` for it to end (it is left behind, and
    said so, if it does not: the process is exiting)."""
    if task is None or task.done():
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.warning("background task %r did not stop within %.1f s", task.get_name(), timeout_s)
    elif not task.cancelled() and task.exception() is not None:
        log.error("background task %r had failed: %r", task.get_name(), task.exception())
