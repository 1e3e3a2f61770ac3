"""Two full replicas: two `ghostllm serve` (each its own Envoy and two workers, its own ports
and data directory) sharing one PostgreSQL schema and one Redis prefix, as two machines of
one deployment would. N concurrent requests split over both against a limit of L admit
exactly L, for requests, tokens and parallel slots, per key and per team: the counters are
global, not per replica. Where admitted requests could give something back before the last
one is checked (tokens, slots), they are streams held open until every request has its
answer, so the counts are exact whatever the machine's speed. No timing is asserted."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ghostllm.gateway.pipeline import estimate_prompt
from tests.e2e.api.test_auth import HELLO, eventually, sdk
from tests.e2e.api.test_limits import check_429
from tests.support.accounts import Accounts, stack_store
from tests.support.http import Reply, request
from tests.support.postgres import migrated_schema
from tests.support.procs import Stack, stack_config, start_stack, stop
from tests.support.redis import REDIS_URL, require_redis, unique_prefix

# Streams of the development upstream that send their first chunk at once, then nothing for a
# minute: admitted requests stay in flight (holding their slot and their token reservation)
# until the test lets them go.
HOLD_MODEL = "slow-chunks-60000"
# How long a held request may wait for all the others (a bound against a hang, not a timing).
GATHER_S = 60.0

Replicas = tuple[Stack, Stack]


def stop_replica(stack: Stack) -> None:
    """stop(), then any worker that outlived its supervisor, by the PID in its ready file. A
    worker runs in a session of its own: if it hangs in its shutdown, stop() kills the
    supervisor after its timeout and the worker is out of reach (seen once in about twenty
    runs: the ledger's close waiting for a background task whose cancellation was lost)."""
    ready = {f: f.read_text().strip() for f in Path(stack.config["server"]["run_dir"]).glob("worker-*.ready")}
    stop(stack.proc)
    for f, pid in ready.items():
        port = f.name.removeprefix("worker-").removesuffix(".ready")
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue  # gone, as it should be
        if f"ghostllm worker --port {port} " in cmdline:
            warnings.warn(f"worker {pid} (port {port}) outlived its replica: killed", stacklevel=1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


@pytest.fixture(scope="module")
def replicas(upstream_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    redis = require_redis()
    prefix = unique_prefix()
    with contextlib.ExitStack() as cleanup:
        store_url = cleanup.enter_context(migrated_schema())
        # Registered before the stacks: runs after both are stopped.
        cleanup.callback(lambda: [redis.delete(k) for k in redis.scan_iter(match=f"{prefix}*")])
        stacks = []
        for name in ("replica-a", "replica-b"):
            tmp = tmp_path_factory.mktemp(name)
            # Built just before its start, so the second replica's free ports avoid the first's.
            config = stack_config(upstream_port, tmp)
            config["store"] = {"url": store_url}
            config["redis"] = {"url": REDIS_URL, "prefix": prefix}
            # The counts are exact only if every check reaches Redis: a generous deadline (the
            # default 0.2 s can pass on a loaded machine, above all on a worker's first call,
            # which also connects and loads the scripts), and a miss is a visible 503, never an
            # unchecked 200 (the outage behaviour itself is test_limits.py's).
            config["limits"] = {"redis_timeout_s": 5, "on_redis_error": "closed"}
            config["models"].append({"id": HOLD_MODEL, "provider": "dev"})
            s = start_stack(config, upstream_port, tmp)
            cleanup.callback(stop_replica, s)
            stacks.append(s)
        a, b = stacks
        assert a.rest_port != b.rest_port and a.config["server"]["data_dir"] != b.config["server"]["data_dir"]
        yield a, b


@pytest.fixture(scope="module")
def accounts(replicas: Replicas) -> Accounts:
    # One store for both: a key made here is known to every worker of either replica.
    a, b = replicas
    assert stack_store(a.config) == stack_store(b.config)
    return Accounts(stack_store(a.config))


def chat(stack: Stack, key: str, **body: Any) -> Reply:
    return request(stack.base_url + "/chat/completions", {"model": "dev-echo", "messages": HELLO, **body}, key=key)


def spread(replicas: Replicas, n: int, call: Any) -> list[tuple[int, Reply]]:
    """`call(stack, i)` n times at once, request i on replica i % 2: (replica, reply) each."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: (i % 2, call(replicas[i % 2], i)), range(n)))


def _held(stack: Stack, key: str, body: dict[str, Any], arrived: threading.Barrier, release: threading.Event) -> Reply:
    try:
        url = stack.base_url + "/chat/completions"
        auth = {"authorization": f"Bearer {key}"}
        with httpx.Client(timeout=30) as client, client.stream("POST", url, json=body, headers=auth) as r:
            headers = {k.lower(): v for k, v in r.headers.items()}
            if r.status_code == 200:
                # The stream has started (headers and a first event): it is in flight. `lines` is
                # kept until the end: a line iterator dropped early would close the connection.
                lines = r.iter_lines()
                first = next(line for line in lines if line.startswith("data: "))
                reply = Reply(200, headers, first.encode() + b"\n")
            else:
                reply = Reply(r.status_code, headers, r.read())
            arrived.wait(GATHER_S)
            release.wait(GATHER_S)
        # Leaving the block closes the connection: the client goes away mid-stream.
        return reply
    except BaseException:
        arrived.abort()
        raise


def held_open(replicas: Replicas, n: int, key: str, **body: Any) -> list[tuple[int, Reply]]:
    """n streams at once, request i on replica i % 2. Every admitted stream stays open (its
    first event read) until every request has its answer; then all are closed by the client."""
    full = {"model": HOLD_MODEL, "messages": HELLO, "stream": True, **body}
    arrived = threading.Barrier(n + 1)
    release = threading.Event()
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(_held, replicas[i % 2], key, full, arrived, release) for i in range(n)]
        try:
            arrived.wait(GATHER_S)
        except threading.BrokenBarrierError:
            pass  # one of them failed: its result below says how
        finally:
            release.set()
        return [(i % 2, f.result()) for i, f in enumerate(futures)]


def admitted(replies: list[tuple[int, Reply]]) -> list[Reply]:
    return [r for _, r in replies if r.status == 200]


def refused_on_each(replies: list[tuple[int, Reply]]) -> list[int]:
    return [sum(r.status != 200 for i, r in replies if i == replica) for replica in (0, 1)]


def check_refusals(replies: list[tuple[int, Reply]], limit: int, kind: str, text: str) -> None:
    """Every reply not admitted is our 429, naming the limit; and each replica refused at least
    what it would have admitted beyond the limit on its own (per-replica counters would not)."""
    for _, r in replies:
        if r.status != 200:
            assert text in check_429(r, kind)["message"]
    per_replica = len(replies) // 2
    assert all(n >= per_replica - limit for n in refused_on_each(replies)), refused_on_each(replies)


# Requests per minute


def test_requests_per_minute_are_exact_across_replicas(replicas: Replicas, accounts: Accounts) -> None:
    key_id, key = accounts.key(rate_limit=7)
    replies = spread(replicas, 24, lambda s, _: chat(s, key))
    ok = admitted(replies)
    assert len(ok) == 7
    # One counter: each admission saw the one before it, whichever replica made it.
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(7))
    for r in ok:
        assert r.json()["choices"][0]["message"]["content"]
        assert r.headers["x-ratelimit-limit-requests"] == "7"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    check_refusals(replies, 7, "requests per minute (RPM)", f"on API key {key_id}: Limit 7, Used 7, Requested 1.")
    for _, r in replies:
        if r.status != 200:
            assert r.headers["x-ratelimit-limit-requests"] == "7"
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
            assert r.headers["x-ratelimit-reset-requests"].endswith("s")
            assert "x-ratelimit-limit-tokens" not in r.headers  # no tokens limit on this key
    # The official SDK, on either replica: RateLimitError with our message and headers.
    for stack in replicas:
        with sdk(stack, key) as client, pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model="dev-echo", messages=HELLO)
        err = raised.value
        assert err.status_code == 429 and err.code == "rate_limit_exceeded" and err.type == "rate_limit_error"
        assert f"Rate limit reached for requests per minute (RPM) on API key {key_id}: Limit 7, Used 7" in err.message
        assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert int(err.response.headers["retry-after"]) >= 1


def test_a_team_limit_holds_across_replicas(replicas: Replicas, accounts: Accounts) -> None:
    team = accounts.run(lambda r: r.create_team(f"team-{uuid.uuid4().hex[:8]}", rate_limit=5)).id
    # One key used only on replica a, one only on b, one on both: all count against the team.
    only_a, only_b, both = (accounts.key(team=team)[1] for _ in range(3))

    def call(stack: Stack, i: int) -> Reply:
        return chat(stack, both if i % 3 == 0 else (only_a if stack is replicas[0] else only_b))

    replies = spread(replicas, 18, call)
    ok = admitted(replies)
    assert len(ok) == 5
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(5))
    check_refusals(replies, 5, "requests per minute (RPM)", f"on team {team}: Limit 5, Used 5, Requested 1.")
    # A key of the team that has not been used yet is refused too, on either replica.
    _, fresh = accounts.key(team=team)
    for stack in replicas:
        with sdk(stack, fresh) as client, pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model="dev-echo", messages=HELLO)
        assert raised.value.code == "rate_limit_exceeded"
        assert f"Rate limit reached for requests per minute (RPM) on team {team}" in raised.value.message


# Tokens per minute


def test_tokens_per_minute_are_exact_across_replicas(replicas: Replicas, accounts: Accounts) -> None:
    # RateLimit.estimate: the prompt at 4 characters a token plus max_tokens, so each reserves 250.
    reserve = 250
    max_tokens = reserve - estimate_prompt({"messages": HELLO})
    key_id, key = accounts.key(tpm_limit=1000)
    replies = held_open(replicas, 16, key, max_tokens=max_tokens)
    ok = admitted(replies)
    assert len(ok) == 4
    assert sorted(int(r.headers["x-ratelimit-remaining-tokens"]) for r in ok) == [0, 250, 500, 750]
    for r in ok:
        assert r.headers["x-ratelimit-limit-tokens"] == "1000"
        assert "x-ratelimit-limit-requests" not in r.headers  # no requests limit on this key
    used = f"on API key {key_id}: Limit 1000, Used 1000, Requested {reserve}."
    check_refusals(replies, 4, "tokens per minute (TPM)", used)
    for _, r in replies:
        if r.status != 200:
            assert r.headers["x-ratelimit-limit-tokens"] == "1000"
            assert r.headers["x-ratelimit-remaining-tokens"] == "0"
            assert r.headers["x-ratelimit-reset-tokens"].endswith("s")
    # The held streams were cancelled after a chunk or so: each settle gave back most of its
    # reservation, seen by both replicas long before the window (a minute) is over.
    for stack in replicas:

        def fits(s: Stack = stack) -> bool:
            return chat(s, key, max_tokens=max_tokens).status == 200

        eventually(fits)


# Parallel requests


def test_parallel_slots_are_exact_across_replicas(replicas: Replicas, accounts: Accounts) -> None:
    key_id, key = accounts.key(max_parallel=3)

    def exactly_three() -> list[tuple[int, Reply]]:
        replies = held_open(replicas, 12, key)
        assert len(admitted(replies)) <= 3  # never more, whatever is still being released
        return replies

    replies = exactly_three()
    assert len(admitted(replies)) == 3
    check_refusals(replies, 3, "parallel", f"Too many parallel requests on API key {key_id}: Limit 3, In progress 3.")
    for _, r in replies:
        if r.status != 200:
            assert r.headers["retry-after"] == "1"
            assert not any(h.startswith("x-ratelimit-") for h in r.headers)  # no per-minute limit here
    # The held streams were cancelled by their clients: every slot is released (a leak would
    # keep one taken until its TTL, ten minutes away), on both replicas.
    eventually(lambda: len(admitted(exactly_three())) == 3)
    # Streams that run to the end release theirs too.
    finished = spread(replicas, 3, lambda s, _: chat(s, key, model="slow-chunks-100", stream=True))
    assert all(r.status == 200 and r.events()[-1] == "[DONE]" for _, r in finished)
    eventually(lambda: len(admitted(exactly_three())) == 3)
