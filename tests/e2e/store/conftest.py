"""The store under test, on both backends: SQLite in tmp_path, and PostgreSQL on
127.0.0.1:5432 (database `test`, user `postgres`), each test in a schema of its own
that is dropped afterwards. Without PostgreSQL its tests skip, except under CI=true."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ghostllm.config import StoreConfig
from tests.support.postgres import schema

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgresql"]


def _postgres_unavailable() -> str | None:
    try:
        with psycopg.connect(PG_SERVER, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {PG_SERVER}: {str(exc).strip()}"
    return None


@pytest.fixture(scope="session")
def postgres_server() -> str:
    reason = _postgres_unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the store suite must run against PostgreSQL)")
        pytest.skip(reason)
    return PG_SERVER


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema; only that schema is dropped afterwards."""
    with schema(postgres_server) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    if request.param == "sqlite":
        return StoreConfig(url=f"sqlite:///{tmp_path / 'data' / 'ghostllm.db'}")
    url: str = request.getfixturevalue("postgres_url")
    return StoreConfig(url=url, pool_max_size=2)
