"""Failure scenarios selected by the request's ``model`` value (see the package docstring)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    NORMAL = "normal"
    ERROR = "error"
    SLOW = "slow"
    HANG = "hang"
    RESET = "reset"
    GARBAGE = "garbage-sse"
    CUT = "cut-stream"
    SLOW_CHUNKS = "slow-chunks"
    WRONG_SHAPE = "wrong-shape"
    OVERSIZED = "oversized"
    OVERSIZED_CHUNKED = "oversized-chunked"
    LONG_ERROR = "long-error"
    STALL = "stall-after"
    RESET_AFTER = "reset-after"


@dataclass(frozen=True, slots=True)
class Scenario:
    kind: Kind
    status: int = 200
    delay: float = 0.0
    # OVERSIZED*: the size of the answer's body in bytes.
    size: int = 0
    # STALL, RESET_AFTER: how many stream events go out first.
    count: int = 0
    # ERROR 429: its retry-after, in seconds.
    retry_after: int = 7


NORMAL = Scenario(Kind.NORMAL)

# Names are checked by prefix first so the hot path (an ordinary model name) costs one call.
_PREFIXES = (
    "error-",
    "slow-",
    "hang",
    "reset",
    "stall-after-",
    "garbage-sse",
    "cut-stream",
    "wrong-shape",
    "oversized-",
    "long-error-",
)

# Streams in the slow-chunks scenario carry at least this many content chunks, so a test has
# time to disconnect or shut down mid-stream.
SLOW_CHUNKS_MIN_WORDS = 20
MIB = 1024 * 1024
# An oversized answer may be this large at most (the gateway's own limit is 64 MiB or more).
MAX_OVERSIZED_MIB = 1024


def scenario_for(model: object) -> Scenario:
    if not isinstance(model, str) or not model.startswith(_PREFIXES):
        return NORMAL
    return _parse(model)


@functools.lru_cache(maxsize=256)
def _parse(model: str) -> Scenario:
    if model == "hang":
        return Scenario(Kind.HANG)
    if model == "reset":
        return Scenario(Kind.RESET)
    if model == "garbage-sse":
        return Scenario(Kind.GARBAGE)
    if model == "cut-stream":
        return Scenario(Kind.CUT)
    if model == "wrong-shape":
        return Scenario(Kind.WRONG_SHAPE)
    for prefix, kind in (("stall-after-", Kind.STALL), ("reset-after-", Kind.RESET_AFTER)):
        if model.startswith(prefix):
            count = _int_suffix(model, prefix)
            return NORMAL if count is None else Scenario(kind, count=count)
    if model.startswith("oversized-"):
        chunked = model.startswith("oversized-chunked-")
        mib = _int_suffix(model, "oversized-chunked-" if chunked else "oversized-")
        if mib is not None and 1 <= mib <= MAX_OVERSIZED_MIB:
            return Scenario(Kind.OVERSIZED_CHUNKED if chunked else Kind.OVERSIZED, size=mib * MIB)
        return NORMAL
    if model.startswith("long-error-"):
        status = _int_suffix(model, "long-error-")
        if status is not None and 400 <= status <= 599:
            return Scenario(Kind.LONG_ERROR, status=status)
        return NORMAL
    if model.startswith("slow-chunks-"):
        ms = _int_suffix(model, "slow-chunks-")
        return NORMAL if ms is None else Scenario(Kind.SLOW_CHUNKS, delay=ms / 1000)
    if model.startswith("slow-"):
        ms = _int_suffix(model, "slow-")
        return NORMAL if ms is None else Scenario(Kind.SLOW, delay=ms / 1000)
    if model.startswith("error-429-after-"):
        seconds = _int_suffix(model, "error-429-after-")
        return NORMAL if seconds is None else Scenario(Kind.ERROR, status=429, retry_after=seconds)
    if model.startswith("error-"):
        status = _int_suffix(model, "error-")
        if status is not None and 400 <= status <= 599:
            return Scenario(Kind.ERROR, status=status)
    return NORMAL


def _int_suffix(model: str, prefix: str) -> int | None:
    tail = model[len(prefix) :]
    return int(tail) if tail.isdigit() else None
