"""The Redis backend: one Lua script checks and counts every level of a request at once
(atomic, so exact across every worker and replica), another settles it. The scripts are
called by SHA and loaded only when Redis says NOSCRIPT (first use, or a restarted Redis).

Every call made in one event-loop tick (admissions and settles alike) goes out as one
pipeline: one round trip for the lot. Each round trip has a short deadline; a Redis that
fails or is slow raises LimitsUnavailable, and for a second after that no call is tried
(the limiter's on_redis_error decides what the request gets), so an outage costs no
request more than one deadline.

Keys, under redis.prefix: `limits:<level>:<id>` a hash {w: window start ms, r: requests,
t: tokens} that expires with its window; `limits:<level>:<id>:slots` a sorted set of the
parallel slots held, scored by when each expires (a crashed worker's slots lapse).
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

# KEYS: per level, its hash and its slots. ARGV: window ms, slot ttl ms, slot, estimate, then per
# level rpm, tpm, parallel (0: none). Time is Redis's own, so replicas' clocks do not matter.
# Reply: ok, refused level (1-based), kind, limit, used, reset ms, then the tightest requests
# limit, remaining and reset, the same for tokens (limit -1: none), then each level's window start.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, ttl, slot, est = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local n = #KEYS / 2
local w, r, k = {}, {}, {}
local fail, fkind, flimit, fused, freset = 0, 0, 0, 0, 0
local rl, rb, rreset, tl, tb, treset = -1, 0, 0, -1, 0, 0
for i = 1, n do
  local rpm, tpm, par = tonumber(ARGV[2 + 3 * i]), tonumber(ARGV[3 + 3 * i]), tonumber(ARGV[4 + 3 * i])
  local h = redis.call('HMGET', KEYS[2 * i - 1], 'w', 'r', 't')
  local wi = tonumber(h[1])
  if wi == nil or now >= wi + window then
    w[i], r[i], k[i] = now, 0, 0
  else
    w[i], r[i], k[i] = wi, tonumber(h[2]) or 0, tonumber(h[3]) or 0
  end
  local reset = w[i] + window - now
  if fail == 0 then
    if rpm > 0 and r[i] + 1 > rpm then
      fail, fkind, flimit, fused, freset = i, 1, rpm, r[i], reset
    elseif tpm > 0 and k[i] + est > tpm then
      fail, fkind, flimit, fused, freset = i, 2, tpm, k[i], reset
    elseif par > 0 then
      redis.call('ZREMRANGEBYSCORE', KEYS[2 * i], '-inf', now)
      local busy = redis.call('ZCARD', KEYS[2 * i])
      if busy + 1 > par then
        fail, fkind, flimit, fused, freset = i, 3, par, busy, tonumber(ARGV[#ARGV])
      end
    end
  end
  if rpm > 0 and (rl < 0 or rpm - r[i] < rb) then rl, rb, rreset = rpm, rpm - r[i], reset end
  if tpm > 0 and (tl < 0 or tpm - k[i] < tb) then tl, tb, treset = tpm, tpm - k[i], reset end
end
if fail > 0 then
  return {0, fail, fkind, flimit, fused, freset, rl, rb, rreset, tl, tb, treset}
end
local reply = {1, 0, 0, 0, 0, 0, rl, rb - 1, rreset, tl, tb - est, treset}
for i = 1, n do
  redis.call('HSET', KEYS[2 * i - 1], 'w', w[i], 'r', r[i] + 1, 't', k[i] + est)
  redis.call('PEXPIREAT', KEYS[2 * i - 1], w[i] + window)
  if tonumber(ARGV[4 + 3 * i]) > 0 then
    redis.call('ZADD', KEYS[2 * i], now + ttl, slot)
    redis.call('PEXPIRE', KEYS[2 * i], ttl)
  end
  reply[12 + i] = w[i]
end
return reply
"""

# KEYS as ADMIT's. ARGV: slot, delta, then per level its window start and whether it holds a slot.
SETTLE = """
local slot, delta = ARGV[1], tonumber(ARGV[2])
for i = 1, #KEYS / 2 do
  if delta ~= 0 and tonumber(redis.call('HGET', KEYS[2 * i - 1], 'w')) == tonumber(ARGV[1 + 2 * i]) then
    if redis.call('HINCRBY', KEYS[2 * i - 1], 't', delta) < 0 then
      redis.call('HSET', KEYS[2 * i - 1], 't', 0)
    end
  end
  if ARGV[2 + 2 * i] == '1' then
    redis.call('ZREM', KEYS[2 * i], slot)
  end
end
return 0
"""

SCRIPTS = {
    name: (text, hashlib.sha1(text.encode()).hexdigest()) for name, text in (("admit", ADMIT), ("settle", SETTLE))
}
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
        self._tasks: set[asyncio.Task[None]] = set()
        self._down_until = 0.0
        # Round trips made, and calls they carried (the bench and tests read them).
        self.round_trips = 0
        self.calls = 0

    def _keys(self, levels: tuple[Level, ...]) -> list[str]:
        keys: list[str] = []
        for lv in levels:
            base = self.prefix + lv.key
            keys += (base, base + ":slots")
        return keys

    async def admit(self, levels: tuple[Level, ...], estimate: int, slot: str) -> Verdict:
        if time.monotonic() < self._down_until:
            raise LimitsUnavailable("Redis failed less than a second ago")
        args: list[str | int] = [WINDOW_MS, self.slot_ttl_ms, slot, estimate]
        for lv in levels:
            args += (lv.rpm, lv.tpm, lv.parallel)
        args.append(PARALLEL_RETRY_MS)
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
            self.settle(levels, verdict.windows, slot, -estimate)

    def settle(self, levels: tuple[Level, ...], windows: tuple[int, ...], slot: str, delta: int) -> None:
        if time.monotonic() < self._down_until:
            return  # the slots lapse by their TTL, the estimate with its window
        args: list[str | int] = [slot, delta]
        for lv, start in zip(levels, windows, strict=True):
            args += (start, 1 if lv.parallel else 0)
        self._enqueue(("settle", self._keys(levels), args, None))

    def _enqueue(self, call: _Call) -> None:
        self._queue.append(call)
        if len(self._queue) == 1:
            # After everything else ready in this tick has run (and queued its own call).
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
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

    async def close(self) -> None:
        if self._tasks:
            # Settles already queued are worth their round trip (bounded by the deadline).
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()
