"""The login throttle (auth/login_guard.py), on both backends: the in-process one and the
shared Redis on 127.0.0.1:6379 (a key prefix of its own per test, deleted afterwards;
without Redis those cases skip, under CI=true they fail). What refuses, for how long, what
a success or an unanswered attempt gives back, and that a Redis that fails or stalls only
ever costs the throttle, never the login."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
import pytest

from ghostllm.auth.login_guard import (
    NOT_COUNTED,
    Backend,
    LoginGuard,
    MemoryBackend,
    RedisBackend,
    email_digest,
    login_guard,
)
from ghostllm.config import AuthConfig, parse_config
from ghostllm.errors import RateLimited
from tests.support.redis import REDIS_URL, require_redis, unique_prefix

T = TypeVar("T")
ALICE = "alice@example.com"
IP = "203.0.113.7"


def config(email: int = 3, ip: int = 5, window_s: float = 60.0) -> AuthConfig:
    return AuthConfig(login_max_failures=email, login_max_failures_per_ip=ip, login_window_s=window_s)


@dataclass
class Kind:
    """Makes guards on one backend kind; every guard of one test shares its counters."""

    name: str
    prefix: str = ""
    memory: MemoryBackend | None = None

    def backend(self) -> Backend:
        if self.name == "redis":
            return RedisBackend(REDIS_URL)
        if self.memory is None:
            self.memory = MemoryBackend()
        return self.memory

    def guard(self, cfg: AuthConfig | None = None) -> LoginGuard:
        return LoginGuard(cfg or config(), self.backend(), prefix=self.prefix)


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> Iterator[Kind]:
    if request.param == "memory":
        yield Kind("memory")
        return
    client = require_redis()
    prefix = unique_prefix()
    try:
        yield Kind("redis", prefix)
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


def run(work: Callable[[], Awaitable[T]]) -> T:
    async def go() -> T:
        return await work()

    return asyncio.run(go())


async def refused(guard: LoginGuard, email: str = ALICE, ip: str = IP) -> RateLimited:
    with pytest.raises(RateLimited) as err:
        await guard.admit(email, ip)
    return err.value


def test_failures_up_to_the_limit_then_every_attempt_is_refused(kind: Kind) -> None:
    async def go() -> None:
        guard = kind.guard()
        try:
            for _ in range(3):
                attempt = await guard.admit(ALICE, IP)
                assert attempt.email and attempt.ip  # counted on both
            err = await refused(guard)
            assert (err.http_status, err.grpc_code) == (429, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert (err.error_type, err.code) == ("rate_limit_error", "rate_limit_exceeded")
            assert err.retry_after is not None and 1 <= int(err.retry_after) <= 60
            assert err.message == f"Too many failed login attempts. Please try again in {err.retry_after}s."
            # Refusals count nowhere: the address has room for another email still.
            await refused(guard)
            assert (await guard.admit("bob@example.com", IP)).ip
        finally:
            await guard.close()

    run(go)


def test_the_window_lapses_and_the_email_may_try_again(kind: Kind) -> None:
    async def go() -> None:
        guard = kind.guard(config(email=2, window_s=0.3))
        try:
            await guard.admit(ALICE, IP)
            await guard.admit(ALICE, IP)
            assert (await refused(guard)).retry_after == "1"  # rounded up, never 0
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert (await guard.admit(ALICE, IP)).email
                    break
                except RateLimited:
                    assert time.monotonic() < deadline, "the window never lapsed"
                    await asyncio.sleep(0.05)
        finally:
            await guard.close()

    run(go)


def test_emails_are_counted_as_the_store_compares_them_and_only_hashed(kind: Kind) -> None:
    async def go() -> list[str]:
        guard = kind.guard()
        try:
            for spelling in ("alice@example.com", " Alice@Example.COM", "ALICE@EXAMPLE.COM  "):
                await guard.admit(spelling, IP)
            await refused(guard, "aLiCe@example.com")
        finally:
            await guard.close()
        if kind.memory is not None:
            return kind.memory.keys()
        client = require_redis()
        try:
            return [k.decode() for k in client.scan_iter(match=f"{kind.prefix}*")]
        finally:
            client.close()

    keys = run(go)
    assert sorted(keys) == sorted([f"{kind.prefix}login:email:{email_digest(ALICE)}", f"{kind.prefix}login:ip:{IP}"])
    assert not any("alice" in k.lower() for k in keys)


def test_a_success_clears_the_email_and_is_no_failure_of_the_address(kind: Kind) -> None:
    async def go() -> None:
        guard = kind.guard(config(email=3, ip=4))
        try:
            await guard.admit(ALICE, IP)
            await guard.admit(ALICE, IP)
            await guard.succeeded(await guard.admit(ALICE, IP))
            # Alice starts over: three more may fail...
            for _ in range(2):
                await guard.admit(ALICE, IP)
            # ...but the address counted two failures before and two now: at its limit of 4.
            await refused(guard, "carol@example.com")
            assert (await guard.admit("carol@example.com", "198.51.100.1")).ip
        finally:
            await guard.close()

    run(go)


def test_attempts_in_flight_count_so_guesses_sent_at_once_cannot_all_get_through(kind: Kind) -> None:
    async def go() -> list[bool]:
        guard = kind.guard()
        try:

            async def one() -> bool:
                try:
                    await guard.admit(ALICE, IP)
                    return True
                except RateLimited:
                    return False

            admitted = await asyncio.gather(*(one() for _ in range(12)))
            assert guard.backend_errors == 0  # else some were let through unthrottled
            return admitted
        finally:
            await guard.close()

    assert sum(run(go)) == 3


def test_an_attempt_the_store_could_not_answer_is_taken_back(kind: Kind) -> None:
    async def go() -> None:
        guard = kind.guard(config(email=2, ip=2))
        try:
            await guard.admit(ALICE, IP)
            await guard.abandoned(await guard.admit(ALICE, IP))
            await guard.admit(ALICE, IP)  # the second of two, on both counters
            await refused(guard)
            await refused(guard, "bob@example.com")
        finally:
            await guard.close()

    run(go)


def test_two_guards_on_one_redis_share_the_count() -> None:
    """Two workers (or replicas): each its own guard and connection, the same counters."""
    client = require_redis()
    prefix = unique_prefix()

    async def go() -> None:
        a = LoginGuard(config(), RedisBackend(REDIS_URL), prefix=prefix)
        b = LoginGuard(config(), RedisBackend(REDIS_URL), prefix=prefix)
        try:
            await a.admit(ALICE, IP)
            await b.admit(ALICE, "198.51.100.1")
            await a.admit(ALICE, "198.51.100.2")
            await refused(a)
            await refused(b)
            await a.succeeded(await b.admit("bob@example.com", IP))
        finally:
            await a.close()
            await b.close()

    try:
        run(go)
        ttl = client.pttl(f"{prefix}login:email:{email_digest(ALICE)}")
        assert 0 < ttl <= 60_000  # every counter expires with its window
        assert client.get(f"{prefix}login:email:{email_digest(ALICE)}") == b"3"
        assert client.get(f"{prefix}login:email:{email_digest('bob@example.com')}") is None  # cleared
        assert client.get(f"{prefix}login:ip:{IP}") == b"1"  # Bob's success taken back
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


def test_what_is_off_is_not_counted() -> None:
    async def go() -> None:
        memory = MemoryBackend()
        no_email = LoginGuard(config(email=0, ip=2), memory)
        for _ in range(2):
            assert (await no_email.admit(ALICE, "")).email is None  # nor an unknown address
        assert len(memory) == 0
        assert (await no_email.admit(ALICE, IP)).email is None
        assert len(memory) == 1
        off = LoginGuard(config(window_s=0), memory)
        assert not off.enabled
        for _ in range(5):
            assert await off.admit(ALICE, IP) is NOT_COUNTED
        assert len(memory) == 1

    run(go)


def test_the_in_process_counters_are_bounded() -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    memory = MemoryBackend(max_entries=10, clock=clock)
    guard = LoginGuard(config(email=1, ip=0), memory)

    async def go() -> None:
        for i in range(50):
            clock.now = i
            await guard.admit(f"user{i}@example.com", IP)
        assert len(memory) == 10
        await refused(guard, "user49@example.com")  # the newest are the ones kept
        clock.now = 200.0  # all lapsed: pruned as the next one comes
        await guard.admit(ALICE, IP)
        assert memory.keys() == [f"login:email:{email_digest(ALICE)}"]

    run(go)


def test_an_unreachable_redis_serves_unthrottled_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed again: nothing listens there

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    guard = LoginGuard(config(email=1), RedisBackend(f"redis://127.0.0.1:{port}/0"), clock=clock)

    async def go() -> None:
        try:
            for step in range(6):
                clock.now = step * 0.6
                for _ in range(3):
                    assert await guard.admit(ALICE, IP) is NOT_COUNTED
                await guard.succeeded(NOT_COUNTED)
        finally:
            await guard.close()

    with caplog.at_level(logging.WARNING, logger="ghostllm.auth.login_guard"):
        run(go)
    # Tried again only after each second's pause: at 0, 1.2, 2.4 s (not once per login).
    assert guard.backend_errors == 3
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "unthrottled" in warnings[0]


def test_a_redis_that_never_answers_costs_a_login_its_deadline_only() -> None:
    # Accepts connections (the kernel does) but never reads or answers: a stalled Redis.
    with socket.create_server(("127.0.0.1", 0), backlog=64) as stalled:
        url = f"redis://127.0.0.1:{stalled.getsockname()[1]}/0"
        guard = LoginGuard(config(email=1), RedisBackend(url, timeout_s=0.2))

        async def go() -> None:
            try:
                # Bounded far above the deadline: what is checked is that it returns at all.
                attempt = await asyncio.wait_for(guard.admit(ALICE, IP), timeout=10)
                assert attempt is NOT_COUNTED
            finally:
                await guard.close()

        run(go)
    assert guard.backend_errors == 1


def test_the_config_has_defaults_and_takes_the_environment() -> None:
    defaults = parse_config({}, env={}).auth
    assert (defaults.login_max_failures, defaults.login_max_failures_per_ip, defaults.login_window_s) == (10, 50, 900)
    cfg = parse_config(
        {"auth": {"login_max_failures": 4}, "redis": {"url": REDIS_URL, "prefix": "gw:"}},
        env={"GHOSTLLM_AUTH_LOGIN_WINDOW_S": "30", "GHOSTLLM_AUTH_LOGIN_MAX_FAILURES_PER_IP": "0"},
    )
    guard = login_guard(cfg)
    assert (guard.max_email, guard.max_ip, guard.window_ms) == (4, 0, 30_000)
    assert isinstance(guard.backend, RedisBackend) and guard.prefix == "gw:"
    local = login_guard(parse_config({}, env={}))
    assert isinstance(local.backend, MemoryBackend) and local.prefix == ""
