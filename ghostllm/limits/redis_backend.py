"""The Redis backend: one Lua script checks and counts every level of a request at once
(atomic, so exact across every worker and replica), another settles it. The scripts are
called by SHA and loaded only when Redis says NOSCRIPT (first use, or a restarted Redis).

Every call made in one event-loop tick goes out as one pipeline: one round trip for the
lot; settles, which nobody waits for, wait up to 10 ms to join the next check's (unless
they free a parallel slot: a client's next request may reach another worker). Each
round trip has a short deadline; a Redis that fails or is slow raises LimitsUnavailable,
and for a second after that no call is tried (the limiter's on_redis_error decides what
the request gets), so an outage costs no request more than one deadline.

Keys, under redis.prefix: `limits:<level>:<id>` a hash {w: window start ms, r: requests,
t: tokens} that expires with its window; `limits:<level>:<id>:slots` a sorted set of the
parallel slots held, scored by when each expires (a crashed worker's slots lapse);
`limits:<level>:<id>:spend:<period>` the nano-USD spent in a budget period, started from
the ledger (the durable copy) and expiring with its period or within the hour.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

from ghostllm.limits.core import PARALLEL_RETRY_MS, WINDOW_MS, Level, LimitsUnavailable, Verdict

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

# Few arguments on purpose: redis-py packs each one in Python, and that, not Redis, is most
# of what a check costs the worker. So KEYS are only each level's base key; its slots
# (<base>:slots) and its spend counter (<base>:spend:<period>) are derived here (every key
# of a request is in one script anyway, so this is no less cluster-friendly than before).
# Each level's limits come as one argument, Level.spec: "rpm tpm parallel budget period".
# ARGV: estimate, slot, window ms, slot ttl ms, parallel retry ms, then each level's spec.
# Time is Redis's own, so replicas' clocks do not matter. Reply: ok, refused level
# (1-based), kind, limit, used, reset ms, then the tightest requests limit, remaining and
# reset, the same for tokens (limit -1: none), then each level's window start. Budgets are
# checked first, so a request over budget is counted nowhere; a missing counter is unknown
# spend (kind 5: the limiter reads the ledger and seeds it).
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local est, slot = tonumber(ARGV[1]), ARGV[2]
local window, ttl, retry = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local n = #KEYS
local rpm, tpm, par, budget, tag = {}, {}, {}, {}, {}
for i = 1, n do
  local a, b, c, d, e = string.match(ARGV[5 + i], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  rpm[i], tpm[i], par[i], budget[i], tag[i] = tonumber(a), tonumber(b), tonumber(c), tonumber(d), e
  if budget[i] >= 0 then
    local spent = redis.call('GET', KEYS[i] .. ':spend:' .. e)
    if not spent then
      return {0, i, 5, budget[i], 0, 0, -1, 0, 0, -1, 0, 0}
    end
    spent = tonumber(spent)
    if spent >= budget[i] then
      return {0, i, 4, budget[i], spent, 0, -1, 0, 0, -1, 0, 0}
    end
  end
end
local w, r, k = {}, {}, {}
local fail, fkind, flimit, fused, freset = 0, 0, 0, 0, 0
local rl, rb, rreset, tl, tb, treset = -1, 0, 0, -1, 0, 0
for i = 1, n do
  local h = redis.call('HMGET', KEYS[i], 'w', 'r', 't')
  local wi = tonumber(h[1])
  if wi == nil or now >= wi + window then
    w[i], r[i], k[i] = now, 0, 0
  else
    w[i], r[i], k[i] = wi, tonumber(h[2]) or 0, tonumber(h[3]) or 0
  end
  local reset = w[i] + window - now
  if fail == 0 then
    if rpm[i] > 0 and r[i] + 1 > rpm[i] then
      fail, fkind, flimit, fused, freset = i, 1, rpm[i], r[i], reset
    elseif tpm[i] > 0 and k[i] + est > tpm[i] then
      fail, fkind, flimit, fused, freset = i, 2, tpm[i], k[i], reset
    elseif par[i] > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[i] .. ':slots', '-inf', now)
      local busy = redis.call('ZCARD', KEYS[i] .. ':slots')
      if busy + 1 > par[i] then
        fail, fkind, flimit, fused, freset = i, 3, par[i], busy, retry
      end
    end
  end
  if rpm[i] > 0 and (rl < 0 or rpm[i] - r[i] < rb) then rl, rb, rreset = rpm[i], rpm[i] - r[i], reset end
  if tpm[i] > 0 and (tl < 0 or tpm[i] - k[i] < tb) then tl, tb, treset = tpm[i], tpm[i] - k[i], reset end
end
if fail > 0 then
  return {0, fail, fkind, flimit, fused, freset, rl, rb, rreset, tl, tb, treset}
end
local reply = {1, 0, 0, 0, 0, 0, rl, rb - 1, rreset, tl, tb - est, treset}
for i = 1, n do
  if rpm[i] > 0 or tpm[i] > 0 then
    redis.call('HSET', KEYS[i], 'w', w[i], 'r', r[i] + 1, 't', k[i] + est)
    redis.call('PEXPIREAT', KEYS[i], w[i] + window)
  end
  if par[i] > 0 then
    redis.call('ZADD', KEYS[i] .. ':slots', now + ttl, slot)
    redis.call('PEXPIRE', KEYS[i] .. ':slots', ttl)
  end
  reply[12 + i] = w[i]
end
return reply
"""

# KEYS as ADMIT's. ARGV: slot, token delta, cost (nano-USD), then each level's window start,
# then each level's spec. A missing spend counter stays missing: it is read from the ledger,
# which will hold this request's row, when next needed.
SETTLE = """
local slot, delta, cost = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS
for i = 1, n do
  local _, _, par, budget, tag = string.match(ARGV[3 + n + i], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  if delta ~= 0 and tonumber(redis.call('HGET', KEYS[i], 'w')) == tonumber(ARGV[3 + i]) then
    if redis.call('HINCRBY', KEYS[i], 't', delta) < 0 then
      redis.call('HSET', KEYS[i], 't', 0)
    end
  end
  if tonumber(par) > 0 then
    redis.call('ZREM', KEYS[i] .. ':slots', slot)
  end
  if cost > 0 and tonumber(budget) >= 0 then
    local spend = KEYS[i] .. ':spend:' .. tag
    if redis.call('EXISTS', spend) == 1 then
      redis.call('INCRBY', spend, cost)
    end
  end
end
return 0
"""

# KEYS: a spend counter. ARGV: the spend the ledger holds, when the counter expires (epoch ms).
# Another worker may have started it first: then its count (and what settled since) stands.
SEED = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
return 0
"""

SCRIPTS = {
    name: (text, hashlib.sha1(text.encode()).hexdigest())
    for name, text in (("admit", ADMIT), ("settle", SETTLE), ("seed", SEED))
}
# A settle waits at most this long for a check to share its round trip.
SETTLE_DELAY_S = 0.01
# After a failed call, how long no call is tried.
BACKOFF_S = 1.0


def connect(url: str, timeout_s: float) -> Redis:
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # No retries: the deadline is the whole budget, and a retry would double it.
    return Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))


# One queued call: script name, KEYS, ARGV, and the future awaiting its reply (None: a settle).
_Call = tuple[str, list[str], list[str | int], "asyncio.Future[list[int]] | None"]


class RedisBackend:
    def __init__(self, redis: Redis, prefix: str, timeout_s: float, slot_ttl_ms: int) -> None:
        self.redis = redis
        self.prefix = f"{prefix}limits:"
        self.timeout_s = timeout_s
        self.slot_ttl_ms = slot_ttl_ms
        self._queue: list[_Call] = []
        self._soon: asyncio.Handle | None = None
        self._later: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._down_until = 0.0
        # Round trips made, and calls they carried (the bench and tests read them).
        self.round_trips = 0
        self.calls = 0

    def _keys(self, levels: tuple[Level, ...]) -> list[str]:
        prefix = self.prefix
        return [prefix + lv.key for lv in levels]

    async def admit(self, levels: tuple[Level, ...], estimate: int, slot: str) -> Verdict:
        if time.monotonic() < self._down_until:
            raise LimitsUnavailable("Redis failed less than a second ago")
        args: list[str | int] = [estimate, slot, WINDOW_MS, self.slot_ttl_ms, PARALLEL_RETRY_MS]
        args += [lv.spec for lv in levels]
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._enqueue(("admit", self._keys(levels), args, future))
        try:
            reply = await future
        except asyncio.CancelledError:
            # The check may still be applied: give back what it would hold once its reply is in.
            future.add_done_callback(lambda f: self._undo(f, levels, estimate, slot))
            raise
        return Verdict.of_reply(reply, len(levels))

    def _undo(self, future: asyncio.Future[list[int]], levels: tuple[Level, ...], estimate: int, slot: str) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        verdict = Verdict.of_reply(future.result(), len(levels))
        if verdict.ok:
            self.settle(levels, verdict.windows, slot, -estimate, 0)

    def settle(
        self, levels: tuple[Level, ...], windows: tuple[int, ...], slot: str, delta: int, cost_nano: int
    ) -> None:
        if time.monotonic() < self._down_until:
            # The slots lapse by their TTL, the estimate with its window; the cost reaches the
            # spend counter when the counter is next read from the ledger.
            return
        args: list[str | int] = [slot, delta, cost_nano, *windows]
        args += [lv.spec for lv in levels]
        # Freeing a parallel slot cannot wait: the client's next request may reach another worker.
        self._enqueue(("settle", self._keys(levels), args, None), soon=any(lv.parallel for lv in levels))

    async def seed(self, level: Level, spent_nano: int) -> None:
        assert level.period is not None
        if time.monotonic() < self._down_until:
            raise LimitsUnavailable("Redis failed less than a second ago")
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        args: list[str | int] = [spent_nano, level.period.expires_ms()]
        self._enqueue(("seed", [self.prefix + level.spend_key], args, future))
        await future

    def _enqueue(self, call: _Call, *, soon: bool = False) -> None:
        self._queue.append(call)
        if call[3] is None and not soon:
            # A settle: nobody waits for it, so it rides with the next check (of this or a later
            # tick) or goes on its own SETTLE_DELAY_S later: under load, no round trip of its own.
            if self._soon is None and self._later is None:
                self._later = asyncio.get_running_loop().call_later(SETTLE_DELAY_S, self._flush)
        elif self._soon is None:
            # After everything else ready in this tick has run (and queued its own call).
            self._soon = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        self._soon = None
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                replies = await self._execute(batch)
        except Exception as exc:  # RedisError, OSError, TimeoutError: all mean "not now"
            self._down_until = time.monotonic() + BACKOFF_S
            failure = LimitsUnavailable(f"Redis: {type(exc).__name__}: {exc}")
            for *_, future in batch:
                if future is not None and not future.done():
                    future.set_exception(failure)
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future is None or future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(LimitsUnavailable(f"Redis: {reply}"))
            else:
                future.set_result(reply)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        from redis.exceptions import NoScriptError

        replies = await self._pipeline(batch)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            # First use, or Redis restarted (scripts are not persisted): load both, redo those.
            pipe = self.redis.pipeline(transaction=False)
            for text, _ in SCRIPTS.values():
                pipe.script_load(text)
            await pipe.execute()
            again = await self._pipeline([batch[i] for i in missing])
            for i, r in zip(missing, again, strict=True):
                replies[i] = r
        return replies

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for name, keys, args, _ in batch:
            pipe.evalsha(SCRIPTS[name][1], len(keys), *keys, *args)
        self.round_trips += 1
        self.calls += len(batch)
        return list(await pipe.execute(raise_on_error=False))

    async def start(self) -> None:
        """Connect and load the scripts before the first request, so that a request's deadline
        covers its own round trip only. A Redis that is away now is tried again per request."""
        try:
            async with asyncio.timeout(max(self.timeout_s, 2.0)):
                pipe = self.redis.pipeline(transaction=False)
                for text, _ in SCRIPTS.values():
                    pipe.script_load(text)
                await pipe.execute()
        except Exception as exc:  # RedisError, OSError, TimeoutError
            log.warning("Redis is not reachable at start-up (%s: %s); rate limits will retry", type(exc).__name__, exc)

    async def close(self) -> None:
        self._flush()  # settles still waiting for company
        if self._tasks:
            # Settles already queued are worth their round trip (bounded by the deadline).
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()
