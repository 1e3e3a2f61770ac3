"""The store interface both backends implement.

Queries are written once, with `?` placeholders (the PostgreSQL backend turns them into
psycopg's `%s`; so no literal `?` operators in portable SQL). Only migrations differ per
dialect. Constraint failures surface as `ConstraintViolation` / `DuplicateError`,
whatever the driver.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from functools import lru_cache
from types import TracebackType
from typing import Any, Protocol, Self

from ghostllm.errors import StoreError
from ghostllm.store.migrations import Migration, SchemaStatus, load_migrations
from ghostllm.store.url import Dialect, StoreURL


class ConstraintViolation(Exception):
    """A write broke a constraint (foreign key, check, not null)."""


class DuplicateError(ConstraintViolation):
    """A write broke a unique constraint (users.email, api_keys.key_hash, teams.name, ...)."""


class Executor(Protocol):
    """What runs statements: the store itself (each statement its own transaction) or an open transaction."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Store(ABC):
    dialect: Dialect

    def __init__(self, url: StoreURL) -> None:
        self.url = url

    @abstractmethod
    async def open(self) -> None:
        """Connect; raises StoreError (naming the URL, never its password) when that fails."""

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; the number of rows it touched."""

    @abstractmethod
    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement, prepared once, for every row, in one transaction (batched writes:
        the usage ledger). Far cheaper than one statement with a VALUES list per row."""

    async def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, conflict: str
    ) -> None:
        """Insert `rows` (values in `columns` order) into `table`, all or nothing; a row whose
        `conflict` column value is already there (or earlier in `rows`) is skipped, so a batch
        written again is counted once. Refused rows raise as `execute_many` does. Backends
        that can load a batch more cheaply than row by row override it."""
        if rows:
            await self.execute_many(insert_sql(table, tuple(columns), conflict), rows)

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        """Statements that commit together or not at all (a change and its audit row):
        committed when the block ends, rolled back when it raises."""

    @abstractmethod
    async def status(self) -> SchemaStatus:
        """The code's migrations against those recorded; writes nothing."""

    @abstractmethod
    async def _apply_pending(self) -> tuple[Migration, ...]:
        """Under the backend's migration lock: apply what is pending, each migration in its
        own transaction with its schema_migrations row; what was applied."""

    @property
    def migrations(self) -> tuple[Migration, ...]:
        return load_migrations(self.dialect)

    async def migrate(self) -> tuple[Migration, ...]:
        """Apply the pending migrations in order; refuses a schema newer than the code."""
        status = await self.status()
        if status.unknown:
            raise StoreError(schema_newer_message(self.url, status))
        if not status.pending:
            return ()
        return await self._apply_pending()


# Identifiers spliced into SQL: plain lowercase names only (our own constants), so quoting
# them changes nothing on either backend.
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def identifier(name: str) -> str:
    """`name` quoted for SQL, after checking it is a plain identifier."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


@lru_cache(maxsize=64)
def insert_sql(table: str, columns: tuple[str, ...], conflict: str) -> str:
    """One row's INSERT for `Store.insert_rows` (portable `?` placeholders)."""
    names = ", ".join(map(identifier, columns))
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {identifier(table)} ({names}) VALUES ({marks}) ON CONFLICT ({identifier(conflict)}) DO NOTHING"


def schema_newer_message(url: StoreURL, status: SchemaStatus) -> str:
    versions = ", ".join(f"{a.version:04d}_{a.name}" for a in status.unknown)
    return (
        f"the database schema at {url} is newer than this version of GhostLLM "
        f"(it has migration(s) this code does not know: {versions}); upgrade GhostLLM"
    )
