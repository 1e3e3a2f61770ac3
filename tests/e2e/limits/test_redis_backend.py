"""The Redis backend over its pipelined connection (limits/resp.py), against real Redis: a
private redis-server on a free port for what may not be done to the shared one (losing the
scripts, a stall, a restart), the shared one for exactness and batching. No timing
assertions: a stall is DEBUG SLEEP far longer than the deadline."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from ghostllm.limits.core import Level, LimitsUnavailable
from ghostllm.limits.redis_backend import RedisBackend
from ghostllm.limits.resp import Endpoint, RespConnection, RespError, pack
from tests.support.procs import free_port
from tests.support.redis import REDIS_URL, require_redis, unique_prefix

TIMEOUT_S = 0.2
SLOT_TTL_MS = 60_000


class PrivateRedis:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail("redis-server is not installed (CI=true: it must be)")
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--enable-debug-command", "yes", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture
def private(tmp_path: Path) -> Iterator[PrivateRedis]:
    r = PrivateRedis(tmp_path)
    r.start()
    try:
        yield r
    finally:
        r.stop()


def level(name: str = "k1", rpm: int = 0, parallel: int = 0) -> Level:
    return Level("API key", name, rpm, 0, parallel)


def test_pack_is_resp() -> None:
    assert pack(["SET", b"k", 12]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n"


def test_endpoint_reads_the_url_as_redis_py_does() -> None:
    e = Endpoint.of_url("redis://bob:s3cret@10.0.0.2:6380/3")
    assert (e.host, e.port, e.db, e.username, e.password, e.tls) == ("10.0.0.2", 6380, 3, "bob", "s3cret", False)
    assert e.handshake() == [["AUTH", "bob", "s3cret"], ["SELECT", 3]]
    assert Endpoint.of_url("rediss://h:1/0").tls
    assert Endpoint.of_url("redis://127.0.0.1:6379/0").handshake() == []


def test_replies_match_calls_in_order() -> None:
    require_redis()
    key = unique_prefix() + "n"

    async def go() -> list[object]:
        conn = await RespConnection.open(Endpoint.of_url(REDIS_URL), 1.0, 1.0)
        try:
            return list(await asyncio.gather(*(conn.call(["INCR", key]) for _ in range(50)), conn.call(["DEL", key])))
        finally:
            conn.close()

    assert asyncio.run(go()) == [*range(1, 51), 1]


def test_admits_in_one_tick_share_one_round_trip_and_are_exact() -> None:
    require_redis()
    prefix = unique_prefix()

    async def go() -> tuple[int, int, int]:
        backend = RedisBackend(REDIS_URL, prefix, TIMEOUT_S, SLOT_TTL_MS)
        await backend.start()
        before = backend.round_trips
        lv = (level(rpm=7),)
        verdicts = await asyncio.gather(*(backend.admit(lv, 0, f"s{i}") for i in range(20)))
        trips = backend.round_trips - before
        await backend.close()
        return sum(v.ok for v in verdicts), trips, backend.calls

    try:
        ok, trips, calls = asyncio.run(go())
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for k in client.scan_iter(prefix + "*"):
            client.delete(k)
    assert (ok, trips) == (7, 1)
    assert calls >= 20


def test_lost_scripts_are_loaded_again(private: PrivateRedis) -> None:
    async def go() -> tuple[bool, bool]:
        backend = RedisBackend(private.url, "t:", TIMEOUT_S, SLOT_TTL_MS)
        await backend.start()
        first = await backend.admit((level(rpm=10),), 0, "a")
        private.client().script_flush()
        again = await backend.admit((level(rpm=10),), 0, "b")
        await backend.close()
        return first.ok, again.ok

    assert asyncio.run(go()) == (True, True)
    assert private.client().hget("t:limits:apikey:k1", "r") == b"2"


def test_a_stall_fails_the_call_within_its_deadline_then_recovers(private: PrivateRedis) -> None:
    async def go() -> bool:
        backend = RedisBackend(private.url, "t:", TIMEOUT_S, SLOT_TTL_MS)
        await backend.start()
        sleeper = redis.asyncio.Redis.from_url(private.url)
        stall = asyncio.create_task(sleeper.execute_command("DEBUG", "SLEEP", "1.5"))  # type: ignore[no-untyped-call]
        await asyncio.sleep(0.1)
        with pytest.raises(LimitsUnavailable):
            await backend.admit((level(rpm=10),), 0, "a")
        # For a second after a failure nothing is tried: no call waits on a Redis known to be away.
        with pytest.raises(LimitsUnavailable, match="less than a second ago"):
            await backend.admit((level(rpm=10),), 0, "b")
        await stall
        await sleeper.aclose()
        await asyncio.sleep(1.1)
        verdict = await backend.admit((level(rpm=10),), 0, "c")
        await backend.close()
        return verdict.ok

    assert asyncio.run(go())


def test_a_restarted_redis_is_reconnected_and_given_the_scripts(private: PrivateRedis) -> None:
    async def go() -> bool:
        backend = RedisBackend(private.url, "t:", TIMEOUT_S, SLOT_TTL_MS)
        await backend.start()
        assert (await backend.admit((level(rpm=10),), 0, "a")).ok
        private.stop()
        with pytest.raises(LimitsUnavailable):
            await backend.admit((level(rpm=10),), 0, "b")
        private.start()  # same port, no scripts, no keys
        await asyncio.sleep(1.1)
        verdict = await backend.admit((level(rpm=10),), 0, "c")
        await backend.close()
        return verdict.ok

    assert asyncio.run(go())


def test_an_unreachable_redis_at_start_is_tried_again_per_request(private: PrivateRedis) -> None:
    url = private.url
    private.stop()

    async def go() -> bool:
        backend = RedisBackend(url, "t:", TIMEOUT_S, SLOT_TTL_MS)
        await backend.start()  # logs a warning, does not raise
        with pytest.raises(LimitsUnavailable):
            await backend.admit((level(rpm=10),), 0, "a")
        private.start()
        await asyncio.sleep(1.1)
        verdict = await backend.admit((level(rpm=10),), 0, "b")
        await backend.close()
        return verdict.ok

    assert asyncio.run(go())


def test_a_closed_connection_refuses_to_send() -> None:
    require_redis()

    async def go() -> None:
        conn = await RespConnection.open(Endpoint.of_url(REDIS_URL), 1.0, 1.0)
        conn.close()
        with pytest.raises(RespError):
            await conn.call(["PING"])

    asyncio.run(go())
