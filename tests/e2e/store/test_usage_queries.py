"""Reading the ledger back: totals over a period, grouped, on both backends, and the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from ghostllm.config import StoreConfig
from ghostllm.errors import InvalidRequest
from ghostllm.ledger import rows
from ghostllm.ledger.queries import parse_since, usage
from ghostllm.store import make_store
from tests.e2e.store.test_ledger import record
from tests.support.procs import ROOT


def seed(store_config: StoreConfig) -> None:
    async def go() -> None:
        async with make_store(store_config) as store:
            await store.migrate()
            old = time.time() - 40 * 86400
            batch = [rows.row(record(i, model="a" if i % 3 else "b")) for i in range(9)]
            batch.append(rows.row(record(99, model="a", started_at=old)))  # outside a 30-day window
            await store.execute_many(rows.INSERT, batch)

    asyncio.run(go())


def test_totals_and_groups(store_config: StoreConfig) -> None:
    seed(store_config)

    async def go() -> None:
        async with make_store(store_config) as store:
            since = parse_since("30d")
            (everything,) = await usage(store, since)
            assert (everything.requests, everything.total_tokens, everything.cost_nano_usd) == (9, 18, 9 * 750)
            by_model = {r.group: r.requests for r in await usage(store, since, "model")}
            assert by_model == {"a": 6, "b": 3}
            days = await usage(store, since, "day")
            assert [d.group for d in days] == [datetime.now(UTC).strftime("%Y-%m-%d")]
            assert sum(r.requests for r in await usage(store, parse_since("60d"))) == 10
            with pytest.raises(InvalidRequest):
                await usage(store, since, "model_id; DROP TABLE usage_logs")

    asyncio.run(go())


def test_since() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("30d", now) == now - timedelta(days=30)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(InvalidRequest):
        parse_since("yesterday", now)


def test_cli(tmp_path: Path) -> None:
    store = StoreConfig(url=f"sqlite:///{tmp_path / 'ghostllm.db'}")
    seed(store)
    config = tmp_path / "g.yaml"
    config.write_text(yaml.safe_dump({"server": {"data_dir": str(tmp_path)}, "store": {"url": store.url}}))
    out = subprocess.run(
        [sys.executable, "-m", "ghostllm", "usage", "--by", "model", "--json", "-c", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {r["group"]: r["requests"] for r in data["rows"]} == {"a": 6, "b": 3}
    assert data["rows"][0]["cost_usd"] == pytest.approx(6 * 750e-9)
    table = subprocess.run(
        [sys.executable, "-m", "ghostllm", "usage", "-c", str(config)], cwd=ROOT, capture_output=True, text=True
    )
    assert table.returncode == 0 and "usage since" in table.stdout
