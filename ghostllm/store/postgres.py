"""The production store: PostgreSQL through psycopg 3, a bounded async connection pool.

Connections are in autocommit mode: a statement is its own transaction unless one is
opened explicitly (migrations). The schema is the connection's search_path, so a
deployment (or a test run) can use its own schema through the URL:
`postgresql://host/db?options=-csearch_path%3Dname`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ghostllm.errors import StoreError
from ghostllm.store.base import ConstraintViolation, DuplicateError, Store
from ghostllm.store.migrations import AppliedMigration, Migration, SchemaStatus
from ghostllm.store.url import StoreURL

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    checksum   TEXT NOT NULL
)
"""
# pg_advisory_lock key: one `ghostllm migrate` at a time per database.
_MIGRATION_LOCK = 0x6768_6F73_746C_6C6D  # "ghostllm"


def _pg(sql: str) -> str:
    """Portable `?` placeholders as psycopg's `%s` (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresStore(Store):
    dialect = "postgresql"

    def __init__(
        self, url: StoreURL, *, min_size: int = 1, max_size: int = 10, connect_timeout_s: float = 10.0
    ) -> None:
        super().__init__(url)
        self.min_size, self.max_size, self.timeout = min_size, max_size, connect_timeout_s
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] | None = None

    @property
    def pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def open(self) -> None:
        pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] = AsyncConnectionPool(
            self.url.conninfo,
            min_size=self.min_size,
            max_size=self.max_size,
            timeout=self.timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(self.timeout))},
            check=AsyncConnectionPool.check_connection,
            open=False,
            name="ghostllm-store",
        )
        try:
            await pool.open(wait=self.min_size > 0, timeout=self.timeout)
            self._pool = pool
            await self.fetch_all("SELECT 1")
        except (PoolTimeout, psycopg.Error) as exc:
            await pool.close()
            self._pool = None
            raise StoreError(f"cannot reach the store at {self.url}: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self.pool.connection() as conn:
            return await _execute(conn, sql, params)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.pool.connection() as conn:
            return await _fetch_all(conn, sql, params)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await _Transaction(conn).execute_many(sql, rows)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Transaction]:
        async with self.pool.connection() as conn, conn.transaction():
            yield _Transaction(conn)

    async def status(self) -> SchemaStatus:
        async with self.pool.connection() as conn:
            return SchemaStatus(self.migrations, await _applied(conn))

    async def _apply_pending(self) -> tuple[Migration, ...]:
        applied: list[Migration] = []
        async with self.pool.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                await conn.execute(_BOOKKEEPING)
                done = {a.version for a in await _applied(conn)}
                for migration in self.migrations:
                    if migration.version in done:
                        continue
                    async with conn.transaction():
                        # No parameters: psycopg sends the file as one simple query, all its statements.
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                    applied.append(migration)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
        return tuple(applied)


Connection = psycopg.AsyncConnection[tuple[Any, ...]]


async def _execute(conn: Connection, sql: str, params: Sequence[Any]) -> int:
    try:
        cursor = await conn.execute(_pg(sql), tuple(params))
    except pg_errors.IntegrityError as exc:
        raise _violation(exc) from exc
    return cursor.rowcount


async def _fetch_all(conn: Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(_pg(sql), tuple(params))
    return await cursor.fetchall()


class _Transaction:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await _execute(self._conn, sql, params)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await _fetch_all(self._conn, sql, params)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            async with self._conn.cursor() as cursor:
                # psycopg pipelines the rows: one round trip for the batch.
                await cursor.executemany(_pg(sql), [tuple(r) for r in rows])
        except pg_errors.IntegrityError as exc:
            raise _violation(exc) from exc


async def _applied(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> tuple[AppliedMigration, ...]:
    cursor = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cursor.fetchone()
    if not row or not row[0]:
        return ()
    cursor = await conn.execute("SELECT version, name, applied_at, checksum FROM schema_migrations ORDER BY version")
    return tuple(AppliedMigration(int(v), str(n), at.isoformat(), str(c)) for v, n, at, c in await cursor.fetchall())


def _violation(exc: pg_errors.IntegrityError) -> ConstraintViolation:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DuplicateError(text) if isinstance(exc, pg_errors.UniqueViolation) else ConstraintViolation(text)
