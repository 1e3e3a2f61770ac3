"""`ghostllm migrate [status]` and `ghostllm serve`'s store check, as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ghostllm.store import load_migrations
from tests.support.procs import ROOT, server_config


def ghostllm(tmp_path: Path, config: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ("GHOSTLLM_STORE_URL", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "ghostllm", *args, "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_migrate_and_status_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "data" / "ghostllm.db"
    config = {"store": {"url": f"sqlite:///{db}"}}

    out = ghostllm(tmp_path, config, "migrate", "status")
    assert out.returncode == 0, out.stderr
    assert "0001_initial: pending" in out.stdout
    assert not db.exists() and not db.parent.exists()  # status writes nothing

    out = ghostllm(tmp_path, config, "migrate")
    assert out.returncode == 0, out.stderr
    assert "applied 0001_initial" in out.stdout and "applied 0002_model_catalogue" in out.stdout
    assert f"{len(load_migrations('sqlite'))} migration(s) applied" in out.stdout
    assert db.is_file()

    out = ghostllm(tmp_path, config, "migrate")
    assert out.returncode == 0, out.stderr
    assert "nothing to do" in out.stdout and "applied 0001" not in out.stdout

    out = ghostllm(tmp_path, config, "migrate", "status")
    assert out.returncode == 0, out.stderr
    assert "0001_initial: applied " in out.stdout and "pending" not in out.stdout


def test_bad_store_url_is_a_configuration_error(tmp_path: Path) -> None:
    out = ghostllm(tmp_path, {"store": {"url": "mysql://x"}}, "migrate")
    assert out.returncode == 2
    assert "configuration error: store.url" in out.stderr and "Traceback" not in out.stderr


def test_serve_refuses_a_pending_postgres_schema(tmp_path: Path, postgres_url: str) -> None:
    config = {"server": server_config(tmp_path, 1), "store": {"url": postgres_url}}
    out = ghostllm(tmp_path, config, "serve")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "store error" in out.stderr and "pending migration(s)" in out.stderr
    assert "run `ghostllm migrate`" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "envoy.json").exists()  # refused before starting anything

    out = ghostllm(tmp_path, config, "migrate")
    assert out.returncode == 0 and "applied 0001_initial" in out.stdout, out.stderr
    out = ghostllm(tmp_path, config, "migrate", "status")
    assert out.returncode == 0 and "0001_initial: applied" in out.stdout, out.stderr
