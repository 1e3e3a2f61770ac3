"""The limiter: a principal's levels with their rate limits and budgets, one check per
request at admission, one settle when it ends, and what a backend failure means for the
caller.

Budgets are checked with the rate limits, in the same call (one round trip): a request is
refused once a level's spend in the current period is at or over its budget, and what a
request costs is added when it settles. Requests in flight are not reserved against a
budget (their cost is unknown until they end), so concurrent requests admitted just below
a budget may take it over by their own cost; none is admitted after.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from ghostllm.auth.principal import Budget, Principal
from ghostllm.config import Config, LimitsConfig
from ghostllm.errors import QuotaExceeded, RateLimited, ServiceUnavailable
from ghostllm.limits.core import (
    BUDGET,
    SEED,
    Backend,
    Level,
    LimitsUnavailable,
    Verdict,
    headers,
    message,
    quota_message,
    retry_after,
)
from ghostllm.limits.memory import MemoryBackend
from ghostllm.limits.periods import Periods

log = logging.getLogger(__name__)

# What the ledger holds as spent by a level ("API key", "user", "team") and id since a time
# (None: ever), in nano-USD: where a spend counter starts.
Spent = Callable[[str, str, datetime | None], Awaitable[int]]
# A client told its budget is spent has nothing to gain by retrying (the OpenAI SDKs obey this).
NO_RETRY = (("x-should-retry", "false"),)

# A backend failure is logged at most this often (the count is kept in between).
WARN_EVERY_S = 60.0


@dataclass(slots=True)
class Ticket:
    """What an admitted request holds until it settles."""

    levels: tuple[Level, ...]
    windows: tuple[int, ...]
    slot: str
    estimate: int
    budgets: bool


@dataclass(frozen=True, slots=True)
class _Plan:
    """A principal's levels and what a check needs to know of them, worked out once per
    principal (the auth cache hands out the same Principal until it looks the key up
    again) and again when one of its budget periods ends."""

    principal: Principal
    levels: tuple[Level, ...]
    tokens: bool
    budgets: bool
    until: float


# Plans kept at most (one per principal in use); beyond, they are worked out again.
MAX_PLANS = 4096


def _limit(own: int | None, default: int) -> int:
    # The store's value wins; None falls back to the config's default. 0 is "no limit" either way.
    return default if own is None else own


async def _nothing_spent(kind: str, id_: str, since: datetime | None) -> int:
    return 0


class Limiter:
    def __init__(self, config: LimitsConfig, backend: Backend, spent: Spent = _nothing_spent) -> None:
        self.config = config
        self.backend = backend
        self.spent = spent
        self.periods = Periods()
        self.fail_open = config.on_redis_error == "open"
        # Slot ids: unique across processes (Redis sees every worker's).
        self._slot_prefix = uuid.uuid4().hex[:12] + ":"
        self._slots = itertools.count()
        # (request id, start time) -> the tickets admitted under it, until the request settles.
        self._pending: dict[tuple[str, float], list[Ticket]] = {}
        self.backend_errors = 0
        # Requests refused, by (Verdict kind: which limit, Level kind: "API key", "user", "team"); for metrics.
        self.refused: dict[tuple[int, str], int] = {}
        self._warned_at = -WARN_EVERY_S
        self._plans: dict[int, _Plan] = {}

    def _level(
        self, kind: str, id_: str, rpm: int, tpm: int, parallel: int, budget: Budget | None, out: list[Level]
    ) -> None:
        if budget is not None:
            out.append(Level(kind, id_, rpm, tpm, parallel, budget.limit_nano, self.periods.current(budget.period)))
        elif rpm or tpm or parallel:
            out.append(Level(kind, id_, rpm, tpm, parallel))

    def levels(self, p: Principal) -> tuple[Level, ...]:
        c = self.config
        out: list[Level] = []
        if p.key_id is not None:
            rpm = _limit(p.rate_limit, c.default_rpm)
            tpm = _limit(p.tpm_limit, c.default_tpm)
            self._level("API key", p.key_id, rpm, tpm, _limit(p.max_parallel, c.default_parallel), p.key_budget, out)
        if p.user_id is not None:
            self._level("user", p.user_id, c.user_rpm, c.user_tpm, c.user_parallel, p.user_budget, out)
        if p.team_id is not None:
            rpm, tpm, parallel = p.team_rate_limit or 0, p.team_tpm_limit or 0, p.team_max_parallel or 0
            self._level("team", p.team_id, rpm, tpm, parallel, p.team_budget, out)
        return tuple(out)

    def _plan(self, p: Principal) -> _Plan:
        # Keyed by identity, and the plan holds the principal, so the id cannot be reused meanwhile.
        plan = self._plans.get(id(p))
        if plan is None or plan.principal is not p or time.time() >= plan.until:
            levels = self.levels(p)
            until = min((lv.period.until for lv in levels if lv.period is not None), default=float("inf"))
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            plan = self._plans[id(p)] = _Plan(
                p, levels, any(lv.tpm for lv in levels), any(lv.has_budget for lv in levels), until
            )
        return plan

    async def admit(
        self, p: Principal, request: tuple[str, float], estimate: Callable[[], int]
    ) -> list[tuple[str, str]]:
        """Count the request at every level or refuse it (RateLimited); the x-ratelimit-*
        headers for its answer. `request` names it for `settle`; `estimate` is called only
        when a tokens limit applies."""
        plan = self._plan(p)
        levels = plan.levels
        if not levels:
            return []
        tokens = estimate() if plan.tokens else 0
        slot = self._slot_prefix + str(next(self._slots))
        try:
            verdict = await self.backend.admit(levels, tokens, slot)
            if verdict.kind == SEED:
                verdict = await self._seeded(levels, tokens, slot, verdict)
        except LimitsUnavailable as exc:
            self._failed(exc)
            if self.fail_open:
                return []
            raise ServiceUnavailable(
                "Rate limits and budgets cannot be checked right now; please try again shortly.",
                code="rate_limits_unavailable",
                retry_after="1",
            ) from None
        sent = headers(verdict)
        if not verdict.ok:
            why = (verdict.kind, levels[verdict.level].kind)
            self.refused[why] = self.refused.get(why, 0) + 1
            if verdict.kind == BUDGET:
                raise QuotaExceeded(quota_message(verdict, levels), headers=NO_RETRY)
            raise RateLimited(message(verdict, levels, tokens), retry_after=retry_after(verdict), headers=tuple(sent))
        self._pending.setdefault(request, []).append(Ticket(levels, verdict.windows, slot, tokens, plan.budgets))
        return sent

    async def _seeded(self, levels: tuple[Level, ...], tokens: int, slot: str, verdict: Verdict) -> Verdict:
        """Start each spend counter the backend does not have from the ledger, then check again.
        A counter can go missing again between the two calls only by expiring: then, once more."""
        for _ in range(len(levels) + 1):
            lv = levels[verdict.level]
            since = lv.period.since if lv.period is not None else None
            try:
                spent = await self.spent(lv.kind, lv.id, since)
            except Exception as exc:
                raise LimitsUnavailable(f"the ledger could not be read for {lv.kind} {lv.id}'s spend: {exc}") from exc
            await self.backend.seed(lv, spent)
            verdict = await self.backend.admit(levels, tokens, slot)
            if verdict.kind != SEED:
                return verdict
        raise LimitsUnavailable("spend counters keep vanishing")

    def settle(self, request: tuple[str, float], total_tokens: int, cost_nano: int) -> None:
        """Once per request: the real tokens replace the estimate, the parallel slots are freed,
        the cost is spent."""
        tickets = self._pending.get(request)
        if not tickets:
            return
        t = tickets.pop()
        if not tickets:
            del self._pending[request]
        self.backend.settle(t.levels, t.windows, t.slot, total_tokens - t.estimate, cost_nano if t.budgets else 0)

    def _failed(self, exc: Exception) -> None:
        self.backend_errors += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            how = "serving unchecked (on_redis_error: open)" if self.fail_open else "refusing with 503"
            log.warning("rate limits unavailable (%s): %s; %d failure(s) so far", exc, how, self.backend_errors)

    async def start(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()


def make_limiter(config: Config, spent: Spent | None = None) -> Limiter:
    """Redis when one is configured (exact across workers and replicas), else in-process.
    `spent` reads the ledger, where spend counters start."""
    c = config.limits
    slot_ttl_ms = int(1000 * (c.slot_ttl_s or config.server.request_timeout_s + 60))
    backend: Backend
    if config.redis.url:
        from ghostllm.limits.redis_backend import RedisBackend

        backend = RedisBackend(config.redis.url, config.redis.prefix, c.redis_timeout_s, slot_ttl_ms)
    else:
        backend = MemoryBackend(slot_ttl_ms)
    return Limiter(c, backend, spent or _nothing_spent)
