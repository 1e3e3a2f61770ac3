"""Soak: sustained mixed load (non-streaming wrk + fast streams at once) with RSS sampled over time.

Memory must plateau after warm-up; a gateway that grows per request or per chunk shows
it here long before it runs out of memory in production.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

from bench import cpu
from bench.procs import Stack
from bench.report import Cell, section, table
from bench.streaming import run_streams
from bench.wrk import run_wrk

SAMPLES = 10
SOAK_STREAMS = 32


def soak(stack: Stack, seconds: float, tmp: Path) -> dict[str, Any]:
    pids = stack.gateway_pids
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        posts = pool.submit(run_wrk, stack.url, threads=1, connections=16, duration_s=seconds)
        streams = pool.submit(
            run_streams,
            "gateway",
            stack.url,
            "dev-echo",
            concurrency=SOAK_STREAMS,
            warmup_s=0.0,
            duration_s=seconds,
            watch={},
            log=tmp / "soak-streams.log",
        )
        started = time.monotonic()
        samples: list[tuple[float, dict[str, float]]] = []
        for i in range(1, SAMPLES + 1):
            time.sleep(max(0.0, started + seconds * i / SAMPLES - time.monotonic()))
            samples.append((time.monotonic() - started, cpu.all_rss_mb(pids)))
        wrk_result, stream_result = posts.result(), streams.result()
    names = list(pids)
    rows: list[list[Cell]] = [[f"{at:.0f}s", *(rss.get(n, float("nan")) for n in names)] for at, rss in samples]
    # The first sample is past warm-up (allocator pools, caches); growth after it is what leaks.
    growth = {n: samples[-1][1].get(n, 0.0) - samples[0][1].get(n, 0.0) for n in names}
    rows.append(["growth after 1st", *(growth[n] for n in names)])
    section(
        table(
            f"6. soak  ({seconds:g}s of wrk -c16 non-streaming plus {SOAK_STREAMS} fast streams at once; RSS MB; "
            f"{wrk_result.requests:,} requests, {stream_result.streams:,} streams, {stream_result.chunks:,} chunks, "
            f"errors {sum(wrk_result.errors.values()) + sum(stream_result.errors.values())})",
            ["at", *names],
            rows,
        )
    )
    return {
        "seconds": seconds,
        "requests": wrk_result.requests,
        "streams": stream_result.streams,
        "chunks": stream_result.chunks,
        "errors": {**wrk_result.errors, **stream_result.errors},
        "rss_mb": [{"at_s": at, **rss} for at, rss in samples],
        "growth_after_first_sample_mb": growth,
    }
