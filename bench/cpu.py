"""CPU time (user + sys, all threads) and RSS of processes, read through psutil (/proc/<pid>/stat)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import psutil


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its own threads, not its reaped children)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def main_thread_seconds(pid: int) -> float:
    """utime + stime of the process's main thread (a worker's event loop; grpc's own threads excluded)."""
    try:
        for t in psutil.Process(pid).threads():
            if t.id == pid:
                return float(t.user_time + t.system_time)
    except psutil.Error:
        pass
    return 0.0


def rss_mb(pid: int) -> float:
    try:
        return float(psutil.Process(pid).memory_info().rss) / (1024 * 1024)
    except psutil.Error:
        return 0.0


@dataclass
class Snapshot:
    at: float
    per_pid: dict[str, float]
    main_thread: dict[str, float]
    machine_busy: float
    machine_total: float


def _machine() -> tuple[float, float]:
    t = psutil.cpu_times()
    total = float(sum(t))
    idle = float(t.idle + getattr(t, "iowait", 0.0))
    return total - idle, total


def snapshot(pids: Mapping[str, int]) -> Snapshot:
    busy, total = _machine()
    per_pid = {name: cpu_seconds(pid) for name, pid in pids.items()}
    main = {name: main_thread_seconds(pid) for name, pid in pids.items()}
    return Snapshot(time.monotonic(), per_pid, main, busy, total)


@dataclass
class Usage:
    """CPU used between two snapshots."""

    wall_s: float
    per_pid_s: dict[str, float]
    main_thread_s: dict[str, float]
    machine_busy_pct: float  # of all cores


def usage(before: Snapshot, after: Snapshot) -> Usage:
    per = {k: max(0.0, after.per_pid.get(k, 0.0) - v) for k, v in before.per_pid.items()}
    main = {k: max(0.0, after.main_thread.get(k, 0.0) - v) for k, v in before.main_thread.items()}
    total = after.machine_total - before.machine_total
    busy = after.machine_busy - before.machine_busy
    pct = 100.0 * busy / total if total > 0 else 0.0
    return Usage(after.at - before.at, per, main, pct)


def all_rss_mb(pids: Mapping[str, int]) -> dict[str, float]:
    return {name: rss_mb(pid) for name, pid in pids.items()}
