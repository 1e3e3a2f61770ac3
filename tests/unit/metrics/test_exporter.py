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
