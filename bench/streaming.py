"""Streaming load: N concurrent SSE clients, each looping request -> first content -> [DONE].

The client runs in its own process (``python -m bench.streaming``) so it shares no GIL with
anything measured. It prints ``START`` when the measured window opens and ``STOP`` when it
closes (the parent reads CPU times at those two moments), then lets in-flight streams finish
and prints one ``RESULT {json}`` line. Only streams started inside the window count for TTFT,
and only events received inside the window count as chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from bench import auth, cpu
from bench.procs import CHAT_PATH, ROOT
from tests.support.procs import stop

# The dev upstream echoes the last user message after a 9-word greeting, one word per chunk:
# this prompt makes each answer ~40 content chunks, a short but realistic completion.
PROMPT = " ".join(f"word{i}" for i in range(1, 32))


def stream_body(model: str) -> bytes:
    return json.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}).encode()


# ---------------------------------------------------------------- client (child process)


@dataclass
class _Window:
    start: float = float("inf")
    stop: float = float("inf")

    def inside(self, t: float) -> bool:
        return self.start <= t < self.stop


@dataclass
class _Tally:
    ttft_ms: list[float] = field(default_factory=list)
    stream_ms: list[float] = field(default_factory=list)
    chunks: int = 0  # data events (not [DONE]) received inside the window
    content_chunks: int = 0
    streams_completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def _has_content(payload: bytes) -> bool:
    try:
        obj = json.loads(payload)
    except ValueError:
        return False
    for choice in obj.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content"):
            return True
    return False


async def _client_loop(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    window: _Window,
    tally: _Tally,
    done: asyncio.Event,
    start_after: float,
) -> None:
    headers = {"content-type": "application/json", "accept": "text/event-stream", **auth.headers()}
    # Streams of equal length started together would stay in lock-step and arrive
    # as one burst every stream; real clients come and go at independent times.
    await asyncio.sleep(start_after)
    while not done.is_set():
        t0 = time.perf_counter()
        counted = window.inside(t0)
        ttft: float | None = None
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                if resp.status != 200:
                    await resp.read()
                    tally.error(f"http_{resp.status}")
                    await asyncio.sleep(0.05)
                    continue
                finished = False
                async for raw in resp.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        finished = True
                        break
                    now = time.perf_counter()
                    if window.inside(now):
                        tally.chunks += 1
                    if _has_content(payload):
                        if window.inside(now):
                            tally.content_chunks += 1
                        if ttft is None:
                            ttft = now - t0
                if not finished:
                    tally.error("no_done")
                    continue
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            tally.error(type(exc).__name__)
            await asyncio.sleep(0.05)
            continue
        if counted:
            tally.streams_completed += 1
            tally.stream_ms.append(1000 * (time.perf_counter() - t0))
            if ttft is not None:
                tally.ttft_ms.append(1000 * ttft)


async def _client(url: str, model: str, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
    body = stream_body(model)
    window = _Window()
    tally = _Tally()
    done = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [
            asyncio.create_task(_client_loop(session, url, body, window, tally, done, warmup * i / concurrency))
            for i in range(concurrency)
        ]
        try:
            await asyncio.sleep(warmup)
            window.start = time.perf_counter()
            print("START", flush=True)
            await asyncio.sleep(duration)
            window.stop = time.perf_counter()
            print("STOP", flush=True)
            done.set()
            # In-flight streams finish on their own (no disconnect storm at the end).
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "window_s": window.stop - window.start,
        "ttft_ms": tally.ttft_ms,
        "stream_ms": tally.stream_ms,
        "chunks": tally.chunks,
        "content_chunks": tally.content_chunks,
        "streams_completed": tally.streams_completed,
        "errors": tally.errors,
    }


def client_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming")
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--model", default="dev-echo")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args(argv)
    result = uvloop.run(_client(args.url + CHAT_PATH, args.model, args.concurrency, args.warmup, args.duration))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------- parent side


@dataclass
class StreamResult:
    target: str
    concurrency: int
    window_s: float
    streams: int
    chunks: int
    content_chunks: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    stream_p50_ms: float
    errors: dict[str, int]
    cpu_s: dict[str, float]
    main_thread_s: dict[str, float]
    machine_busy_pct: float
    client_cpu_s: float

    def cpu_per_chunk_us(self, names: list[str]) -> float:
        total = sum(v for k, v in self.cpu_s.items() if k in names)
        return 1e6 * total / self.chunks if self.chunks else float("nan")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def run_streams(
    target: str,
    base_url: str,
    model: str,
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    watch: Mapping[str, int],
    log: Path,
) -> StreamResult:
    cmd = [
        sys.executable,
        "-m",
        "bench.streaming",
        "--url",
        base_url,
        "--model",
        model,
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(warmup_s),
        "--duration",
        str(duration_s),
    ]
    pids = dict(watch)
    with open(log, "ab") as errors:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL, start_new_session=True
        )
    before: cpu.Snapshot | None = None
    after: cpu.Snapshot | None = None
    client_before = client_after = 0.0
    result: dict[str, Any] | None = None
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode().strip()
            if line == "START":
                before = cpu.snapshot(pids)
                client_before = cpu.cpu_seconds(proc.pid)
            elif line == "STOP":
                after = cpu.snapshot(pids)
                client_after = cpu.cpu_seconds(proc.pid)
            elif line.startswith("RESULT "):
                result = json.loads(line[len("RESULT ") :])
        proc.wait(30)
    finally:
        stop(proc, timeout=2)
    if result is None or before is None or after is None:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"streaming client failed ({proc.returncode}); its log {log}:\n{tail}")
    used = cpu.usage(before, after)
    return StreamResult(
        target=target,
        concurrency=concurrency,
        window_s=used.wall_s,
        streams=int(result["streams_completed"]),
        chunks=int(result["chunks"]),
        content_chunks=int(result["content_chunks"]),
        ttft_p50_ms=percentile(result["ttft_ms"], 50),
        ttft_p99_ms=percentile(result["ttft_ms"], 99),
        stream_p50_ms=percentile(result["stream_ms"], 50),
        errors=dict(result["errors"]),
        cpu_s=used.per_pid_s,
        main_thread_s=used.main_thread_s,
        machine_busy_pct=used.machine_busy_pct,
        client_cpu_s=client_after - client_before,
    )


if __name__ == "__main__":
    sys.exit(client_main())
