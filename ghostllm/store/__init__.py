"""The store: accounts, keys, catalogue and usage, in PostgreSQL or an embedded SQLite file.

`open_store(config)` picks the backend from `store.url`; each backend module is imported
only when used (a SQLite deployment never imports psycopg).
"""

from __future__ import annotations

from ghostllm.config import StoreConfig
from ghostllm.store.base import ConstraintViolation, DuplicateError, Executor, Store
from ghostllm.store.migrations import Migration, SchemaStatus, load_migrations
from ghostllm.store.url import StoreURL, parse_store_url

__all__ = [
    "ConstraintViolation",
    "DuplicateError",
    "Executor",
    "Migration",
    "SchemaStatus",
    "Store",
    "StoreURL",
    "load_migrations",
    "make_store",
    "parse_store_url",
]


def make_store(config: StoreConfig, *, readonly: bool = False, max_size: int | None = None) -> Store:
    """The configured store, not yet open (`async with make_store(...) as store:`).
    `readonly`: open a SQLite file without creating or writing it (a missing one reads as
    empty). `max_size`: a smaller pool, for one-shot commands."""
    url = parse_store_url(config.url)
    if url.dialect == "sqlite":
        from ghostllm.store.sqlite import SQLiteStore

        return SQLiteStore(url, readonly=readonly)
    from ghostllm.store.postgres import PostgresStore

    size = config.pool_max_size if max_size is None else max_size
    return PostgresStore(
        url,
        min_size=min(config.pool_min_size, size),
        max_size=size,
        connect_timeout_s=config.connect_timeout_s,
    )
