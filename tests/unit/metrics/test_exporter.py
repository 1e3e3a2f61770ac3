"""The exporter without Envoy: our metrics are served all the same, and say Envoy was not read."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from ghostllm.metrics.exporter import Exporter
from tests.support.procs import free_port


def test_a_scrape_without_envoy_still_answers(tmp_path: Path) -> None:
    exporter = Exporter(tmp_path, f"http://127.0.0.1:{free_port()}")

    async def go() -> bytes:
        app = web.Application()
        await exporter.start(app)
        try:
            return await exporter.scrape()
        finally:
            await exporter.close(app)

    text = asyncio.run(go()).decode()
    assert "# TYPE ghostllm_envoy_up gauge\nghostllm_envoy_up 0.0\n" in text
    assert "envoy_" not in text.replace("ghostllm_envoy_up", "")


def test_a_file_a_worker_is_still_making_is_read_next_time(tmp_path: Path) -> None:
    """A worker's metric file exists empty for a moment before it is sized and given its
    header; a scrape then must skip it, not answer 500 (prometheus-client's own collector
    fails on it with a struct.error)."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    made = MmapedDict(str(tmp_path / "counter_1.db"))  # type: ignore[no-untyped-call]
    key = mmap_key("ghostllm_retries", "ghostllm_retries_total", [], [], "retries")
    made.write_value(key, 3.0, 0.0)  # type: ignore[no-untyped-call]
    made.close()  # type: ignore[no-untyped-call]
    (tmp_path / "counter_2.db").touch()  # another worker's, being made
    exporter = Exporter(tmp_path)
    text = asyncio.run(exporter.scrape()).decode()
    assert "ghostllm_retries_total 3.0" in text
