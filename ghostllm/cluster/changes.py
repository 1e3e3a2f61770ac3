"""The change feed: one Redis pub/sub channel on which whoever changes shared state
(the admin API, the CLI) names what changed ("accounts", "catalogue"), so every worker
of every replica drops or reloads what it cached at once instead of waiting out a TTL.

Pub/sub delivers only to those subscribed at the time, so a subscriber that
(re)connects must assume it missed something: `on_state(True)` tells it to start
over; `on_state(False)` that it is on its own (back to short TTLs) until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ghostllm.config import RedisConfig

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

ACCOUNTS = "accounts"
CATALOGUE = "catalogue"
# Between reconnection attempts while Redis is unreachable.
RETRY_S = 1.0


def connect(config: RedisConfig) -> Redis:
    from redis.asyncio import Redis

    return Redis.from_url(config.url, socket_connect_timeout=2, socket_timeout=None, health_check_interval=5)


class ChangeFeed:
    def __init__(self, config: RedisConfig) -> None:
        self.channel = f"{config.prefix}changes"
        self._config = config
        self._redis: Redis | None = None
        self._handlers: dict[str, list[Callable[[], None]]] = {}
        self._state_handlers: list[Callable[[bool], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            self._redis = connect(self._config)
        return self._redis

    def on(self, kind: str, handler: Callable[[], None]) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    def on_state(self, handler: Callable[[bool], None]) -> None:
        self._state_handlers.append(handler)

    async def publish(self, kind: str) -> None:
        """Tell everyone; a failure is logged, not raised (the change is made; TTLs still bound its reach)."""
        try:
            await self.redis.publish(self.channel, kind)
        except Exception as exc:
            log.warning(
                "could not announce a change of %s on Redis (%s): workers see it when their cache expires", kind, exc
            )

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="change-feed")

    def _set_state(self, up: bool) -> None:
        if up:
            self.subscribed.set()
        else:
            self.subscribed.clear()
        for handler in self._state_handlers:
            handler(up)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        data = message.get("data")
        kind = data.decode(errors="replace") if isinstance(data, bytes) else str(data)
        for handler in self._handlers.get(kind, ()):
            try:
                handler()
            except Exception:
                log.exception("change handler for %s failed", kind)

    async def _listen(self) -> None:
        logged = False
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                # The subscription is confirmed by its first message.
                while (await pubsub.get_message(timeout=5)) is None:
                    pass
                self._set_state(True)
                if logged:
                    log.warning("Redis reachable again: changes are pushed")
                logged = False
                while True:
                    message = await pubsub.get_message(timeout=30)
                    if message is not None:
                        self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.subscribed.is_set() or not logged:
                    log.warning("Redis change feed lost (%s): falling back to short cache TTLs", exc)
                    logged = True
                self._set_state(False)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(RETRY_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
