"""The shared Redis on 127.0.0.1:6379, for tests that need one: each test uses a key
prefix of its own and never flushes anything. Without Redis such tests skip, except
under CI=true, where its absence fails the run."""

from __future__ import annotations

import os
import uuid

import pytest
import redis

REDIS_URL = "redis://127.0.0.1:6379/0"


def require_redis() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis not reachable at {REDIS_URL}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: Redis must be there)")
        pytest.skip(reason)
    return client


def unique_prefix() -> str:
    return f"ghostllm-test-{uuid.uuid4().hex[:12]}:"
