"""The directory the worker processes write their metric values to (prometheus-client's
multiprocess mode: a few mmap'd files per process) and the exporter reads. `serve` owns it:
made empty at every start under the run directory, named to the workers in the environment
before they start (the library picks its mode when it is first imported), and told when a
worker exits, so that worker's live gauges (streams in flight, ...) stop counting while its
counters stay: a restarted worker neither loses nor repeats what its predecessor counted."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from ghostllm.config import Config

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(run_dir: Path) -> Path:
    """`run_dir`/metrics, empty: what an earlier run left would be counted again."""
    directory = run_dir / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def worker_env(directory: Path) -> dict[str, str]:
    return {**os.environ, ENV: str(directory)}


def enabled(config: Config, env: Mapping[str, str] = os.environ) -> bool:
    """Does this worker count? Only under a `serve` with metrics on, which named the directory."""
    return config.server.metrics_port > 0 and bool(env.get(ENV))


def worker_exited(directory: Path, pid: int) -> None:
    # Imported here: the supervisor needs nothing else of the library.
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
