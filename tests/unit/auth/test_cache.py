"""The per-worker lookup cache: fresh entries cost nothing, stale ones are looked up
again (once, however many wait), and an unreachable store falls back to what was known."""

from __future__ import annotations

import asyncio

import pytest

from ghostllm.auth.cache import LookupCache, Unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Store:
    def __init__(self) -> None:
        self.values: dict[str, str] = {"a": "A"}
        self.calls = 0
        self.down = False
        self.gate: asyncio.Event | None = None

    async def lookup(self, key: str) -> str | None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ConnectionError("store down")
        return self.values.get(key)


def make(store: Store, clock: Clock, **kw: float) -> LookupCache[str, str]:
    return LookupCache(store.lookup, ttl_s=2.0, timeout_s=1.0, clock=clock, **kw)  # type: ignore[arg-type]


def test_fresh_entries_do_not_touch_the_store_and_stale_ones_do() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)

    async def go() -> None:
        assert await cache.get("a") == "A"
        assert await cache.get("a") == "A"
        assert store.calls == 1
        store.values["a"] = "A2"
        clock.now = 2.5
        assert await cache.get("a") == "A2"
        assert store.calls == 2

    asyncio.run(go())


def test_unknown_keys_are_cached_too() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)

    async def go() -> None:
        assert await cache.get("nope") is None
        assert await cache.get("nope") is None
        assert store.calls == 1

    asyncio.run(go())


def test_outage_serves_what_was_known_and_refuses_what_was_not() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)

    async def go() -> None:
        assert await cache.get("a") == "A"
        store.down = True
        clock.now = 10
        assert await cache.get("a") == "A"
        calls = store.calls
        # Trusted for another TTL: requests during an outage do not each wait on the store.
        assert await cache.get("a") == "A"
        assert store.calls == calls
        with pytest.raises(Unavailable):
            await cache.get("b")

    asyncio.run(go())


def test_a_hanging_store_times_out() -> None:
    store, clock = Store(), Clock()
    store.gate = asyncio.Event()  # never set
    cache = LookupCache(store.lookup, ttl_s=2.0, timeout_s=0.05, clock=clock)

    async def go() -> None:
        with pytest.raises(Unavailable):
            await cache.get("a")

    asyncio.run(go())


def test_concurrent_misses_share_one_lookup() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)

    async def go() -> None:
        store.gate = asyncio.Event()
        waiting = [asyncio.ensure_future(cache.get("a")) for _ in range(50)]
        await asyncio.sleep(0)
        store.gate.set()
        assert await asyncio.gather(*waiting) == ["A"] * 50
        assert store.calls == 1

    asyncio.run(go())


def test_clear_forces_a_lookup_but_keeps_the_fallback() -> None:
    store, clock = Store(), Clock()
    cache = make(store, clock)

    async def go() -> None:
        await cache.get("a")
        cache.clear()
        store.down = True
        assert await cache.get("a") == "A"  # looked up (and failed): the old value stands
        assert store.calls == 2

    asyncio.run(go())


def test_size_is_bounded() -> None:
    store, clock = Store(), Clock()
    cache = LookupCache(store.lookup, ttl_s=2.0, timeout_s=1.0, clock=clock, max_entries=10)

    async def go() -> None:
        for i in range(25):
            await cache.get(f"k{i}")
        assert len(cache) == 10

    asyncio.run(go())
