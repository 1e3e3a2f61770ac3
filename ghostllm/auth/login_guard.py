"""The login throttle: failed logins (POST /v1/auth/login) are counted per email and per
client IP, each over a window (`auth.login_window_s`) that starts with its first failure.
A counter at its limit refuses every further attempt on it, the right password too, with
429 `rate_limit_exceeded` and `retry-after` until its window lapses; the refusal comes
before bcrypt, so it costs no hashing. A successful login clears its email's counter.

An attempt is counted when it is admitted, not when its password turns out wrong: guesses
sent all at once would otherwise all pass the check while the first were still hashing.
So a counter holds the failures plus the attempts in flight; a success takes its own
attempt back from the IP's counter (and clears the email's), and so does an attempt the
store could not answer (no verdict on the password is no failure). An attempt whose client
went away counts as failed: its bcrypt ran, and it must not be a way around the limit.

Emails are counted lower-cased and stripped (as the store compares them) and only by their
SHA-256: neither Redis nor the worker's memory holds one in clear. With Redis (`redis.url`)
the counters are shared by every worker and replica (keys `<prefix>login:email:<sha256>` and
`<prefix>login:ip:<address>`, expiring with their window; one Lua script per call, so the
check and the count are atomic); without, each worker counts on its own (bounded in size).
Redis failing or slow never fails a login: it is then served unthrottled, with a warning at
most once a minute, and Redis is left alone for a second after each failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ghostllm.accounts.validation import MAX_EMAIL
from ghostllm.config import AuthConfig, Config
from ghostllm.errors import RateLimited

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

log = logging.getLogger(__name__)

# One counter: its key and its limit.
Counter = tuple[str, int]

# A Redis call's deadline: login waits on bcrypt for far longer, but a Redis that does not
# answer must cost each login no more than this.
REDIS_TIMEOUT_S = 0.25
# Redis connections per worker: logins are rare, and a flood of them must queue here, not
# open a connection each.
REDIS_CONNECTIONS = 8
# After a failure, Redis is not tried for this long (logins meanwhile go unthrottled at once
# instead of each waiting out the deadline).
BACKOFF_S = 1.0
# A backend failure is logged at most this often (the count is kept in between).
WARN_EVERY_S = 60.0
# Counters one worker keeps without Redis; past it, the oldest (the first to lapse) go.
MAX_ENTRIES = 100_000
# The longest client address kept (an IPv6 address with a zone fits).
MAX_IP_CHARS = 64


class Backend(Protocol):
    async def count(self, counters: Sequence[Counter], window_ms: int) -> int:
        """One attempt on every counter, unless one is at its limit: then none is counted,
        and the answer is the ms until every counter at its limit has lapsed (0: counted)."""
        ...

    async def release(self, cleared: Sequence[str], refunded: Sequence[str]) -> None:
        """Forget the `cleared` counters; take one attempt back from the `refunded` ones
        (while their window lasts: a lapsed one is not made again)."""
        ...

    async def close(self) -> None: ...


class _Count:
    __slots__ = ("n", "until")

    def __init__(self, until: float) -> None:
        self.n = 0
        self.until = until


class MemoryBackend:
    """Counters in the worker: exact within it, one worker's view only."""

    def __init__(self, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        # Oldest first. Every counter's window is as long and starts when it is made, so the
        # front is always the first to lapse: pruning never looks past what it removes.
        self._counts: OrderedDict[str, _Count] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counts)

    def keys(self) -> list[str]:
        return list(self._counts)

    def _live(self, key: str, now: float) -> _Count | None:
        c = self._counts.get(key)
        return c if c is not None and c.until > now else None

    async def count(self, counters: Sequence[Counter], window_ms: int) -> int:
        now = self._clock()
        wait = 0.0
        for key, limit in counters:
            c = self._live(key, now)
            if c is not None and c.n >= limit:
                wait = max(wait, c.until - now)
        if wait > 0:
            return max(1, math.ceil(wait * 1000))
        for key, _limit in counters:
            c = self._live(key, now)
            if c is None:
                # Made again at the end, so the order stays the order of lapsing.
                self._counts.pop(key, None)
                c = self._counts[key] = _Count(now + window_ms / 1000)
            c.n += 1
        self._prune(now)
        return 0

    def _prune(self, now: float) -> None:
        counts = self._counts
        while counts:
            first = next(iter(counts.values()))
            if first.until > now and len(counts) <= self.max_entries:
                return
            counts.popitem(last=False)

    async def release(self, cleared: Sequence[str], refunded: Sequence[str]) -> None:
        now = self._clock()
        for key in cleared:
            self._counts.pop(key, None)
        for key in refunded:
            c = self._live(key, now)
            if c is not None and c.n > 0:
                c.n -= 1

    async def close(self) -> None:
        pass


# KEYS: the counters; ARGV[1]: the window in ms; ARGV[1 + i]: KEYS[i]'s limit.
_COUNT = """
local wait = 0
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      -- No expiry (not made here): it would refuse for good.
      redis.call('PEXPIRE', key, ARGV[1])
      ttl = tonumber(ARGV[1])
    end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
end
return 0
"""

# KEYS[1..ARGV[1]]: counters to forget; the rest: counters to take one attempt back from.
_RELEASE = """
local cleared = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if i <= cleared then
    redis.call('DEL', key)
  elseif tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end
return 0
"""


class RedisBackend:
    """Counters in Redis, shared by every worker and replica on the same prefix."""

    def __init__(self, url: str, timeout_s: float = REDIS_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._redis: Redis | None = None
        self._scripts: tuple[AsyncScript, AsyncScript] | None = None

    def _connect(self) -> tuple[AsyncScript, AsyncScript]:
        # Made on first use, in the worker's loop: a worker that never sees a login never connects.
        if self._scripts is None:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            t = self.timeout_s
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=REDIS_CONNECTIONS,
                timeout=t,
                socket_connect_timeout=t,
                socket_timeout=t,
                # Retrying is the caller's choice (it serves unthrottled instead): never twice the deadline.
                retry=Retry(NoBackoff(), 0),
            )
            self._redis = r = Redis.from_pool(pool)
            # Called by SHA, loaded again when Redis answers NOSCRIPT (redis-py does both).
            self._scripts = (r.register_script(_COUNT), r.register_script(_RELEASE))
        return self._scripts

    async def count(self, counters: Sequence[Counter], window_ms: int) -> int:
        script = self._connect()[0]
        keys = [key for key, _limit in counters]
        args = [window_ms, *(limit for _key, limit in counters)]
        async with asyncio.timeout(self.timeout_s):
            return int(await script(keys=keys, args=args))

    async def release(self, cleared: Sequence[str], refunded: Sequence[str]) -> None:
        script = self._connect()[1]
        async with asyncio.timeout(self.timeout_s):
            await script(keys=[*cleared, *refunded], args=[len(cleared)])

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = self._scripts = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one admitted login was counted on (None: not counted there)."""

    email: str | None = None
    ip: str | None = None


NOT_COUNTED = Attempt()


def email_digest(email: str) -> str:
    """How an email is known to the throttle: as the store compares it, hashed."""
    # Longer ones can never log in (check_login refuses them): how much of them is hashed
    # does not matter, and bounding it bounds the work a 32 MiB "email" costs.
    return hashlib.sha256(email[: MAX_EMAIL + 1].strip().lower().encode()).hexdigest()


def _seconds(ms: int) -> int:
    # Whole seconds (what retry-after takes), never 0: a client retrying at once is refused again.
    return max(1, math.ceil(ms / 1000))


class LoginGuard:
    def __init__(
        self, config: AuthConfig, backend: Backend, *, prefix: str = "", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.backend = backend
        self.prefix = prefix
        # Anything under 1 turns a limit off (0 is the documented way).
        self.max_email = max(config.login_max_failures, 0)
        self.max_ip = max(config.login_max_failures_per_ip, 0)
        self.window_ms = max(1, round(config.login_window_s * 1000)) if config.login_window_s > 0 else 0
        self.enabled = self.window_ms > 0 and (self.max_email > 0 or self.max_ip > 0)
        self._clock = clock
        self.backend_errors = 0
        self._warned_at = -WARN_EVERY_S
        self._down_until = -BACKOFF_S
        self._down = False

    def _usable(self) -> bool:
        return self._clock() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        self.backend_errors += 1
        now = self._clock()
        self._down_until = now + BACKOFF_S
        self._down = True
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "login throttle unavailable (%s): logins are served unthrottled; %d failure(s) so far",
                str(exc) or type(exc).__name__,
                self.backend_errors,
            )

    def _answered(self) -> None:
        if self._down:
            self._down = False
            log.warning("login throttle available again: logins are counted")

    async def admit(self, email: str, client_ip: str) -> Attempt:
        """Count an attempt for `email` from `client_ip` (empty: unknown, so not counted by
        address), or refuse it (RateLimited) while either is at its limit."""
        if not self.enabled or not self._usable():
            return NOT_COUNTED
        email_key = f"{self.prefix}login:email:{email_digest(email)}" if self.max_email else None
        ip = client_ip[:MAX_IP_CHARS]
        ip_key = f"{self.prefix}login:ip:{ip}" if self.max_ip and ip else None
        counters: list[Counter] = []
        if email_key is not None:
            counters.append((email_key, self.max_email))
        if ip_key is not None:
            counters.append((ip_key, self.max_ip))
        if not counters:
            return NOT_COUNTED
        try:
            wait_ms = await self.backend.count(counters, self.window_ms)
        except Exception as exc:
            self._failed(exc)
            return NOT_COUNTED
        self._answered()
        if wait_ms > 0:
            seconds = _seconds(wait_ms)
            # The same words for the email's limit and the address's: nothing to learn from them.
            raise RateLimited(
                f"Too many failed login attempts. Please try again in {seconds}s.", retry_after=str(seconds)
            )
        return Attempt(email_key, ip_key)

    async def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the email starts over; the attempt was no failure of the address."""
        await self._release([attempt.email] if attempt.email else [], [attempt.ip] if attempt.ip else [])

    async def abandoned(self, attempt: Attempt) -> None:
        """No verdict on the password (the store failed): the attempt is taken back everywhere."""
        await self._release([], [k for k in (attempt.email, attempt.ip) if k])

    async def _release(self, cleared: list[str], refunded: list[str]) -> None:
        if not (cleared or refunded) or not self._usable():
            return
        try:
            await self.backend.release(cleared, refunded)
        except Exception as exc:
            self._failed(exc)
        else:
            self._answered()

    async def close(self) -> None:
        await self.backend.close()


def login_guard(config: Config) -> LoginGuard:
    """Redis when one is configured (shared across workers and replicas), else in-process."""
    backend: Backend = RedisBackend(config.redis.url) if config.redis.url else MemoryBackend()
    return LoginGuard(config.auth, backend, prefix=config.redis.prefix if config.redis.url else "")
