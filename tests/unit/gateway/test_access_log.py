"""ghostllm.gateway.access_log: one JSON line per record, written once per loop turn, whole lines per write."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from unittest import mock

from ghostllm.gateway.access_log import PIPE_BUF, AccessLog
from ghostllm.gateway.usage import UsageRecord


def record(i: int, model: str = "m") -> UsageRecord:
    return UsageRecord(
        request_id=f"r-{i}", started_at=1.0, endpoint="chat.completions", model=model, provider="p",
        upstream_model="u", stream=False, status=200, error_code=None, prompt_tokens=1, completion_tokens=2,
        total_tokens=3, cached_tokens=None, reasoning_tokens=None, estimated=False, latency_ms=1.5, ttft_ms=None,
        client_ip="127.0.0.1", user_agent="ua", request_bytes=10,
    )  # fmt: skip


def test_lines_batched_per_loop_turn_in_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    log = AccessLog(str(path))
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: memoryview | bytes) -> int:
        writes.append(len(data))
        assert bytes(data).endswith(b"\n")  # only whole lines
        return real_write(fd, data)

    async def burst() -> None:
        for i in range(200):
            log(record(i, model="x" * 100))
        assert not path.read_bytes()  # nothing written yet: within the same loop turn
        await asyncio.sleep(0)

    with mock.patch("os.write", counting_write):
        asyncio.run(burst())
    lines = path.read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [f"r-{i}" for i in range(200)]
    assert 1 < len(writes) < 200 and max(writes) <= PIPE_BUF
    log.close()


def test_outside_a_loop_it_writes_at_once(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    log = AccessLog(str(path))
    log(record(1))
    assert json.loads(path.read_text())["status"] == 200
    log.close()
