"""The shared PostgreSQL on 127.0.0.1:5432 (database `test`, user `postgres`), for tests
that need one outside tests/e2e/store/: each user gets a schema of its own, migrated, and
dropped afterwards (nothing else is ever touched). Without PostgreSQL such tests skip,
except under CI=true, where its absence fails the run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from ghostllm.config import StoreConfig
from ghostllm.store import make_store

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def require_postgres() -> str:
    try:
        with psycopg.connect(PG_SERVER, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"PostgreSQL not reachable at {PG_SERVER}: {str(exc).strip()}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL must be there)")
        pytest.skip(reason)
    return PG_SERVER


@contextlib.contextmanager
def schema(server: str = PG_SERVER) -> Iterator[str]:
    """A store URL whose search_path is a fresh, empty schema on `server`, dropped however
    the block ends (nothing else is ever touched)."""
    name = f"ghostllm_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')  # a generated identifier
    try:
        yield f"{server}?options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@contextlib.contextmanager
def migrated_schema() -> Iterator[str]:
    """A fresh schema with every migration applied (what `ghostllm migrate` does before
    serve may start on PostgreSQL)."""
    with schema(require_postgres()) as url:

        async def migrate() -> None:
            async with make_store(StoreConfig(url=url, pool_min_size=0)) as store:
                await store.migrate()

        asyncio.run(migrate())
        yield url
