"""The workers' metrics directory, the switch that turns counting on, and the config key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghostllm.config import parse_config
from ghostllm.errors import ConfigError
from ghostllm.metrics import directory

RAW = {"providers": [{"id": "p", "base_url": "http://127.0.0.1:1/v1"}], "models": [{"id": "m", "provider": "p"}]}


def test_prepare_starts_empty_every_time(tmp_path: Path) -> None:
    first = directory.prepare(tmp_path)
    (first / "counter_123.db").write_bytes(b"left over")
    again = directory.prepare(tmp_path)
    assert again == first == tmp_path / "metrics" and list(again.iterdir()) == []
    assert directory.worker_env(again)[directory.ENV] == str(again)


def test_a_worker_counts_only_under_a_serve_with_metrics_on(tmp_path: Path) -> None:
    on = parse_config(RAW, env={})
    assert on.server.metrics_port == 9090
    assert directory.enabled(on, {directory.ENV: str(tmp_path)})
    assert not directory.enabled(on, {})  # a worker started on its own
    off = parse_config({**RAW, "server": {"metrics_port": 0}}, env={})
    assert not directory.enabled(off, {directory.ENV: str(tmp_path)})


def test_the_port_from_the_environment_and_its_range() -> None:
    assert parse_config(RAW, env={"GHOSTLLM_SERVER_METRICS_PORT": "9464"}).server.metrics_port == 9464
    with pytest.raises(ConfigError, match=r"server\.metrics_port"):
        parse_config({**RAW, "server": {"metrics_port": 70000}}, env={})


def test_a_dead_worker_s_live_gauges_go_and_its_counters_stay(tmp_path: Path) -> None:
    d = directory.prepare(tmp_path)
    for name in (
        "counter_41.db",
        "histogram_41.db",
        "gauge_livesum_41.db",
        "gauge_livemax_41.db",
        "gauge_livesum_42.db",
    ):
        (d / name).write_bytes(b"")
    directory.worker_exited(d, 41)
    assert sorted(p.name for p in d.iterdir()) == ["counter_41.db", "gauge_livesum_42.db", "histogram_41.db"]
