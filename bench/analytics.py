"""Analytics: the usage report (GET /admin/usage) over a ledger of a million rows.

Seeds a fresh PostgreSQL schema (migrated like `ghostllm migrate`) with usage_logs rows
made by one INSERT ... SELECT over generate_series, spread like real traffic: 60 days,
1,000 users with 3 keys each (3,000 keys, a few busy, most quiet), 50 teams, 10 models
(a few popular) on 4 providers, some refusals and rows without a key (login tokens). Then
times the report for the last 30 days, unfiltered and with each filter (the busiest user,
key, team, model and provider, so the worst of each), twice: calling the query function
(ledger/queries.py) in this process, and through the real REST endpoint (Envoy, a
worker, the store).

`python -m bench --analytics`, or on its own: `python -m bench.analytics [--rows N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import section, table

PG_URL = os.environ.get("GHOSTLLM_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROWS = 1_000_000
DAYS = 60
USERS, KEYS_PER_USER, TEAMS, MODELS, PROVIDERS = 1000, 3, 50, 10, 4
RUNS = 5
PERIOD_DAYS = 30


# Key k belongs to user k % USERS, who is in team user % TEAMS; model m is served by provider
# m % PROVIDERS. Skewed draws (power of a uniform) make key 0 and model 0 the busiest, and so
# user 0, team 0 and provider 0: the filters below time those, the worst case of each.
def _seed_sql(rows: int) -> str:
    return f"""
INSERT INTO usage_logs (
    id, request_id, created_at, user_id, api_key_id, team_id, endpoint, model_id, provider_id,
    upstream_model, stream, status, error_code, prompt_tokens, completion_tokens, total_tokens,
    estimated, cost_nano_usd, cost, latency_ms, ttft_ms, ip_address, user_agent)
SELECT
    md5('row' || g)::uuid, md5('request' || g), now() - random() * interval '{DAYS} days',
    md5('user' || (k % {USERS}))::uuid,
    CASE WHEN g % 20 = 7 THEN NULL ELSE md5('key' || k)::uuid END,
    md5('team' || (k % {USERS} % {TEAMS}))::uuid,
    'chat.completions', 'model-' || m, 'provider-' || (m % {PROVIDERS}), 'upstream-' || m,
    g % 3 = 0, CASE WHEN refused THEN 429 ELSE 200 END,
    CASE WHEN refused THEN 'rate_limit_exceeded' END,
    p, c, p + c, false,
    p * (m + 1) * 150 + c * (m + 1) * 600, (p * (m + 1) * 150 + c * (m + 1) * 600) / 1e9,
    150 + random() * 3000, CASE WHEN g % 3 = 0 THEN 50 + random() * 400 END,
    '10.1.' || (k % 250) || '.' || (k % 7), 'OpenAI/Python 1.51.0'
FROM (
    SELECT g, refused,
           floor({USERS * KEYS_PER_USER} * power(random(), 2))::int AS k,
           floor({MODELS} * power(random(), 1.5))::int AS m,
           CASE WHEN refused THEN 0 ELSE 20 + floor(random() * 2500)::int END AS p,
           CASE WHEN refused THEN 0 ELSE 5 + floor(random() * 900)::int END AS c
    FROM (SELECT g, random() < 0.03 AS refused FROM generate_series(1, {int(rows)}) AS g) AS raw
) AS drawn
"""


def _md5_uuid(text: str) -> str:
    import hashlib

    return str(uuid.UUID(hashlib.md5(text.encode()).hexdigest()))


FILTERS: list[tuple[str, dict[str, str]]] = [
    ("none", {}),
    ("user_id", {"user_id": _md5_uuid("user0")}),
    ("key_id", {"key_id": _md5_uuid("key0")}),
    ("team_id", {"team_id": _md5_uuid("team0")}),
    ("model", {"model": "model-0"}),
    ("provider", {"provider": "provider-0"}),
]


@contextlib.contextmanager
def _schema() -> Iterator[str]:
    """A store URL on a fresh schema, dropped afterwards (nothing else is touched)."""
    import psycopg

    schema = f"ghostllm_bench_analytics_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')  # a generated identifier
    except psycopg.Error as exc:
        # The bench reports a part that fails this way and runs the others.
        raise RuntimeError(f"analytics needs PostgreSQL at {PG_URL} (GHOSTLLM_BENCH_PG_URL): {exc}") from exc
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def seed(url: str, rows: int) -> dict[str, float]:
    """Migrate, then insert `rows` rows in one statement. The indexes are dropped for the
    insert and built again after it (from their own definitions), which is several times
    faster than maintaining seven indexes row by row."""
    import psycopg

    from ghostllm.config import StoreConfig
    from ghostllm.store import make_store

    async def migrate() -> None:
        async with make_store(StoreConfig(url=url, pool_min_size=0)) as store:
            await store.migrate()

    started = time.monotonic()
    asyncio.run(migrate())
    with psycopg.connect(url, autocommit=True) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename = 'usage_logs' AND indexname <> 'usage_logs_pkey'"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')  # names from the catalogue
        conn.execute("ALTER TABLE usage_logs DROP CONSTRAINT usage_logs_pkey")
        conn.execute("SELECT setseed(0.42)")  # the same rows every run
        t = time.monotonic()
        conn.execute(_seed_sql(rows))
        inserted = time.monotonic() - t
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("ALTER TABLE usage_logs ADD PRIMARY KEY (id)")
        for _, definition in indexes:
            conn.execute(definition)
        # What autovacuum would do soon after: statistics, and the visibility map that lets
        # the report's index-only scans skip the table.
        conn.execute("VACUUM ANALYZE usage_logs")
        # Flush the seed's dirty pages now rather than under the first timed reports.
        with contextlib.suppress(psycopg.Error):  # needs the CHECKPOINT privilege (superuser, PG 15: pg_checkpoint)
            conn.execute("CHECKPOINT")
        size = conn.execute("SELECT pg_total_relation_size('usage_logs') / 1e6").fetchone()
    return {
        "seed_s": time.monotonic() - started,
        "insert_s": inserted,
        "table_and_indexes_mb": float(size[0]) if size else 0.0,
    }


def _stats(samples: list[float]) -> dict[str, float]:
    return {"min_ms": min(samples), "median_ms": statistics.median(samples)}


def time_queries(url: str, end: datetime, runs: int = RUNS) -> dict[str, dict[str, Any]]:
    """Milliseconds per report (min and median of `runs`, after one unmeasured run)."""
    from ghostllm.config import StoreConfig
    from ghostllm.ledger.queries import parse_filter, report
    from ghostllm.store import make_store

    start = end - timedelta(days=PERIOD_DAYS)

    async def go() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        async with make_store(StoreConfig(url=url, pool_min_size=1, pool_max_size=2)) as store:
            for name, params in FILTERS:
                f = parse_filter(
                    start_date=start.isoformat(),
                    end_date=end.isoformat(),
                    user_id=params.get("user_id"),
                    key_id=params.get("key_id"),
                    team_id=params.get("team_id"),
                    model=params.get("model"),
                    provider=params.get("provider"),
                )
                found = await report(store, f)
                samples = []
                for _ in range(runs):
                    t = time.perf_counter()
                    await report(store, f)
                    samples.append((time.perf_counter() - t) * 1000)
                out[name] = {**_stats(samples), "requests": found.summary.requests}
        return out

    return asyncio.run(go())


def time_rest(base_url: str, key: str, end: datetime, runs: int = RUNS) -> dict[str, dict[str, Any]]:
    """The same reports through GET /admin/usage: Envoy, transcoding, a worker, the store, JSON."""
    import httpx

    start = end - timedelta(days=PERIOD_DAYS)
    out: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
        for name, params in FILTERS:
            query = urllib.parse.urlencode({"start_date": start.isoformat(), "end_date": end.isoformat(), **params})
            first = client.get(f"/admin/usage?{query}")
            if first.status_code != 200:
                raise RuntimeError(f"GET /admin/usage ({name}) answered {first.status_code}: {first.text[:300]}")
            samples = []
            for _ in range(runs):
                t = time.perf_counter()
                client.get(f"/admin/usage?{query}").raise_for_status()
                samples.append((time.perf_counter() - t) * 1000)
            out[name] = {
                **_stats(samples),
                "requests": first.json()["summary"]["requests"],
                "bytes": len(first.content),
            }
    return out


def analytics(tmp: Path, upstream_port: int, rows: int = ROWS, rest: bool = True) -> dict[str, Any]:
    """Seed, time, print; the schema and the stack are gone afterwards."""
    from tests.support.auth import ADMIN_KEY
    from tests.support.procs import stack_config, start_stack, stop

    started = time.monotonic()
    with _schema() as url:
        seeded = seed(url, rows)
        end = datetime.now(UTC)
        direct = time_queries(url, end)
        through: dict[str, dict[str, Any]] = {}
        if rest:
            config = stack_config(upstream_port, tmp / "analytics", workers=1, log_level="WARNING", access_log="off")
            config["store"] = {"url": url}
            stack = start_stack(config, upstream_port, tmp / "analytics")
            try:
                through = time_rest(f"http://127.0.0.1:{stack.rest_port}", ADMIN_KEY, end)
            finally:
                stop(stack.proc)
    total = time.monotonic() - started
    section(
        table(
            f"6. analytics  ({rows:,} usage_logs rows over {DAYS} days in PostgreSQL, seeded in "
            f"{seeded['seed_s']:.1f} s; one report for the last {PERIOD_DAYS} days: every grouping; "
            f"ms, min / median of {RUNS})",
            ["filter", "rows in report", "query min", "query median", "REST min", "REST median", "REST bytes"],
            [
                [
                    name,
                    direct[name]["requests"],
                    direct[name]["min_ms"],
                    direct[name]["median_ms"],
                    through.get(name, {}).get("min_ms"),
                    through.get(name, {}).get("median_ms"),
                    through.get(name, {}).get("bytes"),
                ]
                for name, _ in FILTERS
            ],
            digits=0,
        )
    )
    print(f"   (the whole part: {total:.0f} s; table and indexes {seeded['table_and_indexes_mb']:.0f} MB)")
    return {"rows": rows, **seeded, "query": direct, "rest": through, "total_s": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.analytics", description=__doc__)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--no-rest", action="store_true", help="time the query function only")
    args = parser.parse_args(argv)
    from tests.support.procs import dev_upstream

    with tempfile.TemporaryDirectory(prefix="ghostllm-analytics-") as tmp, dev_upstream(Path(tmp)) as upstream:
        analytics(Path(tmp), upstream.port, args.rows, rest=not args.no_rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
