"""The Redis backend: one Lua script checks and counts every level of a request at once
(atomic, so exact across every worker and replica), another settles it. The scripts are
called by SHA and loaded only when Redis says NOSCRIPT (first use, or a restarted Redis).

Every call made in one event-loop tick goes out as one write on one pipelined connection
(limits/resp.py): one round trip for the lot; settles, which nobody waits for (Redis is
told not to answer them), wait up to 10 ms to join the next check's (unless they free a
parallel slot: a client's next request may reach another worker). Each call has a short
deadline; a Redis that fails or is slow raises LimitsUnavailable, and for a second after
that no call is tried (the limiter's on_redis_error decides what the request gets), so an
outage costs no request more than one deadline.

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
from collections.abc import Callable
from typing import Any

import hiredis

from ghostllm.limits.core import PARALLEL_RETRY_MS, WINDOW_MS, Level, LimitsUnavailable, Verdict
from ghostllm.limits.resp import NO_REPLY, Arg, Endpoint, OnReply, RespConnection, RespError, bulk, pack

log = logging.getLogger(__name__)

# Few arguments on purpose: Redis parses each one per call (the worker packs most of them
# once per principal, see _Shape). So KEYS are only each level's base key; its slots
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
local rpm, tpm, par = {}, {}, {}
for i = 1, n do
  local a, b, c, d, e = string.match(ARGV[5 + i], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  rpm[i], tpm[i], par[i] = tonumber(a), tonumber(b), tonumber(c)
  local budget = tonumber(d)
  if budget >= 0 then
    local spent = redis.call('GET', KEYS[i] .. ':spend:' .. e)
    if not spent then
      return {0, i, 5, budget, 0, 0, -1, 0, 0, -1, 0, 0}
    end
    spent = tonumber(spent)
    if spent >= budget then
      return {0, i, 4, budget, spent, 0, -1, 0, 0, -1, 0, 0}
    end
  end
end
local w, r, k, fresh = {}, {}, {}, {}
local fail, fkind, flimit, fused, freset = 0, 0, 0, 0, 0
local rl, rb, rreset, tl, tb, treset = -1, 0, 0, -1, 0, 0
for i = 1, n do
  w[i], r[i], k[i] = 0, 0, 0
  if rpm[i] > 0 or tpm[i] > 0 then
    local h = redis.call('HMGET', KEYS[i], 'w', 'r', 't')
    local wi = tonumber(h[1])
    if wi == nil or now >= wi + window then
      w[i], fresh[i] = now, true
    else
      w[i], r[i], k[i] = wi, tonumber(h[2]) or 0, tonumber(h[3]) or 0
    end
  end
  local reset = w[i] + window - now
  if fail == 0 then
    if rpm[i] > 0 and r[i] + 1 > rpm[i] then
      fail, fkind, flimit, fused, freset = i, 1, rpm[i], r[i], reset
    elseif tpm[i] > 0 and k[i] + est > tpm[i] then
      fail, fkind, flimit, fused, freset = i, 2, tpm[i], k[i], reset
    elseif par[i] > 0 then
      local slots = KEYS[i] .. ':slots'
      local busy = redis.call('ZCARD', slots)
      if busy + 1 > par[i] then
        -- Only now does a crashed holder's lapsed slot matter: drop those, count again.
        redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
        busy = redis.call('ZCARD', slots)
        if busy + 1 > par[i] then
          fail, fkind, flimit, fused, freset = i, 3, par[i], busy, retry
        end
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
    if fresh[i] then
      redis.call('PEXPIREAT', KEYS[i], w[i] + window)
    end
  end
  if par[i] > 0 then
    local slots = KEYS[i] .. ':slots'
    redis.call('ZADD', slots, now + ttl, slot)
    redis.call('PEXPIRE', slots, ttl)
  end
  reply[12 + i] = w[i]
end
return reply
"""

# KEYS as ADMIT's. ARGV: slot, token delta, cost (nano-USD), then each level's window start
# (0: not counted in a window), then each level's spec. A missing spend counter stays
# missing: it is read from the ledger, which will hold this request's row, when next needed.
SETTLE = """
local slot, delta, cost = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS
for i = 1, n do
  local _, tpm, par, budget, tag = string.match(ARGV[3 + n + i], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  if delta ~= 0 and tpm ~= '0' and tonumber(redis.call('HGET', KEYS[i], 'w')) == tonumber(ARGV[3 + i]) then
    if redis.call('HINCRBY', KEYS[i], 't', delta) < 0 then
      redis.call('HSET', KEYS[i], 't', 0)
    end
  end
  if par ~= '0' then
    redis.call('ZREM', KEYS[i] .. ':slots', slot)
  end
  if cost > 0 and budget ~= '-1' then
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
LOAD_SCRIPTS: list[list[Arg]] = [["SCRIPT", "LOAD", text] for text, _ in SCRIPTS.values()]
# A settle waits at most this long for a check to share its round trip.
SETTLE_DELAY_S = 0.01
# After a failed call, how long no call is tried.
BACKOFF_S = 1.0
# Connecting at start-up may take this long (a request's own connect: its deadline).
START_TIMEOUT_S = 2.0


class _Call:
    """One script call, packed, and the future awaiting its reply (None: a settle, which
    Redis is told not to answer)."""

    __slots__ = ("data", "future")

    def __init__(self, data: bytes, future: asyncio.Future[Any] | None) -> None:
        self.data = data
        self.future = future


class _Shape:
    """What every call for one set of levels repeats, packed once: most of a call's bytes.
    A principal's levels are the same tuple until its cache entry or a budget period
    changes (Limiter), so this is packed about once per key per few seconds, not per request."""

    __slots__ = ("admit", "levels", "settle", "soon", "specs")

    def __init__(self, levels: tuple[Level, ...], prefix: str) -> None:
        n = len(levels)
        keys = b"".join(bulk(prefix + lv.key) for lv in levels)
        self.levels = levels
        self.admit = b"*%d\r\n" % (8 + 2 * n) + bulk("EVALSHA") + bulk(SCRIPTS["admit"][1]) + bulk(n) + keys
        self.settle = b"*%d\r\n" % (6 + 3 * n) + bulk("EVALSHA") + bulk(SCRIPTS["settle"][1]) + bulk(n) + keys
        self.specs = b"".join(bulk(lv.spec) for lv in levels)
        # Freeing a parallel slot cannot wait: the client's next request may reach another worker.
        self.soon = any(lv.parallel for lv in levels)


def _ignore(reply: Any) -> None:
    pass


# Shapes kept at most (one per principal in use); beyond, they are packed again.
MAX_SHAPES = 4096


class RedisBackend:
    def __init__(self, url: str, prefix: str, timeout_s: float, slot_ttl_ms: int) -> None:
        self.endpoint = Endpoint.of_url(url)
        self.prefix = f"{prefix}limits:"
        self.timeout_s = timeout_s
        self.slot_ttl_ms = slot_ttl_ms
        self._conn: RespConnection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._queue: list[_Call] = []
        self._shapes: dict[int, _Shape] = {}
        self._admit_constants = bulk(WINDOW_MS) + bulk(slot_ttl_ms) + bulk(PARALLEL_RETRY_MS)
        # Calls made while (re)connecting, written once connected.
        self._unsent: list[_Call] = []
        # Calls Redis answered NOSCRIPT (it lost the scripts): sent again after loading them.
        self._reload: list[_Call] = []
        self._soon: asyncio.Handle | None = None
        self._later: asyncio.TimerHandle | None = None
        self._down_until = 0.0
        # Round trips made, and calls they carried (the bench and tests read them).
        self.round_trips = 0
        self.calls = 0

    def _shape(self, levels: tuple[Level, ...]) -> _Shape:
        shape = self._shapes.get(id(levels))
        if shape is None or shape.levels is not levels:
            if len(self._shapes) >= MAX_SHAPES:
                self._shapes.clear()
            shape = self._shapes[id(levels)] = _Shape(levels, self.prefix)
        return shape

    async def admit(self, levels: tuple[Level, ...], estimate: int, slot: str) -> Verdict:
        if time.monotonic() < self._down_until:
            raise LimitsUnavailable("Redis failed less than a second ago")
        shape = self._shape(levels)
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._enqueue(_Call(shape.admit + bulk(estimate) + bulk(slot) + self._admit_constants + shape.specs, future))
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
        shape = self._shape(levels)
        # Unanswered (NO_REPLY): a reply nobody reads would cost Redis a write and the worker a
        # wake-up. What that gives up: a settle Redis refuses (NOSCRIPT, when it lost the
        # scripts) is not retried. The slot then lapses by its TTL, the estimate stands for
        # its window, and the cost reaches the spend counter when the counter is next read
        # from the ledger, just as for a settle lost with a connection.
        data = shape.settle + bulk(slot) + bulk(delta) + bulk(cost_nano) + b"".join(map(bulk, windows)) + shape.specs
        self._enqueue(_Call(NO_REPLY + data, None), soon=shape.soon)

    async def seed(self, level: Level, spent_nano: int) -> None:
        assert level.period is not None
        if time.monotonic() < self._down_until:
            raise LimitsUnavailable("Redis failed less than a second ago")
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        args: list[Arg] = ["EVALSHA", SCRIPTS["seed"][1], 1, self.prefix + level.spend_key]
        self._enqueue(_Call(pack([*args, spent_nano, level.period.expires_ms()]), future))
        await future

    def _enqueue(self, call: _Call, *, soon: bool = False) -> None:
        self._queue.append(call)
        if call.future is None and not soon:
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
        conn = self._conn
        if conn is None or conn.closed:
            self._unsent += batch
            if self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect(self.timeout_s))
            return
        self._write(conn, batch)

    def _write(self, conn: RespConnection, batch: list[_Call], before: list[list[Arg]] | None = None) -> None:
        commands: list[tuple[bytes, OnReply | None]] = [(pack(c), _ignore) for c in before or ()]
        commands += [(c.data, None if c.future is None else self._on_reply(c)) for c in batch]
        self.round_trips += 1
        self.calls += len(batch)
        try:
            conn.send(commands)
        except RespError as exc:
            self._failed(batch, exc)

    def _on_reply(self, call: _Call) -> Callable[[Any], None]:
        def on_reply(reply: Any) -> None:
            future = call.future
            if isinstance(reply, RespError):
                self._failed([call], reply)
            elif isinstance(reply, hiredis.ReplyError):
                if str(reply).startswith("NOSCRIPT"):
                    # Redis lost the scripts (restarted, or SCRIPT FLUSH): load them, ask again.
                    if not self._reload:
                        asyncio.get_running_loop().call_soon(self._resend)
                    self._reload.append(call)
                elif future is not None and not future.done():
                    future.set_exception(LimitsUnavailable(f"Redis: {reply}"))
            elif future is not None and not future.done():
                future.set_result(reply)

        return on_reply

    def _resend(self) -> None:
        calls, self._reload = self._reload, []
        conn = self._conn
        if conn is None or conn.closed:
            self._unsent += calls  # the connect in progress loads the scripts first
            return
        self._write(conn, calls, LOAD_SCRIPTS)

    def _failed(self, calls: list[_Call], exc: Exception) -> None:
        self._down_until = time.monotonic() + BACKOFF_S
        failure = LimitsUnavailable(f"Redis: {type(exc).__name__}: {exc}")
        for c in calls:
            if c.future is not None and not c.future.done():
                c.future.set_exception(failure)

    async def _connect(self, timeout_s: float) -> None:
        """A new connection, the scripts loaded on it first; then what waited for it."""
        try:
            try:
                conn = await RespConnection.open(self.endpoint, self.timeout_s, timeout_s)
            except (OSError, TimeoutError, RespError, hiredis.ProtocolError) as exc:
                calls, self._unsent = self._unsent, []
                self._failed(calls, exc)
                if not calls:
                    raise
                return
            self._conn = conn
            calls, self._unsent = self._unsent, []
            self._write(conn, calls, LOAD_SCRIPTS)
        finally:
            self._connecting = None

    async def start(self) -> None:
        """Connect and load the scripts before the first request, so that a request's deadline
        covers its own round trip only. A Redis that is away now is tried again per request."""
        try:
            connect = self._connect(max(self.timeout_s, START_TIMEOUT_S))
            self._connecting = asyncio.get_running_loop().create_task(connect)
            await self._connecting
        except Exception as exc:  # OSError, TimeoutError, RespError
            log.warning("Redis is not reachable at start-up (%s: %s); rate limits will retry", type(exc).__name__, exc)

    async def close(self) -> None:
        self._flush()  # settles still waiting for company
        if self._connecting is not None:
            await asyncio.gather(self._connecting, return_exceptions=True)
        conn = self._conn
        if conn is None:
            return
        # Settles already written are worth their round trip (bounded by their deadline).
        await conn.drain()
        conn.close()
