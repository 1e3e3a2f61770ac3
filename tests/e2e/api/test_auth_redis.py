"""With Redis configured, a change to accounts is pushed to every worker at once: the
cache TTL here is far longer than the test, so only the push explains what is seen."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.api.test_auth import SPREAD, chat, eventually
from tests.support.accounts import Accounts, stack_store
from tests.support.procs import ROOT, Stack, stack_config, start_stack, stop
from tests.support.redis import REDIS_URL, require_redis, unique_prefix


@pytest.fixture
def redis_stack(upstream_port: int, tmp_path: Path) -> Iterator[tuple[Stack, str]]:
    client = require_redis()
    prefix = unique_prefix()
    config = stack_config(upstream_port, tmp_path)
    config["redis"] = {"url": REDIS_URL, "prefix": prefix}
    config["auth"] = {"key_cache_ttl_s": 5, "key_cache_ttl_pushed_s": 3600}
    s = start_stack(config, upstream_port, tmp_path)
    try:
        # Both workers subscribed: from here on a change is pushed, not waited for.
        channel = f"{prefix}changes"
        eventually(lambda: dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) == 2)
        yield s, str(tmp_path / "ghostllm.yaml")
    finally:
        stop(s.proc)
        client.close()


def test_cli_revocation_is_pushed_to_every_worker(redis_stack: tuple[Stack, str]) -> None:
    stack, config_file = redis_stack
    accounts = Accounts(stack_store(stack.config))
    key_id, key = accounts.key()
    assert all(chat(stack, key) == 200 for _ in range(SPREAD))
    out = subprocess.run(
        [sys.executable, "-m", "ghostllm", "key", "revoke", key_id, "-c", config_file],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    # Well inside the 1 h TTL: the push did it.
    eventually(lambda: all(chat(stack, key) == 401 for _ in range(SPREAD)), within=10)
