"""The limiter: a principal's levels and their limits, one check per request at
admission, one settle when it ends, and what a backend failure means for the caller."""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ghostllm.auth.principal import Principal
from ghostllm.config import Config, LimitsConfig
from ghostllm.errors import RateLimited, ServiceUnavailable
from ghostllm.limits.core import Backend, Level, LimitsUnavailable, headers, message, retry_after
from ghostllm.limits.memory import MemoryBackend

log = logging.getLogger(__name__)

# A backend failure is logged at most this often (the count is kept in between).
WARN_EVERY_S = 60.0


@dataclass(slots=True)
class Ticket:
    """What an admitted request holds until it settles."""

    levels: tuple[Level, ...]
    windows: tuple[int, ...]
    slot: str
    estimate: int


def _limit(own: int | None, default: int) -> int:
    # The store's value wins; None falls back to the config's default. 0 is "no limit" either way.
    return default if own is None else own


class Limiter:
    def __init__(self, config: LimitsConfig, backend: Backend) -> None:
        self.config = config
        self.backend = backend
        self.fail_open = config.on_redis_error == "open"
        # Slot ids: unique across processes (Redis sees every worker's).
        self._slot_prefix = uuid.uuid4().hex[:12] + ":"
        self._slots = itertools.count()
        # (request id, start time) -> the tickets admitted under it, until the request settles.
        self._pending: dict[tuple[str, float], list[Ticket]] = {}
        self.backend_errors = 0
        self._warned_at = -WARN_EVERY_S

    def levels(self, p: Principal) -> tuple[Level, ...]:
        c = self.config
        out: list[Level] = []
        if p.key_id is not None:
            lv = Level(
                "API key",
                p.key_id,
                _limit(p.rate_limit, c.default_rpm),
                _limit(p.tpm_limit, c.default_tpm),
                _limit(p.max_parallel, c.default_parallel),
            )
            if lv.rpm or lv.tpm or lv.parallel:
                out.append(lv)
        if p.user_id is not None and (c.user_rpm or c.user_tpm or c.user_parallel):
            out.append(Level("user", p.user_id, c.user_rpm, c.user_tpm, c.user_parallel))
        if p.team_id is not None:
            lv = Level("team", p.team_id, p.team_rate_limit or 0, p.team_tpm_limit or 0, p.team_max_parallel or 0)
            if lv.rpm or lv.tpm or lv.parallel:
                out.append(lv)
        return tuple(out)

    async def admit(
        self, p: Principal, request: tuple[str, float], estimate: Callable[[], int]
    ) -> list[tuple[str, str]]:
        """Count the request at every level or refuse it (RateLimited); the x-ratelimit-*
        headers for its answer. `request` names it for `settle`; `estimate` is called only
        when a tokens limit applies."""
        levels = self.levels(p)
        if not levels:
            return []
        tokens = estimate() if any(lv.tpm for lv in levels) else 0
        slot = self._slot_prefix + str(next(self._slots))
        try:
            verdict = await self.backend.admit(levels, tokens, slot)
        except LimitsUnavailable as exc:
            self._failed(exc)
            if self.fail_open:
                return []
            raise ServiceUnavailable(
                "Rate limits cannot be checked right now; please try again shortly.",
                code="rate_limits_unavailable",
                retry_after="1",
            ) from None
        sent = headers(verdict)
        if not verdict.ok:
            raise RateLimited(message(verdict, levels, tokens), retry_after=retry_after(verdict), headers=tuple(sent))
        self._pending.setdefault(request, []).append(Ticket(levels, verdict.windows, slot, tokens))
        return sent

    def settle(self, request: tuple[str, float], total_tokens: int) -> None:
        """Once per request: the real tokens replace the estimate, the parallel slots are freed."""
        tickets = self._pending.get(request)
        if not tickets:
            return
        t = tickets.pop()
        if not tickets:
            del self._pending[request]
        self.backend.settle(t.levels, t.windows, t.slot, total_tokens - t.estimate)

    def _failed(self, exc: Exception) -> None:
        self.backend_errors += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            how = "serving unchecked (on_redis_error: open)" if self.fail_open else "refusing with 503"
            log.warning("rate limits unavailable (%s): %s; %d failure(s) so far", exc, how, self.backend_errors)

    async def close(self) -> None:
        await self.backend.close()


def make_limiter(config: Config) -> Limiter:
    """Redis when one is configured (exact across workers and replicas), else in-process."""
    c = config.limits
    slot_ttl_ms = int(1000 * (c.slot_ttl_s or config.server.request_timeout_s + 60))
    backend: Backend
    if config.redis.url:
        from ghostllm.limits.redis_backend import RedisBackend, connect

        backend = RedisBackend(connect(config.redis.url, c.redis_timeout_s), config.redis.prefix, c.redis_timeout_s,
                               slot_ttl_ms)  # fmt: skip
    else:
        backend = MemoryBackend(slot_ttl_ms)
    return Limiter(c, backend)
