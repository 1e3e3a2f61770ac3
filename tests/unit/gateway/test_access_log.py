"""ghostllm.gateway.access_log: one JSON line per record, written once per loop turn, whole lines per write."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from unittest import mock

from ghostllm.gateway.access_log import PIPE_BUF, AccessLog
from ghostllm.gateway.usage import UsageRecord
from tests.support.records import usage_record


def record(i: int, model: str = "m") -> UsageRecord:
    return usage_record(request_id=f"r-{i}", model=model, upstream_model="u", completion_tokens=2)


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
