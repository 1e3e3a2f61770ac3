"""`ghostllm provider|secrets|config ...` as real processes against a SQLite store in tmp_path."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procs import ROOT

SECRET = "sk-cli-CLEAR-secret-0123456789"


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    config = tmp_path / "g.yaml"
    data = {
        "server": {"data_dir": str(tmp_path / "data")},
        "store": {"url": f"sqlite:///{tmp_path / 'data' / 'g.db'}"},
        "providers": [
            {"id": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY",
             "headers": {"Authorization": "Bearer hdr-SECRET", "X-Org": "acme"}},
        ],
    }  # fmt: skip
    config.write_text(yaml.safe_dump(data))
    base = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTLLM_") and k != "DATABASE_URL"}

    def run(*args: str, stdin: str = "", ok: bool = True, env: dict[str, str] | None = None) -> Any:
        out = subprocess.run(
            [sys.executable, "-m", "ghostllm", *args, "-c", str(config)],
            input=stdin, capture_output=True, text=True, cwd=ROOT, env={**base, **(env or {})}, timeout=60,
        )  # fmt: skip
        if ok:
            assert out.returncode == 0, out.stderr
        assert "Traceback" not in out.stderr and SECRET not in out.stdout + out.stderr
        return out

    return run


def dump(tmp_path: Path) -> bytes:
    db = tmp_path / "data" / "g.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        text = "\n".join(conn.iterdump()).encode()
    return text + b"".join(p.read_bytes() for p in db.parent.glob("g.db*"))


def test_set_key_list_and_rotate(cli: Any, tmp_path: Path) -> None:
    listing = json.loads(cli("provider", "list", "--json").stdout)["providers"]
    assert listing == [
        {"id": "openai", "type": "openai", "base_url": "https://api.openai.com/v1", "enabled": True,
         "sources": ["config"], "api_key_env": "OPENAI_API_KEY", "api_key_env_set": False,
         "api_key_stored": False, "encryption_key_id": None},
    ]  # fmt: skip

    out = cli("provider", "set-key", "openai", stdin=SECRET + "\n")
    assert "stored the API key for provider openai, encrypted" in out.stdout and "created from the config" in out.stdout
    key_file = tmp_path / "data" / "encryption.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert SECRET.encode() not in dump(tmp_path) and b"v1:" in dump(tmp_path)

    listing = json.loads(cli("provider", "list", "--json", env={"OPENAI_API_KEY": "from-env"}).stdout)["providers"]
    first_id = listing[0]["encryption_key_id"]
    assert listing[0]["sources"] == ["config", "database"] and listing[0]["api_key_stored"] and first_id
    assert listing[0]["api_key_env_set"] is True and "from-env" not in json.dumps(listing)
    table = cli("provider", "list").stdout
    assert "stored, encrypted" in table and "OPENAI_API_KEY" in table

    out = cli("secrets", "rotate")
    assert "re-encrypted 1 stored secret(s)" in out.stdout and "the old key" in out.stdout
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and not (tmp_path / "data" / "encryption.key.old").exists()
    second_id = json.loads(cli("provider", "list", "--json").stdout)["providers"][0]["encryption_key_id"]
    assert second_id != first_id and SECRET.encode() not in dump(tmp_path)

    key_file.chmod(0o644)
    out = cli("provider", "set-key", "openai", stdin="another\n", ok=False)
    assert out.returncode == 2 and "accessible by group or others (mode 0644)" in out.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o644


def test_set_key_with_env_key_and_errors(cli: Any, tmp_path: Path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    env = {"GHOSTLLM_ENCRYPTION_KEY": key}
    cli("provider", "set-key", "openai", stdin=SECRET + "\n", env=env)
    assert not (tmp_path / "data" / "encryption.key").exists()
    new = base64.b64encode(os.urandom(32)).decode()
    out = cli("secrets", "rotate", env={**env, "GHOSTLLM_NEW_ENCRYPTION_KEY": new})
    assert "Now set GHOSTLLM_ENCRYPTION_KEY to the value of GHOSTLLM_NEW_ENCRYPTION_KEY" in out.stdout
    assert key not in out.stdout and new not in out.stdout
    out = cli("secrets", "rotate", env=env, ok=False)
    assert out.returncode == 2 and "GHOSTLLM_NEW_ENCRYPTION_KEY" in out.stderr

    out = cli("provider", "set-key", "openai", stdin="x\n", env={"GHOSTLLM_ENCRYPTION_KEY": "bad!"}, ok=False)
    assert out.returncode == 2 and "GHOSTLLM_ENCRYPTION_KEY: expected base64 of 32 random bytes" in out.stderr
    out = cli("provider", "set-key", "nope", stdin="x\n", ok=False)
    assert out.returncode == 1 and out.stderr.strip().endswith("no provider 'nope' in the config or the store")
    out = cli("provider", "set-key", "openai", stdin="", ok=False)
    assert out.returncode == 1 and "api_key: nothing on stdin" in out.stderr
    assert SECRET.encode() not in dump(tmp_path)


def test_config_show_and_validate(cli: Any, tmp_path: Path) -> None:
    env = {
        "GHOSTLLM_STORE_URL": "postgresql://admin:pg-PASSWORD@db.example:5432/g",
        "GHOSTLLM_SERVER_REST_PORT": "9090",
    }
    out = cli("config", "show", env=env)
    shown = yaml.safe_load(out.stdout)
    assert shown["server"]["rest_port"] == 9090 and shown["store"]["url"] == "postgresql://admin:***@db.example:5432/g"
    assert shown["providers"][0]["headers"] == {"Authorization": "(hidden)", "X-Org": "acme"}
    assert "pg-PASSWORD" not in out.stdout and "hdr-SECRET" not in out.stdout
    data = json.loads(cli("config", "show", "--json", env=env).stdout)
    assert data["providers"][0]["api_key_env"] == "OPENAI_API_KEY" and data == shown

    assert cli("config", "validate").stdout.strip().endswith("g.yaml: valid")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  rest_prot: 1\n")
    out = subprocess.run(
        [sys.executable, "-m", "ghostllm", "config", "validate", "-c", str(bad)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "unknown key(s) server.rest_prot" in out.stderr and out.stdout == ""
