"""The store suite: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from ghostllm.config import Config, StoreConfig
from ghostllm.errors import StoreError
from ghostllm.store import DuplicateError, Store, load_migrations, make_store, parse_store_url
from ghostllm.store.startup import prepare_store

T = TypeVar("T")

TABLES = (
    "teams",
    "users",
    "api_keys",
    "providers",
    "models",
    "chat_sessions",
    "messages",
    "usage_logs",
    "audit_log",
)


def with_store(config: StoreConfig, body: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        async with make_store(config) as store:
            return await body(store)

    return asyncio.run(run())


def new_id() -> str:
    return str(uuid.uuid4())


def test_migrate_from_empty_applies_all_and_records_them(store_config: StoreConfig) -> None:
    known = load_migrations(parse_store_url(store_config.url).dialect)
    assert known and [m.version for m in known] == sorted(m.version for m in known)

    async def body(store: Store) -> None:
        before = await store.status()
        assert before.applied == () and before.pending == known and not before.current
        assert all(line.endswith(": pending") for line in before.lines())
        assert await store.migrate() == known
        after = await store.status()
        assert after.pending == () and after.current and not after.newer_than_code
        assert [(a.version, a.name, a.checksum) for a in after.applied] == [
            (m.version, m.name, m.checksum) for m in known
        ]
        assert all(a.applied_at for a in after.applied)
        assert all(": applied " in line for line in after.lines())
        for table in TABLES:
            assert await store.fetch_all(f"SELECT COUNT(*) FROM {table}") == [(0,)]

    with_store(store_config, body)


def test_migrate_twice_is_a_no_op(store_config: StoreConfig) -> None:
    async def body(store: Store) -> None:
        assert await store.migrate()
        first = (await store.status()).applied
        assert await store.migrate() == ()
        assert (await store.status()).applied == first

    with_store(store_config, body)
    # And from a fresh connection (a second `ghostllm migrate`).
    assert with_store(store_config, lambda store: store.migrate()) == ()


async def _team(store: Store, name: str) -> str:
    team_id = new_id()
    await store.execute("INSERT INTO teams (id, name) VALUES (?, ?)", (team_id, name))
    return team_id


async def _user(store: Store, email: str) -> None:
    await store.execute(
        "INSERT INTO users (id, email, username, role, is_active) VALUES (?, ?, ?, ?, ?)",
        (new_id(), email, email.split("@")[0], "user", True),
    )


async def _key(store: Store, key_hash: str, team_id: str) -> None:
    # A service key: owned by a team, no user.
    await store.execute(
        "INSERT INTO api_keys (id, name, team_id, key_prefix, key_hash, permissions) VALUES (?, ?, ?, ?, ?, ?)",
        (new_id(), "svc", team_id, "gk-abcd", key_hash, '{"chat_completions": true, "models": ["gpt-4"]}'),
    )


@pytest.mark.parametrize("unique", ["users.email", "api_keys.key_hash", "teams.name"])
def test_unique_constraints_hold(store_config: StoreConfig, unique: str) -> None:
    async def body(store: Store) -> None:
        await store.migrate()
        team = await _team(store, "platform")
        insert: dict[str, Callable[[str], Awaitable[object]]] = {
            "users.email": lambda v: _user(store, f"{v}@example.com"),
            "api_keys.key_hash": lambda v: _key(store, (v * 64)[:64], team),
            "teams.name": lambda v: _team(store, f"team-{v}"),
        }
        await insert[unique]("a")
        await insert[unique]("b")  # a different value is fine
        with pytest.raises(DuplicateError):
            await insert[unique]("a")
        table = unique.split(".")[0]
        expected = 3 if table == "teams" else 2  # "platform" is a team too
        assert await store.fetch_all(f"SELECT COUNT(*) FROM {table}") == [(expected,)]

    with_store(store_config, body)


def test_a_schema_newer_than_the_code_is_reported(store_config: StoreConfig) -> None:
    async def body(store: Store) -> None:
        await store.migrate()
        await store.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)", (9999, "future", "0" * 64)
        )
        status = await store.status()
        assert status.newer_than_code and not status.current and status.pending == ()
        assert [a.version for a in status.unknown] == [9999]
        assert status.lines()[-1].startswith("9999_future: applied") and "unknown to this version" in status.lines()[-1]
        with pytest.raises(StoreError, match="newer than this version"):
            await store.migrate()

    with_store(store_config, body)
    with pytest.raises(StoreError, match="newer than this version"):
        asyncio.run(prepare_store(Config(store=store_config)))


def test_serve_check_migrates_sqlite_and_refuses_pending_postgres(store_config: StoreConfig) -> None:
    config = Config(store=store_config)
    if parse_store_url(store_config.url).dialect == "sqlite":
        note = asyncio.run(prepare_store(config))
        assert f"applied {len(load_migrations('sqlite'))} migration(s)" in note
        assert with_store(store_config, lambda store: store.status()).current
    else:
        pending = r"pending migration\(s\) \(0001_initial, 0002_.*\): run `ghostllm migrate`"
        with pytest.raises(StoreError, match=pending):
            asyncio.run(prepare_store(config))
        # Refusing wrote nothing: still nothing applied, not even the bookkeeping table.
        assert with_store(store_config, lambda store: store.status()).applied == ()
        with_store(store_config, lambda store: store.migrate())
    assert "schema up to date" in asyncio.run(prepare_store(config))


def test_a_transaction_commits_together_or_not_at_all(store_config: StoreConfig) -> None:
    async def body(store: Store) -> None:
        await store.migrate()
        insert = "INSERT INTO teams (id, name) VALUES (?, ?)"
        async with store.transaction() as tx:
            await tx.execute(insert, (new_id(), "kept-1"))
            await tx.execute(insert, (new_id(), "kept-2"))
            assert await tx.fetch_all("SELECT COUNT(*) FROM teams") == [(2,)]  # its own writes, before commit
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.execute(insert, (new_id(), "rolled-back"))
                raise RuntimeError("the change's audit row failed")
        with pytest.raises(DuplicateError):
            async with store.transaction() as tx:
                await tx.execute(insert, (new_id(), "also-rolled-back"))
                await tx.execute(insert, (new_id(), "kept-1"))
        names = [row[0] for row in await store.fetch_all("SELECT name FROM teams ORDER BY name")]
        assert names == ["kept-1", "kept-2"]

    with_store(store_config, body)


def test_concurrent_statements_never_land_inside_another_transaction(store_config: StoreConfig) -> None:
    async def body(store: Store) -> None:
        await store.migrate()
        inside = asyncio.Event()

        async def failing() -> None:
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO teams (id, name) VALUES (?, ?)", (new_id(), "rolled-back"))
                inside.set()
                await asyncio.sleep(0.05)
                raise RuntimeError("abort")

        async def other() -> None:
            await inside.wait()
            await store.execute("INSERT INTO teams (id, name) VALUES (?, ?)", (new_id(), "independent"))

        results = await asyncio.gather(failing(), other(), return_exceptions=True)
        assert isinstance(results[0], RuntimeError) and results[1] is None
        names = [row[0] for row in await store.fetch_all("SELECT name FROM teams")]
        assert names == ["independent"]

    with_store(store_config, body)
