"""Run wrk with bench/post.lua and read the one-line JSON its done() hook prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench import cpu
from bench.procs import CHAT_PATH
from tests.support.procs import stop

SCRIPT = Path(__file__).resolve().parent / "post.lua"
MARKER = "BENCH_RESULT "


@dataclass
class WrkResult:
    threads: int
    connections: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    # CPU seconds per watched process during the run, and the machine's busy share (all cores).
    cpu_s: dict[str, float]
    main_thread_s: dict[str, float]
    machine_busy_pct: float

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def cpu_per_request_ms(self, names: list[str]) -> float:
        total = sum(v for k, v in self.cpu_s.items() if k in names)
        return 1000.0 * total / self.requests if self.requests else float("nan")


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    return found


def run_wrk(
    base_url: str,
    *,
    threads: int,
    connections: int,
    duration_s: float,
    watch: Mapping[str, int] | None = None,
    rate: float | None = None,
) -> WrkResult:
    """One wrk run against base_url + /v1/chat/completions; CPU of `watch` pids measured around it.

    With `rate` (requests/s over all connections) each connection pauses between
    requests, so latency is measured below saturation instead of at it."""
    cmd = [
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "5s",
        "-s",
        str(SCRIPT),
        base_url + CHAT_PATH,
    ]
    pids = dict(watch or {})
    before = cpu.snapshot(pids)
    env = dict(os.environ)
    if rate:
        env["BENCH_DELAY_MS"] = str(max(1, round(1000 * connections / rate)))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )
    try:
        out, err = proc.communicate(timeout=duration_s + 30)
    finally:
        stop(proc, timeout=2)
    after = cpu.snapshot(pids)
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith(MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-2000:]} {err.decode(errors='replace')[-2000:]}")
    data = json.loads(line[len(MARKER) :])
    used = cpu.usage(before, after)
    duration = data["duration_us"] / 1e6
    requests = int(data["requests"])
    return WrkResult(
        threads=threads,
        connections=connections,
        requests=requests,
        duration_s=duration,
        rps=requests / duration if duration > 0 else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors={k.removeprefix("err_"): int(v) for k, v in data.items() if k.startswith("err_") and v},
        cpu_s=used.per_pid_s,
        main_thread_s=used.main_thread_s,
        machine_busy_pct=used.machine_busy_pct,
    )
