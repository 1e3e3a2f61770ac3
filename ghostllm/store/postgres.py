"""The production store: PostgreSQL through psycopg 3, a bounded async connection pool.

Connections are in autocommit mode: a statement is its own transaction unless one is
opened explicitly (migrations). A batch of rows (`insert_rows`: the usage ledger) is
COPYed into a session temp table and moved into its table with one INSERT ... SELECT:
about a third of our CPU and half the server's of a prepared INSERT per row. The schema
is the connection's search_path, so a deployment (or a test run) can use its own schema
through the URL: `postgresql://host/db?options=-csearch_path%3Dname`.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ghostllm.errors import StoreError
from ghostllm.store.base import ConstraintViolation, DuplicateError, Store, identifier
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
        # The staging tables each pooled connection has (temp tables are per session):
        # created on a connection's first batch, not checked again (see insert_rows).
        self._staged: weakref.WeakKeyDictionary[Connection, set[str]] = weakref.WeakKeyDictionary()

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

    async def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, conflict: str
    ) -> None:
        """COPY into the connection's staging table for `table`, then one INSERT ... SELECT ...
        ON CONFLICT DO NOTHING, in one transaction. The stage is made on the connection's
        first batch only (CREATE ... IF NOT EXISTS each time would cost a catalog lookup and
        a NOTICE per batch); one that is gone or lacks a column (dropped behind our back,
        made before a migration) fails the COPY, and is then made again once."""
        if not rows:
            return
        plan = _plan(table, tuple(columns), conflict)
        async with self.pool.connection() as conn:
            staged = self._staged.setdefault(conn, set())
            try:
                try:
                    await _stage_and_insert(conn, plan, rows, create=plan.stage not in staged)
                except _StaleStage:
                    await _stage_and_insert(conn, plan, rows, create=True, replace=True)
            except BaseException as exc:
                # The transaction that made the stage may be the one rolled back: make sure next time.
                staged.discard(plan.stage)
                if isinstance(exc, pg_errors.IntegrityError):
                    raise _violation(exc) from exc
                raise
            staged.add(plan.stage)

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


@dataclass(frozen=True, slots=True)
class _Plan:
    stage: str
    create: str
    drop: str
    copy: str
    insert: str


@lru_cache(maxsize=64)
def _plan(table: str, columns: tuple[str, ...], conflict: str) -> _Plan:
    """The statements of `insert_rows`. The columns are listed in both, so only they matter:
    a stage made from an older table fails the COPY (UndefinedColumn) rather than loading
    wrong. pg_temp.<stage>: never a permanent table of that name on the search_path."""
    name = f"ghostllm_stage_{table}"
    stage = f"pg_temp.{identifier(name)}"
    names = ", ".join(map(identifier, columns))
    return _Plan(
        stage=name,
        # ON COMMIT DELETE ROWS: empty after every batch; a failed one rolls back, empty too.
        create=f"CREATE TEMP TABLE IF NOT EXISTS {identifier(name)} (LIKE {identifier(table)} INCLUDING DEFAULTS)"
        " ON COMMIT DELETE ROWS",
        drop=f"DROP TABLE IF EXISTS {stage}",
        copy=f"COPY {stage} ({names}) FROM STDIN",
        insert=f"INSERT INTO {identifier(table)} ({names}) SELECT {names} FROM {stage} "
        f"ON CONFLICT ({identifier(conflict)}) DO NOTHING",
    )


class _StaleStage(Exception):
    """The staging table is gone, or older than the columns (a COPY that could not start)."""


async def _stage_and_insert(
    conn: Connection, plan: _Plan, rows: Sequence[Sequence[Any]], *, create: bool, replace: bool = False
) -> None:
    async with conn.transaction():
        if replace:
            await conn.execute(plan.drop)
        if create:
            await conn.execute(plan.create)
        async with conn.cursor() as cursor:
            try:
                async with cursor.copy(plan.copy) as copy:
                    # Text format: psycopg's C formatter escapes tabs, newlines and backslashes.
                    for row in rows:
                        await copy.write_row(row)
            except (pg_errors.UndefinedTable, pg_errors.UndefinedColumn) as exc:
                if replace:
                    raise
                raise _StaleStage(str(exc)) from exc
            await cursor.execute(plan.insert, prepare=True)


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
