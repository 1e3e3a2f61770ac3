"""What `ghostllm serve` (and every command that uses the store) does with the store before it starts anything.

The embedded SQLite store is GhostLLM's own: pending migrations are applied (the data
directory created). A PostgreSQL schema belongs to the operator: serve only checks it
(one connection, two small queries) and refuses to start when it is not the code's.
"""

from __future__ import annotations

import asyncio

from ghostllm.config import Config
from ghostllm.errors import StoreError
from ghostllm.store import Migration, Store, make_store
from ghostllm.store.base import schema_newer_message


async def prepare_store(config: Config) -> str:
    """A line for the start-up banner; raises StoreError when serve must not start."""
    async with make_store(config.store, max_size=1) as store:
        applied = await ensure_schema(store)
    did = f"applied {len(applied)} migration(s)" if applied else "schema up to date"
    return f"store: {store.url} ({did})"


async def ensure_schema(store: Store) -> tuple[Migration, ...]:
    """Before using an open store: on SQLite apply what is pending (what was applied);
    on PostgreSQL raise StoreError unless the schema is exactly the code's."""
    if store.dialect == "sqlite":
        return await store.migrate()
    status = await store.status()
    if status.unknown:
        raise StoreError(schema_newer_message(store.url, status))
    if status.pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in status.pending)
        raise StoreError(
            f"the database at {store.url} has {len(status.pending)} pending migration(s) ({names}): "
            "run `ghostllm migrate` first"
        )
    return ()


def prepare_store_sync(config: Config) -> str:
    return asyncio.run(prepare_store(config))
