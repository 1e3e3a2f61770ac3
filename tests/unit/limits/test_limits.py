"""The rate limits without Redis: the in-process backend's rules, the headers and
messages clients see, and what a failing backend means under open and closed."""

from __future__ import annotations

import asyncio

import pytest

from ghostllm.accounts.permissions import Permissions
from ghostllm.auth.principal import Principal, Via
from ghostllm.config import LimitsConfig
from ghostllm.errors import RateLimited, ServiceUnavailable
from ghostllm.limits.core import (
    PARALLEL,
    REQUESTS,
    TOKENS,
    WINDOW_MS,
    Level,
    LimitsUnavailable,
    Verdict,
    duration,
    headers,
    message,
    retry_after,
)
from ghostllm.limits.limiter import Limiter
from ghostllm.limits.memory import MemoryBackend

KEY = Level("API key", "k1", 3, 100, 2)
T0 = 1_000_000


def test_requests_per_minute_are_exact_and_reset_with_the_window() -> None:
    b = MemoryBackend(60_000)
    got = [b.check((Level("API key", "k", 3, 0, 0),), 0, f"s{i}", T0 + i) for i in range(5)]
    assert [v.ok for v in got] == [True, True, True, False, False]
    refused = got[3]
    assert (refused.kind, refused.limit, refused.used, refused.reset_ms) == (REQUESTS, 3, 3, WINDOW_MS - 3)
    assert [v.requests[1] for v in got[:3]] == [2, 1, 0]
    # The window starts with the first request, so it ends a minute after that one.
    assert not b.check((Level("API key", "k", 3, 0, 0),), 0, "x", T0 + WINDOW_MS - 1).ok
    assert b.check((Level("API key", "k", 3, 0, 0),), 0, "x", T0 + WINDOW_MS).ok


def test_tokens_reserve_the_estimate_and_settle_the_real_count() -> None:
    b = MemoryBackend(60_000)
    lv = (Level("API key", "k", 0, 100, 0),)
    first = b.check(lv, 60, "a", T0)
    assert first.ok and first.tokens == (100, 40, WINDOW_MS)
    assert not b.check(lv, 60, "b", T0 + 1).ok  # 60 + 60 > 100
    b.settle(lv, first.windows, "a", 10 - 60, 0)  # it used 10
    second = b.check(lv, 60, "b", T0 + 2)
    assert second.ok and second.tokens[1] == 30
    refused = b.check(lv, 31, "c", T0 + 3)
    assert (refused.ok, refused.kind, refused.used) == (False, TOKENS, 70)


def test_a_settle_for_an_old_window_changes_nothing_in_the_new_one() -> None:
    b = MemoryBackend(60_000)
    lv = (Level("API key", "k", 0, 100, 0),)
    old = b.check(lv, 50, "a", T0)
    assert b.check(lv, 50, "b", T0 + WINDOW_MS).ok
    b.settle(lv, old.windows, "a", -50, 0)
    assert b.windows[lv[0].key][2] == 50


def test_parallel_slots_are_counted_released_and_expire() -> None:
    b = MemoryBackend(1000)
    lv = (Level("API key", "k", 0, 0, 2),)
    a, c = b.check(lv, 0, "a", T0), b.check(lv, 0, "c", T0)
    refused = b.check(lv, 0, "d", T0)
    assert a.ok and c.ok and (refused.ok, refused.kind, refused.used) == (False, PARALLEL, 2)
    b.settle(lv, a.windows, "a", 0, 0)
    assert b.check(lv, 0, "d", T0 + 1).ok
    # A slot whose settle never came (a crash) lapses with its TTL.
    assert not b.check(lv, 0, "e", T0 + 999).ok
    assert b.check(lv, 0, "e", T0 + 1001).ok


def test_all_levels_or_none() -> None:
    b = MemoryBackend(60_000)
    key, team = Level("API key", "k", 0, 0, 0), Level("team", "t", 2, 0, 0)
    other = Level("API key", "k2", 0, 0, 0)
    assert b.check((key, team), 0, "a", T0).ok
    assert b.check((other, team), 0, "b", T0).ok
    refused = b.check((key, team), 0, "c", T0)
    assert (refused.ok, refused.level, refused.kind) == (False, 1, REQUESTS)
    # The refused request counted nowhere.
    assert b.windows[key.key][1] == 1


def test_the_tightest_level_names_the_headers() -> None:
    b = MemoryBackend(60_000)
    v = b.check((Level("API key", "k", 10, 1000, 0), Level("team", "t", 5, 2000, 0)), 100, "a", T0)
    assert v.requests == (5, 4, WINDOW_MS) and v.tokens == (1000, 900, WINDOW_MS)
    assert headers(v) == [
        ("x-ratelimit-limit-requests", "5"),
        ("x-ratelimit-remaining-requests", "4"),
        ("x-ratelimit-reset-requests", "1m0s"),
        ("x-ratelimit-limit-tokens", "1000"),
        ("x-ratelimit-remaining-tokens", "900"),
        ("x-ratelimit-reset-tokens", "1m0s"),
    ]
    assert headers(Verdict(True, requests=(3, 0, 1500))) == [
        ("x-ratelimit-limit-requests", "3"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "1.5s"),
    ]


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0ms"), (250, "250ms"), (1000, "1s"), (12_345, "12.345s"), (60_000, "1m0s"), (90_500, "1m30.5s")],
)
def test_durations_read_like_openai(ms: int, text: str) -> None:
    assert duration(ms) == text


def test_messages_name_the_limit() -> None:
    levels = (Level("API key", "key-1", 3, 100, 2),)
    rpm = Verdict(False, 0, REQUESTS, 3, 3, 20_000)
    assert message(rpm, levels, 0) == (
        "Rate limit reached for requests per minute (RPM) on API key key-1: Limit 3, Used 3, Requested 1. "
        "Please try again in 20s."
    )
    assert retry_after(rpm) == "20"
    assert retry_after(Verdict(False, 0, REQUESTS, 3, 3, 10)) == "1"
    tpm = Verdict(False, 0, TOKENS, 100, 90, 1500)
    assert "tokens per minute (TPM) on API key key-1: Limit 100, Used 90, Requested 20" in message(tpm, levels, 20)
    assert message(tpm, levels, 500).startswith("Request too large for tokens per minute (TPM)")
    par = Verdict(False, 0, PARALLEL, 2, 2, 1000)
    assert message(par, levels, 0).startswith("Too many parallel requests on API key key-1: Limit 2, In progress 2.")


def principal(**fields: object) -> Principal:
    base: dict[str, object] = {"via": Via.KEY, "user_id": "u", "team_id": "t", "key_id": "k", "role": None}
    return Principal(permissions=Permissions(), **{**base, **fields})  # type: ignore[arg-type]


def test_levels_come_from_the_key_the_config_and_the_team() -> None:
    limiter = Limiter(LimitsConfig(default_rpm=60, default_tpm=0, user_parallel=4), MemoryBackend(1000))
    assert limiter.levels(principal()) == (Level("API key", "k", 60, 0, 0), Level("user", "u", 0, 0, 4))
    # The key's own value wins, 0 (no limit) included; the team's come with the principal.
    got = limiter.levels(principal(rate_limit=0, tpm_limit=500, team_rate_limit=7, user_id=None))
    assert got == (Level("API key", "k", 0, 500, 0), Level("team", "t", 7, 0, 0))
    assert Limiter(LimitsConfig(), MemoryBackend(1000)).levels(principal()) == ()


def test_the_limiter_refuses_with_headers_and_settles_once() -> None:
    limiter = Limiter(LimitsConfig(), MemoryBackend(60_000))
    p = principal(rate_limit=1, max_parallel=1)

    async def go() -> None:
        sent = await limiter.admit(p, ("r1", 1.0), lambda: 0)
        assert ("x-ratelimit-remaining-requests", "0") in sent
        with pytest.raises(RateLimited) as err:
            await limiter.admit(p, ("r2", 2.0), lambda: 0)
        assert err.value.code == "rate_limit_exceeded" and err.value.http_status == 429
        assert err.value.retry_after is not None and int(err.value.retry_after) >= 1
        assert ("x-ratelimit-limit-requests", "1") in err.value.headers
        limiter.settle(("r1", 1.0), 0, 0)
        limiter.settle(("r1", 1.0), 0, 0)  # a second settle finds nothing
        assert not limiter._pending

    asyncio.run(go())


class Down:
    def __init__(self) -> None:
        self.calls = 0

    async def admit(self, levels: tuple[Level, ...], estimate: int, slot: str) -> Verdict:
        self.calls += 1
        raise LimitsUnavailable("down")

    def settle(
        self, levels: tuple[Level, ...], windows: tuple[int, ...], slot: str, delta: int, cost_nano: int
    ) -> None:
        raise AssertionError("nothing was admitted")

    async def seed(self, level: Level, spent_nano: int) -> None:
        raise AssertionError("nothing was checked")

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def test_an_unreachable_backend_is_open_or_closed(caplog: pytest.LogCaptureFixture) -> None:
    p = principal(rate_limit=1)
    opened = Limiter(LimitsConfig(on_redis_error="open"), Down())
    closed = Limiter(LimitsConfig(on_redis_error="closed"), Down())

    async def go() -> None:
        for _ in range(3):
            assert await opened.admit(p, ("r", 1.0), lambda: 0) == []
        with pytest.raises(ServiceUnavailable) as err:
            await closed.admit(p, ("r", 1.0), lambda: 0)
        assert err.value.http_status == 503 and err.value.retry_after == "1"

    with caplog.at_level("WARNING"):
        asyncio.run(go())
    assert opened.backend_errors == 3
    # One warning a minute, however many requests met the outage.
    assert sum("rate limits unavailable" in r.message for r in caplog.records) == 2


def test_the_limits_section_is_read_and_checked() -> None:
    from ghostllm.config import parse_config
    from ghostllm.errors import ConfigError

    config = parse_config({"limits": {"default_rpm": 60}}, env={"GHOSTLLM_LIMITS_ON_REDIS_ERROR": "closed"})
    assert config.limits.default_rpm == 60 and config.limits.on_redis_error == "closed"
    with pytest.raises(ConfigError, match="on_redis_error"):
        parse_config({"limits": {"on_redis_error": "maybe"}}, env={})
    with pytest.raises(ConfigError, match="limits"):
        parse_config({"limits": {"default_tpm": -1}}, env={})
