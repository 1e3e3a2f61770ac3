"""The usage ledger on both backends: rows written in batches, exact cost, a batch
written twice counted once, and nothing lost while the table cannot be written (the
rows wait in the spool and arrive when it can)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

from ghostllm.config import ModelConfig, StoreConfig
from ghostllm.gateway.cost import cost_nano_usd
from ghostllm.gateway.usage import UsageRecord
from ghostllm.ledger import rows
from ghostllm.ledger.spool import Spool
from ghostllm.ledger.writer import Ledger
from ghostllm.store import Store, make_store

MODEL = ModelConfig("m", "p", input_price_per_1m=0.15, output_price_per_1m=0.6)


def record(i: int, **fields: object) -> UsageRecord:
    base: dict[str, object] = {
        "request_id": f"req-{i}", "started_at": time.time(), "endpoint": "chat.completions", "model": "m",
        "provider": "p", "upstream_model": "m-up", "stream": bool(i % 2), "status": 200, "error_code": None,
        "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cached_tokens": None,
        "reasoning_tokens": None, "estimated": False, "latency_ms": 1.5, "ttft_ms": None, "client_ip": "10.0.0.1",
        "user_agent": "ua", "request_bytes": 10, "api_key_id": None, "user_id": None, "team_id": None,
        "cost_nano_usd": cost_nano_usd(MODEL, 1, 1), "record_id": uuid.uuid4().hex,
    }  # fmt: skip
    base.update(fields)
    return UsageRecord(**base)  # type: ignore[arg-type]


async def count(store: Store) -> tuple[int, int]:
    (n, cost), *_ = await store.fetch_all("SELECT COUNT(*), COALESCE(SUM(cost_nano_usd), 0) FROM usage_logs")
    return int(n), int(cost)


def run(store_config: StoreConfig, tmp_path: Path, body: object) -> None:
    async def go() -> None:
        async with make_store(store_config) as store:
            await store.migrate()
            await body(store, Ledger(store, tmp_path / "spool", batch_rows=50))  # type: ignore[operator]

    asyncio.run(go())


def test_rows_in_batches_with_exact_cost(store_config: StoreConfig, tmp_path: Path) -> None:
    async def body(store: Store, ledger: Ledger) -> None:
        for i in range(1234):
            ledger(record(i))
        await ledger.flush()
        # 0.15 + 0.6 $/1M for one token each way is 750 nano-USD; 1234 requests, no rounding anywhere.
        assert await count(store) == (1234, 1234 * 750)
        found = await store.fetch_all("SELECT request_id, status, cost, stream FROM usage_logs WHERE request_id = ?",
                                      ("req-7",))  # fmt: skip
        assert found[0][0] == "req-7" and found[0][1] == 200 and abs(float(found[0][2]) - 750e-9) < 1e-15

    run(store_config, tmp_path, body)


def test_a_batch_written_twice_counts_once(store_config: StoreConfig, tmp_path: Path) -> None:
    async def body(store: Store, ledger: Ledger) -> None:
        batch = [rows.row(record(i)) for i in range(10)]
        for _ in range(2):
            await store.execute_many(rows.INSERT, batch)
        assert (await count(store))[0] == 10

    run(store_config, tmp_path, body)


def test_nothing_is_lost_while_the_table_cannot_be_written(store_config: StoreConfig, tmp_path: Path) -> None:
    async def body(store: Store, ledger: Ledger) -> None:
        await store.execute("ALTER TABLE usage_logs RENAME TO usage_logs_away")
        for i in range(120):
            ledger(record(i))
        await ledger.flush()
        assert ledger.spooled_rows == 120 and list((tmp_path / "spool").glob("*.ndjson"))
        await store.execute("ALTER TABLE usage_logs_away RENAME TO usage_logs")
        ledger(record(999))
        await ledger.flush()  # the new row, then the spooled ones
        assert (await count(store))[0] == 121
        assert not list((tmp_path / "spool").iterdir())
        await ledger.flush()
        assert (await count(store))[0] == 121

    run(store_config, tmp_path, body)


def test_close_writes_what_is_buffered(store_config: StoreConfig, tmp_path: Path) -> None:
    async def body(store: Store, ledger: Ledger) -> None:
        ledger.start()
        for i in range(75):
            ledger(record(i))
        await ledger.close()
        assert (await count(store))[0] == 75

    run(store_config, tmp_path, body)


def test_a_dead_workers_claimed_spool_is_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = spool.write([rows.row(record(1))])
    dead = path.with_name(path.name + ".claimed-999999999")  # no such process
    os.rename(path, dead)
    claimed = list(spool.claim())
    assert len(claimed) == 1 and claimed[0].name.endswith(f".claimed-{os.getpid()}")
    assert spool.read(claimed[0])[0][1] == "req-1"
    assert list(spool.claim()) == []  # now ours, and we are alive
