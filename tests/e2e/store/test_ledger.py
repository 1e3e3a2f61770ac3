"""The usage ledger on both backends: rows written in batches, exact cost, a batch
written twice counted once, and nothing lost while the table cannot be written (the
rows wait in the spool and arrive when it can). A batch (Store.insert_rows, a COPY
through a staging table on PostgreSQL) stores exactly what one INSERT per row stored."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ghostllm.config import ModelConfig, StoreConfig
from ghostllm.gateway.cost import cost_nano_usd
from ghostllm.gateway.usage import UsageRecord
from ghostllm.ledger import rows
from ghostllm.ledger.spool import Spool
from ghostllm.ledger.writer import Ledger
from ghostllm.store import ConstraintViolation, Store, make_store
from tests.support.records import usage_record

MODEL = ModelConfig("m", "p", input_price_per_1m=0.15, output_price_per_1m=0.6)


def record(i: int, **fields: object) -> UsageRecord:
    return usage_record(**{
        "request_id": f"req-{i}", "upstream_model": "m-up", "stream": bool(i % 2), "client_ip": "10.0.0.1",
        "cost_nano_usd": cost_nano_usd(MODEL, 1, 1), **fields,
    })  # fmt: skip


async def count(store: Store) -> tuple[int, int]:
    (n, cost), *_ = await store.fetch_all("SELECT COUNT(*), COALESCE(SUM(cost_nano_usd), 0) FROM usage_logs")
    return int(n), int(cost)


async def insert(store: Store, batch: Sequence[Sequence[Any]]) -> None:
    await store.insert_rows(rows.TABLE, rows.COLUMNS, batch, conflict=rows.CONFLICT)


def with_(row: tuple[Any, ...], **values: object) -> tuple[Any, ...]:
    """`row` with some columns changed."""
    changed = list(row)
    for name, value in values.items():
        changed[rows.COLUMNS.index(name)] = value
    return tuple(changed)


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
            await insert(store, batch)
        assert (await count(store))[0] == 10

    run(store_config, tmp_path, body)


def test_a_repeated_id_is_skipped_within_a_batch_and_against_the_table(
    store_config: StoreConfig, tmp_path: Path
) -> None:
    async def body(store: Store, ledger: Ledger) -> None:
        there = [rows.row(record(i)) for i in range(5)]
        await insert(store, there)
        twin = rows.row(record(20))
        batch = [
            *(with_(rows.row(record(10 + i)), id=there[i][0]) for i in range(3)),  # ids already in the table
            twin,
            with_(rows.row(record(21)), id=twin[0]),  # the same id twice in the batch: the first counts
            rows.row(record(30)),
        ]
        await insert(store, batch)
        found = {r for (r,) in await store.fetch_all("SELECT request_id FROM usage_logs")}
        assert found == {"req-0", "req-1", "req-2", "req-3", "req-4", "req-20", "req-30"}

    run(store_config, tmp_path, body)


def test_a_batch_with_a_row_the_table_refuses_writes_nothing(store_config: StoreConfig, tmp_path: Path) -> None:
    async def body(store: Store, ledger: Ledger) -> None:
        good = [rows.row(record(i)) for i in range(3)]
        with pytest.raises(ConstraintViolation):
            await insert(store, [good[0], with_(good[1], model_id=None), good[2]])  # model_id is NOT NULL
        assert (await count(store))[0] == 0
        await insert(store, good)  # the next batch goes in (on PostgreSQL: the same connection, its stage)
        assert (await count(store))[0] == 3

    run(store_config, tmp_path, body)


# Text COPY's own escapes, SQL quotes, non-ASCII; NUL is replaced by rows.text.
AWKWARD = ["tab\there", "new\nline\r\n", "back\\slash \\N \\t", "\\N", "", " ", "it's \"quoted\"",
           "h\u00e9llo \u4e2d\u6587 \U0001f642", "nul\x00here", "comma,separated;|pipe", "\\."]  # fmt: skip


def awkward_records() -> list[UsageRecord]:
    """Records with every kind of value: awkward text, NULLs, extreme numbers, both booleans."""
    found = []
    for i, text in enumerate(AWKWARD):
        found.append(
            record(
                i,
                request_id=f"{text}{i}",
                started_at=1_767_225_599.9999996 if i == 0 else 1_767_225_600.0005 + i * 1.2345678,
                model=text,
                provider=text or None,
                upstream_model=text if i % 2 else None,
                stream=bool(i % 2),
                estimated=not i % 3,
                status=[200, 0, 499, 2**31 - 1][i % 4],
                error_code=text if i % 2 else None,
                cached_tokens=None if i % 2 else i,
                reasoning_tokens=i if i % 3 else None,
                cost_nano_usd=[0, 1, 750, 123_456_789_012, 999_999_999_999_999][i % 5],
                latency_ms=[0.1 + 0.2, 1e-300, 1e300, 0.0, 12.5][i % 5],
                ttft_ms=None if i % 2 else 1 / 3,
                client_ip=text,
                user_agent=text * 3,
                api_key_id=None if i % 3 == 0 else str(uuid.uuid4()) if i % 3 == 1 else uuid.uuid4().hex,
                user_id=str(uuid.uuid4()) if i % 2 else None,
                team_id=uuid.uuid4().hex if i % 4 == 1 else None,
                deployment=f"p/{text}" if i % 2 else None,
                attempts=None if i % 3 == 0 else i,
                deployments_tried=(text, "b/c") if i % 2 else (),
            )
        )
    return found


def test_a_batch_stores_what_one_insert_per_row_stored(store_config: StoreConfig, tmp_path: Path) -> None:
    """Every column but the id, of the same records written both ways, compares equal (created_at
    included: the same instant), and text comes back as it was given."""
    stored = ", ".join(c for c in rows.COLUMNS if c != "id")

    async def body(store: Store, ledger: Ledger) -> None:
        records = awkward_records()
        await store.execute_many(rows.INSERT, [rows.row(r) for r in records])
        before = await store.fetch_all(f"SELECT {stored} FROM usage_logs ORDER BY request_id")
        await store.execute("DELETE FROM usage_logs")
        batch = [with_(rows.row(r), id=uuid.uuid4().hex) for r in records]
        await insert(store, batch)
        after = await store.fetch_all(f"SELECT {stored} FROM usage_logs ORDER BY request_id")
        assert after == before and len(after) == len(AWKWARD)
        texts = await store.fetch_all("SELECT request_id, model_id, user_agent, created_at FROM usage_logs")
        for request_id, model, agent, created_at in texts:
            [given] = [r for r in batch if r[1] == request_id]
            assert (model, agent) == (given[7], given[24]) and "\x00" not in model
            if isinstance(created_at, datetime):  # PostgreSQL: the instant the stamp names
                assert created_at == datetime.fromisoformat(given[2])
            else:
                assert created_at == given[2]
        assert {m for (_, m, _, _) in texts} == {rows.text(t) for t in AWKWARD}

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


# PostgreSQL's staging table

STAGE = "pg_temp.ghostllm_stage_usage_logs"  # PostgresStore's, for the connection


def run_pg(postgres_url: str, body: object) -> None:
    """`body(store)` on a pool of one connection: every call below uses the same session."""

    async def go() -> None:
        async with make_store(StoreConfig(url=postgres_url, pool_min_size=1, pool_max_size=1)) as store:
            await store.migrate()
            await body(store)  # type: ignore[operator]

    asyncio.run(go())


async def stage_oid(store: Store) -> int | None:
    (oid,), *_ = await store.fetch_all("SELECT to_regclass(?)::oid", (STAGE,))
    return None if oid is None else int(oid)


def test_the_stage_is_made_once_per_connection_and_again_when_gone(postgres_url: str) -> None:
    async def body(store: Store) -> None:
        await insert(store, [rows.row(record(i)) for i in range(150)])
        made = await stage_oid(store)
        assert made is not None
        await insert(store, [rows.row(record(i)) for i in range(150)])
        assert await stage_oid(store) == made  # reused, not made again
        assert await store.fetch_all(f"SELECT COUNT(*) FROM {STAGE}") == [(0,)]  # emptied by each commit
        await store.execute(f"DROP TABLE {STAGE}")  # behind the store's back
        await insert(store, [rows.row(record(i)) for i in range(3)])
        assert await stage_oid(store) not in (None, made)
        # A stage made before a migration added a column: made again with it.
        await store.execute(f"ALTER TABLE {STAGE} DROP COLUMN deployments_tried")
        await insert(store, [rows.row(record(7, deployments_tried=("a/b", "c/d")))])
        tried = await store.fetch_all("SELECT deployments_tried FROM usage_logs WHERE deployments_tried IS NOT NULL")
        assert tried == [("a/b,c/d",)]
        assert (await count(store))[0] == 304

    run_pg(postgres_url, body)


@pytest.mark.parametrize(
    "bad", [{"api_key_id": "not-a-uuid"}, {"status": 2**40}, {"created_at": "yesterday-ish"}, {"request_id": None}]
)
def test_a_refused_batch_raises_as_one_insert_per_row_did(postgres_url: str, bad: dict[str, object]) -> None:
    """The same error class either way (the ledger spools and isolates on it); the first batch on
    a fresh connection included (the stage it made is rolled back with it, and made again)."""

    async def body(store: Store) -> None:
        batch = [rows.row(record(0)), with_(rows.row(record(1)), **bad), rows.row(record(2))]
        with pytest.raises((psycopg.Error, ConstraintViolation)) as new:
            await insert(store, batch)
        with pytest.raises((psycopg.Error, ConstraintViolation)) as old:
            await store.execute_many(rows.INSERT, batch)
        assert new.type is old.type
        assert (await count(store))[0] == 0
        await insert(store, [batch[0], batch[2]])
        assert (await count(store))[0] == 2

    run_pg(postgres_url, body)
