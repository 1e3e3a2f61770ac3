"""Part 7: governance on against the spine, in the same run. Two stacks on the same
upstream, both up at once: the spine (no authentication, limits, budgets or ledger) and
the realistic configuration (a gk- key, rate limits and budgets at key, user and team
level checked in Redis, the ledger on PostgreSQL). They are measured in alternation,
ROUNDS times, and the medians compared: on this shared machine one run differs from the
next by more than the 0.1 ms being measured. Gateway CPU per request at a fixed rate (CPU
per request depends on load, so only equal rates compare), throughput at saturation, and
what each request costs the Redis and PostgreSQL servers themselves: on a machine whose
cores they share with the gateway, that alone bounds the throughput ratio (`ceiling`)."""

from __future__ import annotations

import os
import statistics
import uuid
from pathlib import Path
from typing import Any

from bench import auth
from bench.procs import start_stack
from bench.report import section, table
from bench.wrk import WrkResult, run_wrk
from tests.support.postgres import schema
from tests.support.procs import Upstream, server_config

RATE = 300.0
CONNECTIONS = 8
ROUNDS = 3
REDIS_URL = os.environ.get("GHOSTLLM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("GHOSTLLM_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Limits and budgets far above what the run can reach: every request is checked, none refused.
LIMITS: dict[str, Any] = {"rate_limit": 10**9, "tpm_limit": 2 * 10**9, "max_parallel": 10**6}
BUDGET = 1e6


def _config(tmp: Path, workers: int, fast: Upstream, **sections: Any) -> dict[str, Any]:
    return {
        "server": server_config(tmp, workers, shutdown_grace_s=3, log_level="WARNING"),
        "providers": [{"id": "fast", "type": "openai", "base_url": f"{fast.url}/v1"}],
        "models": [
            {
                "id": "dev-echo",
                "provider": "fast",
                "capabilities": ["chat", "streaming"],
                "input_price_per_1m": 2.5,
                "output_price_per_1m": 10.0,
            }
        ],
        **sections,
    }


def _provision_full(config: dict[str, Any]) -> None:
    """A key whose own, user's and team's limits and budgets all apply."""
    from tests.support.accounts import Accounts, stack_store

    accounts = Accounts(stack_store(config))
    auth.provision(config)  # migrates; its key is replaced below
    team = accounts.team(budget_limit=BUDGET, budget_period="monthly", **LIMITS)
    user = accounts.user(budget_limit=BUDGET, budget_period="daily", team=team)
    _, key = accounts.key(user, budget_limit=BUDGET, **LIMITS)
    os.environ[auth.KEY_ENV] = key


def _server_pids() -> dict[str, int]:
    """The Redis and PostgreSQL servers' processes on this machine (the bench's are local)."""
    import psutil

    out: dict[str, int] = {}
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        if name.startswith("redis-server"):
            out[f"redis:{proc.pid}"] = proc.pid
        elif name.startswith("postgres"):
            out[f"postgresql:{proc.pid}"] = proc.pid
    return out


def _redis_calls() -> int:
    import redis

    stats = redis.Redis.from_url(REDIS_URL).info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_evalsha"))


def _pg_commits() -> int:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def _usage_rows(config: dict[str, Any]) -> int:
    import psycopg

    with psycopg.connect(config["store"]["url"], autocommit=True) as conn:
        row = conn.execute("SELECT COUNT(*) FROM usage_logs").fetchone()
    return int(row[0]) if row else 0


def redis_limits_cost(requests: int = 2000) -> dict[int, float]:
    """CPU per request (us) of the rate limits and budgets on Redis, in this process on uvloop:
    three levels with every limit and a budget, admitted and settled as the Limits stage does,
    by 1 and by 8 concurrent clients (whose checks share round trips); and, under key 0, the
    floor: one bare round trip per request (a script that returns 1), by 1 client."""
    import asyncio
    import time

    import uvloop

    from ghostllm.auth.principal import ALL, Budget, Principal, Via
    from ghostllm.config import LimitsConfig
    from ghostllm.limits.limiter import Limiter
    from ghostllm.limits.redis_backend import RedisBackend

    big = 10**9
    who = Principal(Via.KEY, "bench-user", "bench-team", "bench-key", None, ALL, rate_limit=big, tpm_limit=big,
                    max_parallel=big, team_rate_limit=big, team_tpm_limit=big, team_max_parallel=big,
                    key_budget=Budget.of(BUDGET, "monthly"), user_budget=Budget.of(BUDGET, "daily"),
                    team_budget=Budget.of(BUDGET, "monthly"))  # fmt: skip

    async def spent(kind: str, id_: str, since: object) -> int:
        return 0

    async def run(clients: int) -> float:
        prefix = f"ghostllm-bench-{uuid.uuid4().hex[:8]}:"
        limiter = Limiter(LimitsConfig(), RedisBackend(REDIS_URL, prefix, 0.5, 60_000), spent)
        await limiter.start()

        async def client(c: int, n: int, limited: bool = True) -> None:
            for i in range(n):
                request = (f"{c}-{i}", 0.0)
                if limited:
                    await limiter.admit(who, request, lambda: 100)
                await asyncio.sleep(0.001)  # the upstream's turn
                if limited:
                    limiter.settle(request, 120, 5000)

        async def cpu(limited: bool) -> float:
            t0 = time.process_time()
            await asyncio.gather(*(client(c, requests // clients, limited) for c in range(clients)))
            return time.process_time() - t0

        try:
            await asyncio.gather(*(client(c, 50) for c in range(clients)))  # counters seeded, connection warm
            # Less what the clients' own loop costs without limits.
            return max(0.0, await cpu(True) - await cpu(False)) / requests * 1e6
        finally:
            await limiter.close()
            import redis

            r = redis.Redis.from_url(REDIS_URL)
            for key in r.scan_iter(f"{prefix}*"):
                r.delete(key)

    async def floor() -> float:
        from ghostllm.limits.resp import Endpoint, RespConnection

        conn = await RespConnection.open(Endpoint.of_url(REDIS_URL), 1.0, 2.0)
        sha = (await conn.call(["SCRIPT", "LOAD", "return 1"])).decode()

        async def cpu(bare: bool) -> float:
            t0 = time.process_time()
            for _ in range(requests):
                if bare:
                    await conn.call(["EVALSHA", sha, 0])
                await asyncio.sleep(0.001)
            return time.process_time() - t0

        try:
            await cpu(True)
            return max(0.0, await cpu(True) - await cpu(False)) / requests * 1e6
        finally:
            conn.close()

    out = {clients: uvloop.run(run(clients)) for clients in (1, 8)}
    out[0] = uvloop.run(floor())
    return out


def _measure(stack_url: str, names: list[str], watch: dict[str, int], d_s: float, warm_s: float) -> dict[str, Any]:
    run_wrk(stack_url, threads=1, connections=CONNECTIONS, duration_s=warm_s, rate=RATE)
    paced: WrkResult = run_wrk(stack_url, threads=1, connections=CONNECTIONS, duration_s=d_s, watch=watch, rate=RATE)
    run_wrk(stack_url, threads=2, connections=32, duration_s=warm_s)
    full: WrkResult = run_wrk(stack_url, threads=2, connections=32, duration_s=d_s, watch=watch)
    cores = os.cpu_count() or 1
    return {
        "cpu_per_request_ms": paced.cpu_per_request_ms(names),
        "paced_requests": paced.requests,
        "rps": full.rps,
        "saturated_cpu_per_request_ms": full.cpu_per_request_ms(names),
        # At saturation, what the servers spend per request, and the whole machine (wrk and the upstream too).
        "redis_cpu_per_request_ms": full.cpu_per_request_ms([k for k in watch if k.startswith("redis:")]),
        "postgresql_cpu_per_request_ms": full.cpu_per_request_ms([k for k in watch if k.startswith("postgresql:")]),
        "machine_cpu_per_request_ms": full.machine_busy_pct / 100 * cores * full.duration_s * 1000 / full.requests
        if full.requests
        else float("nan"),
        "p50_ms": paced.p50_ms,
        "errors": paced.error_count + full.error_count,
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def governance(
    tmp: Path, workers: int, fast: Upstream, duration_s: float, warmup_s: float, rounds: int = ROUNDS
) -> dict[str, Any]:
    tmp = tmp / "governance"
    saved = os.environ.get(auth.KEY_ENV)
    out: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {"spine": [], "full": []}
    try:
        with schema(PG_URL) as url:
            prefix = f"ghostllm-bench-{uuid.uuid4().hex[:8]}:"
            full_cfg = _config(tmp / "full", workers, fast, store={"url": url},
                               redis={"url": REDIS_URL, "prefix": prefix})  # fmt: skip
            _provision_full(full_cfg)  # the key every client sends: the spine ignores it
            # The spine: nothing governs.
            spine_cfg = _config(tmp / "spine", workers, fast, auth={"enabled": False}, ledger={"enabled": False})
            stacks = {"spine": start_stack(spine_cfg, tmp / "spine")}
            try:
                stacks["full"] = start_stack(full_cfg, tmp / "full")
                servers = _server_pids()
                calls, commits, rows = _redis_calls(), _pg_commits(), _usage_rows(full_cfg)
                for _ in range(rounds):
                    for name in ("spine", "full"):
                        stack = stacks[name]
                        watch = {**stack.gateway_pids, **servers}
                        runs[name].append(_measure(stack.url, list(stack.gateway_pids), watch, duration_s, warmup_s))
            finally:
                # The last batch is written within the flush interval: counted after the stack stops.
                for stack in stacks.values():
                    stack.stop()
            sent = _usage_rows(full_cfg) - rows
            for k, v in (
                ("redis_calls_per_request", _redis_calls() - calls),
                ("pg_commits_per_request", _pg_commits() - commits),
            ):
                out[k] = v / sent if sent else float("nan")
            out["ledger_rows"] = sent
    finally:
        if saved is None:
            os.environ.pop(auth.KEY_ENV, None)
        else:
            os.environ[auth.KEY_ENV] = saved
    out["rounds"] = runs
    out["redis_limits_us"] = redis_limits_cost()
    spine, full = out["spine"], out["full"] = _median(runs["spine"]), _median(runs["full"])
    out["added_cpu_per_request_ms"] = full["cpu_per_request_ms"] - spine["cpu_per_request_ms"]
    out["throughput_ratio"] = full["rps"] / spine["rps"] if spine["rps"] else float("nan")
    servers_ms = full["redis_cpu_per_request_ms"] + full["postgresql_cpu_per_request_ms"]
    # The throughput ratio a gateway adding no CPU at all would get, Redis and PostgreSQL
    # taking their share of the same cores: the machine is saturated either way.
    out["ceiling"] = spine["machine_cpu_per_request_ms"] / (spine["machine_cpu_per_request_ms"] + servers_ms)
    rows_: list[list[Any]] = []
    for i in range(rounds):
        for name, label in (("spine", "spine"), ("full", "full governance")):
            r = runs[name][i]
            rows_.append([f"{label} #{i + 1}", r["cpu_per_request_ms"], r["saturated_cpu_per_request_ms"], r["rps"],
                          r["p50_ms"], r["errors"]])  # fmt: skip
    for name, label in (("spine", "spine, median"), ("full", "full governance, median")):
        r = out[name]
        rows_.append(
            [label, r["cpu_per_request_ms"], r["saturated_cpu_per_request_ms"], r["rps"], r["p50_ms"], r["errors"]]
        )
    section(
        table(
            f"7. governance  (the spine vs auth + rate limits and budgets at key, user and team level in Redis + "
            f"the ledger on PostgreSQL, both stacks up, measured in turn {rounds}x; CPU per request at "
            f"{RATE:.0f} req/s with wrk -c{CONNECTIONS}, then throughput at saturation, wrk -c32; "
            f"{duration_s:.0f}s each)",
            ["configuration", "CPU/req ms", "CPU/req ms saturated", "req/s saturated", "p50 ms paced", "errors"],
            rows_,
        )
    )
    limits_us = out["redis_limits_us"]
    section(
        table(
            "   full configuration, per request (medians)",
            ["measure", "value"],
            [
                ["added gateway CPU (ms, target <= 0.1)", out["added_cpu_per_request_ms"]],
                ["throughput vs spine (target >= 0.90)", out["throughput_ratio"]],
                [
                    "  ceiling: the ratio with a gateway adding nothing (Redis, PostgreSQL share the cores)",
                    out["ceiling"],
                ],
                ["Redis server CPU at saturation (ms)", full["redis_cpu_per_request_ms"]],
                ["PostgreSQL server CPU at saturation (ms)", full["postgresql_cpu_per_request_ms"]],
                [
                    "machine CPU at saturation (ms): spine / full",
                    f"{spine['machine_cpu_per_request_ms']:.3f} / {full['machine_cpu_per_request_ms']:.3f}",
                ],
                ["Redis script calls (admit + settle, pipelined)", out["redis_calls_per_request"]],
                ["PostgreSQL commits (ledger batches; every source on the db)", out["pg_commits_per_request"]],
                ["usage rows written", out["ledger_rows"]],
                ["rate limits + budgets on Redis, in-process, 1 client (us CPU)", limits_us[1]],
                ["the same, 8 concurrent clients (round trips shared)", limits_us[8]],
                ["  floor: one bare Redis round trip, 1 client (us CPU)", limits_us[0]],
            ],
        )
    )
    return out
