"""The embedded store: one SQLite file, through aiosqlite.

aiosqlite runs each connection's calls in order on its own thread (a sqlite3
connection belongs to one thread), so the event loop never blocks on disk; it is
the stdlib sqlite3 underneath, with a typed async API. The connection is in
autocommit mode (`isolation_level=None`): a statement is its own transaction unless
we open one explicitly, as migrations do with BEGIN IMMEDIATE.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiosqlite

from ghostllm.errors import StoreError
from ghostllm.store.base import ConstraintViolation, DuplicateError, Store
from ghostllm.store.migrations import AppliedMigration, Migration, SchemaStatus
from ghostllm.store.url import StoreURL

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    checksum   TEXT NOT NULL
)
"""


def statements(script: str) -> Iterator[str]:
    """The statements of a SQL script (sqlite3.complete_statement knows strings,
    comments and triggers' BEGIN ... END)."""
    start = 0
    for i, ch in enumerate(script):
        if ch == ";" and sqlite3.complete_statement(script[start : i + 1]):
            stmt = script[start : i + 1].strip()
            start = i + 1
            if stmt.strip(";").strip():
                yield stmt
    if script[start:].strip() and sqlite3.complete_statement(script[start:] + ";"):
        yield script[start:].strip()


class SQLiteStore(Store):
    dialect = "sqlite"

    def __init__(self, url: StoreURL, *, readonly: bool = False) -> None:
        super().__init__(url)
        assert url.path is not None
        self.path = url.path
        self.readonly = readonly
        self._conn: aiosqlite.Connection | None = None
        # One connection serves every caller: a transaction holds it, so no other
        # caller's statement runs inside someone else's transaction.
        self._lock = asyncio.Lock()

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    async def open(self) -> None:
        try:
            if self.readonly:
                # A file that does not exist yet reads as an empty database; nothing is created.
                target = f"file:{quote(str(self.path))}?mode=ro" if self.path.exists() else ":memory:"
                self._conn = await aiosqlite.connect(target, uri=True, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = await aiosqlite.connect(self.path, isolation_level=None)
                # WAL: readers (every worker) do not block the writer, nor it them.
                await self._conn.execute("PRAGMA journal_mode=WAL")
            await self._conn.execute("PRAGMA foreign_keys=ON")
            await self._conn.execute("PRAGMA busy_timeout=5000")
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StoreError(f"cannot open the store at {self.url}: {exc}") from exc

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._lock:
            return await _execute(self.conn, sql, params)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._lock:
            return await _fetch_all(self.conn, sql, params)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.transaction() as tx:
            await tx.execute_many(sql, rows)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Transaction]:
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Transaction(self.conn)
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            await self.conn.execute("COMMIT")

    async def _applied(self) -> tuple[AppliedMigration, ...]:
        exists = await self.fetch_all("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
        if not exists:
            return ()
        rows = await self.fetch_all(
            "SELECT version, name, applied_at, checksum FROM schema_migrations ORDER BY version"
        )
        return tuple(AppliedMigration(int(v), str(n), str(at), str(c)) for v, n, at, c in rows)

    async def status(self) -> SchemaStatus:
        return SchemaStatus(self.migrations, await self._applied())

    async def _apply_pending(self) -> tuple[Migration, ...]:
        await self.conn.execute(_BOOKKEEPING)
        applied: list[Migration] = []
        for migration in self.migrations:
            # BEGIN IMMEDIATE takes the write lock, so the check below cannot race another process.
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                done = await self.fetch_all("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,))
                if not done:
                    for stmt in statements(migration.sql):
                        await self.conn.execute(stmt)
                    await self.conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
                        (migration.version, migration.name, migration.checksum),
                    )
                await self.conn.execute("COMMIT")
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            if not done:
                applied.append(migration)
        return tuple(applied)


async def _execute(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> int:
    try:
        cursor = await conn.execute(sql, tuple(params))
    except sqlite3.IntegrityError as exc:
        raise _violation(exc) from exc
    rows = cursor.rowcount
    await cursor.close()
    return rows


async def _fetch_all(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await conn.execute_fetchall(sql, tuple(params))]


class _Transaction:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await _execute(self._conn, sql, params)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await _fetch_all(self._conn, sql, params)

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise _violation(exc) from exc


def _violation(exc: sqlite3.IntegrityError) -> ConstraintViolation:
    text = str(exc)
    return DuplicateError(text) if text.startswith("UNIQUE constraint failed") else ConstraintViolation(text)
