"""What every backend shares: the levels a request is counted at, the verdict of one
check, and how a verdict reads to a client (headers, the 429 message).

A level's budget is checked in the same call as its rate limits, before anything is
counted: a request over budget uses up no request or token of any window. Spend counters
are integer nano-USD; a missing counter is not zero but unknown (a new period, a Redis
that lost its data), and the check says so (SEED) for the limiter to read it from the
ledger before it asks again.

Windows are fixed 60 s windows per level that start with the first request counted
there (not at the wall-clock minute), so a burst is never split between two windows by
a clock edge: N requests inside one window against a limit of L admit exactly L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from ghostllm.limits.periods import Period
from ghostllm.protocol.usage import NANO_PER_USD

WINDOW_MS = 60_000

# Verdict.kind: which limit refused the request.
REQUESTS = 1
TOKENS = 2
PARALLEL = 3
BUDGET = 4
SEED = 5

# A parallel slot frees when some request ends, which no clock predicts: the client is told to retry soon.
PARALLEL_RETRY_MS = 1000


class LimitsUnavailable(Exception):
    """The shared counters could not be read or written (Redis unreachable, too slow)."""


@dataclass(frozen=True, slots=True)
class Level:
    """One thing a request is counted against; 0 (None) means no limit of that kind."""

    # "API key", "user", "team": how the 429 message names it.
    kind: str
    id: str
    rpm: int
    tpm: int
    parallel: int
    # Nano-USD that may be spent in `period`; -1: no budget (0 is a real one: nothing may be spent).
    budget: int = -1
    period: Period | None = None
    # Where its counters live ("apikey:<id>"): made once, read several times per check.
    key: str = field(init=False, compare=False)
    # Its spend counter for the current period ("apikey:<id>:spend:m2026-12"; "" without a budget).
    spend_key: str = field(init=False, compare=False)
    # Its limits as the Redis scripts read them, one argument: "rpm tpm parallel budget period".
    spec: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        key = f"{self.kind.replace(' ', '').lower()}:{self.id}"
        tag = "-" if self.period is None else self.period.tag
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "spend_key", "" if self.period is None else f"{key}:spend:{tag}")
        object.__setattr__(self, "spec", f"{self.rpm} {self.tpm} {self.parallel} {self.budget} {tag}")

    @property
    def has_budget(self) -> bool:
        return self.budget >= 0


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    # When refused: the level (index) and limit that did it, how much of it is used and when it resets.
    level: int = -1
    kind: int = 0
    limit: int = 0
    used: int = 0
    reset_ms: int = 0
    # The tightest requests and tokens limits over all levels: (limit, remaining, reset ms), limit 0: none.
    requests: tuple[int, int, int] = (0, 0, 0)
    tokens: tuple[int, int, int] = (0, 0, 0)
    # Where each level's window started (backend time, ms): settle adjusts that window only.
    windows: tuple[int, ...] = ()

    @classmethod
    def of_reply(cls, reply: list[int], n: int) -> Verdict:
        """From the Lua script's flat reply (see redis_backend.ADMIT)."""
        ok = reply[0] == 1
        return cls(
            ok=ok,
            level=reply[1] - 1,
            kind=reply[2],
            limit=reply[3],
            used=reply[4],
            reset_ms=reply[5],
            requests=(reply[6], max(reply[7], 0), reply[8]),
            tokens=(reply[9], max(reply[10], 0), reply[11]),
            windows=tuple(reply[12 : 12 + n]) if ok else (),
        )


class Backend(Protocol):
    async def admit(self, levels: tuple[Level, ...], estimate: int, slot: str) -> Verdict: ...

    def settle(
        self, levels: tuple[Level, ...], windows: tuple[int, ...], slot: str, delta: int, cost_nano: int
    ) -> None:
        """Add `delta` tokens to the windows the request was admitted in (if still current),
        release its parallel slots, and add its cost to the spend counters that exist. Never
        awaits: it runs from a sink, during cancellation."""
        ...

    async def seed(self, level: Level, spent_nano: int) -> None:
        """Start `level`'s spend counter at `spent_nano` unless another worker already did."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def duration(ms: int) -> str:
    """A reset time the way OpenAI writes it ("250ms", "12.5s", "1m0s")."""
    ms = max(ms, 0)
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def headers(v: Verdict) -> list[tuple[str, str]]:
    """x-ratelimit-* for the kinds that have a limit (OpenAI's names)."""
    out: list[tuple[str, str]] = []
    for name, (limit, remaining, reset) in (("requests", v.requests), ("tokens", v.tokens)):
        if limit > 0:
            out += [
                (f"x-ratelimit-limit-{name}", str(limit)),
                (f"x-ratelimit-remaining-{name}", str(remaining)),
                (f"x-ratelimit-reset-{name}", duration(reset)),
            ]
    return out


def retry_after(v: Verdict) -> str:
    """Whole seconds (what retry-after takes), never 0: a client retrying at once is refused again."""
    return str(max(1, math.ceil(v.reset_ms / 1000)))


def usd(nano: int) -> str:
    """Dollars the way a bill shows them, but exact: cents are too coarse for a per-token spend."""
    whole, frac = divmod(abs(nano), NANO_PER_USD)
    digits = f"{frac:09d}".rstrip("0").ljust(2, "0")
    return f"{'-' if nano < 0 else ''}${whole}.{digits}"


def quota_message(v: Verdict, levels: tuple[Level, ...]) -> str:
    """OpenAI's insufficient_quota words, and which budget it was."""
    level = levels[v.level]
    period = level.period
    name = f"{period.name} " if period and period.name else ""
    resets = f" It resets at {period.ends_at}." if period and period.name else ""
    return (
        f"You exceeded your current quota: {level.kind} {level.id} has spent {usd(v.used)} of its "
        f"{name}budget of {usd(v.limit)}.{resets}"
    )


def message(v: Verdict, levels: tuple[Level, ...], estimate: int) -> str:
    level = levels[v.level]
    on = f"on {level.kind} {level.id}"
    wait = f"Please try again in {duration(v.reset_ms)}."
    if v.kind == REQUESTS:
        used = f"Limit {v.limit}, Used {v.used}, Requested 1."
        return f"Rate limit reached for requests per minute (RPM) {on}: {used} {wait}"
    if v.kind == TOKENS:
        if estimate > v.limit:
            return (
                f"Request too large for tokens per minute (TPM) {on}: Limit {v.limit}, Requested {estimate}. "
                "The input or output tokens (max_tokens) must be reduced in order to run successfully."
            )
        return (
            f"Rate limit reached for tokens per minute (TPM) {on}: Limit {v.limit}, Used {v.used}, "
            f"Requested {estimate}. {wait}"
        )
    busy = f"Limit {v.limit}, In progress {v.used}."
    return f"Too many parallel requests {on}: {busy} Please try again when one finishes."
