"""The account repository never removes the last active admin user (delete, demote,
deactivate), on SQLite in tmp_path and on the shared PostgreSQL (a schema per test;
skipped without it, except under CI=true), as test_accounts.py beside it does."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import psycopg
import pytest

from ghostllm.accounts import AccountRepository, Role, User
from ghostllm.config import StoreConfig
from ghostllm.errors import LastAdmin
from ghostllm.store import make_store
from tests.e2e.store.test_accounts import dump, with_repo
from tests.support.postgres import require_postgres, schema

T = TypeVar("T")
REFUSALS: list[tuple[str, Callable[[AccountRepository, str], Awaitable[object]], str | None]] = [
    ("delete", lambda r, ref: r.delete_user(ref), None),
    ("demote to user", lambda r, ref: r.update_user(ref, role="user"), "role"),
    ("demote to viewer", lambda r, ref: r.update_user(ref, role=Role.VIEWER), "role"),
    ("deactivate", lambda r, ref: r.update_user(ref, is_active=False), "is_active"),
    ("demote with other changes", lambda r, ref: r.update_user(ref, username="x", role="user"), "role"),
]
REFUSAL_IDS = [name for name, _, _ in REFUSALS]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreConfig]:
    if request.param == "sqlite":
        yield StoreConfig(url=f"sqlite:///{tmp_path / 'data' / 'ghostllm.db'}")
        return
    with schema(require_postgres()) as url:
        # Its own application_name: the race test below finds this store's sessions by it.
        yield StoreConfig(url=f"{url}&application_name=ghostllm_test_{uuid.uuid4().hex[:12]}", pool_max_size=4)


async def active_admins(repo: AccountRepository) -> list[str]:
    users = (await repo.list_users(limit=100)).items
    return sorted(u.email for u in users if u.role is Role.ADMIN and u.is_active)


@pytest.mark.parametrize("case", REFUSALS, ids=REFUSAL_IDS)
def test_the_last_active_admin_is_kept_and_nothing_is_written(
    store_config: StoreConfig, case: tuple[str, Callable[[AccountRepository, str], Awaitable[object]], str | None]
) -> None:
    _, call, param = case

    async def body(repo: AccountRepository) -> None:
        admin = await repo.create_user("root@example.com", role="admin")
        await repo.create_user("someone@example.com")  # not an admin: no help
        before = await dump(repo.store)
        for ref in (admin.id, admin.email):
            with pytest.raises(LastAdmin) as exc:
                await call(repo, ref)
            err = exc.value
            assert err.message == "user root@example.com is the last active admin: make another user admin first"
            assert (err.http_status, err.grpc_code, err.code, err.param) == (
                409,
                grpc.StatusCode.FAILED_PRECONDITION,
                "last_admin",
                param,
            )
            assert err.error_type == "invalid_request_error"
        assert await dump(repo.store) == before  # no change, no audit row

    with_repo(store_config, body)


def test_changes_that_keep_the_admin_an_active_admin_pass(store_config: StoreConfig) -> None:
    async def body(repo: AccountRepository) -> None:
        admin = await repo.create_user("root@example.com", role="admin")
        updated = await repo.update_user(admin.id, username="root", role="admin", is_active=True, budget_limit=5.0)
        assert (updated.username, updated.role, updated.is_active) == ("root", Role.ADMIN, True)

    with_repo(store_config, body)


@pytest.mark.parametrize("case", REFUSALS, ids=REFUSAL_IDS)
def test_allowed_while_another_active_admin_remains(
    store_config: StoreConfig, case: tuple[str, Callable[[AccountRepository, str], Awaitable[object]], str | None]
) -> None:
    _, call, _ = case

    async def body(repo: AccountRepository) -> None:
        first = await repo.create_user("first@example.com", role="admin")
        await repo.create_user("second@example.com", role="admin")
        await call(repo, first.id)
        assert await active_admins(repo) == ["second@example.com"]
        # Now the second is the last one.
        with pytest.raises(LastAdmin, match=r"user second@example\.com is the last active admin"):
            await call(repo, "second@example.com")
        assert await active_admins(repo) == ["second@example.com"]

    with_repo(store_config, body)


@pytest.mark.parametrize("case", REFUSALS, ids=REFUSAL_IDS)
def test_an_inactive_admin_does_not_count(
    store_config: StoreConfig, case: tuple[str, Callable[[AccountRepository, str], Awaitable[object]], str | None]
) -> None:
    _, call, _ = case

    async def body(repo: AccountRepository) -> None:
        active = await repo.create_user("active@example.com", role="admin")
        dormant = await repo.create_user("dormant@example.com", role="admin")
        await repo.update_user(dormant.id, is_active=False)  # allowed: `active` remains
        with pytest.raises(LastAdmin, match=r"user active@example\.com is the last active admin"):
            await call(repo, active.id)
        # Reactivated, it counts again.
        await repo.update_user(dormant.id, is_active=True)
        await call(repo, active.id)
        assert await active_admins(repo) == ["dormant@example.com"]

    with_repo(store_config, body)


def test_other_users_are_unaffected_by_the_last_admin(store_config: StoreConfig) -> None:
    async def body(repo: AccountRepository) -> None:
        await repo.create_user("root@example.com", role="admin")
        user = await repo.create_user("user@example.com")
        viewer = await repo.create_user("viewer@example.com", role="viewer")
        gone = await repo.create_user("gone@example.com", role="admin")
        await repo.update_user(gone.id, is_active=False)

        assert (await repo.update_user(user.id, role="viewer")).role is Role.VIEWER
        assert not (await repo.update_user(viewer.id, is_active=False)).is_active
        assert (await repo.update_user(gone.id, role="user")).role is Role.USER  # an inactive admin demoted
        await repo.delete_user(user.id)
        await repo.delete_user(viewer.id)
        await repo.delete_user(gone.id)
        assert [u.email for u in (await repo.list_users()).items] == ["root@example.com"]

    with_repo(store_config, body)


def test_concurrent_demotions_from_two_stores_leave_one_admin(store_config: StoreConfig) -> None:
    """Two processes' stores (two workers, or a worker and the CLI), each demoting a
    different one of the two admins at once: exactly one of them succeeds."""

    async def body(repo: AccountRepository) -> None:
        first = await repo.create_user("first@example.com", role="admin")
        second = await repo.create_user("second@example.com", role="admin")
        async with make_store(store_config) as other_store:
            other = AccountRepository(other_store, bcrypt_cost=4)
            results = await asyncio.gather(
                repo.update_user(first.id, role="user"),
                other.update_user(second.id, is_active=False),
                return_exceptions=True,
            )
        refused = [r for r in results if isinstance(r, LastAdmin)]
        assert len(refused) == 1 and sum(isinstance(r, User) for r in results) == 1, results
        assert len(await active_admins(repo)) == 1

    with_repo(store_config, body)


def _waiting_on_locks(conninfo: str, application_name: str) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
            (application_name,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_postgresql_demotions_wait_for_each_other(store_config: StoreConfig) -> None:
    """The race made certain: while another session holds one admin row, both demotions
    start and must wait on the row locks; once it lets go, only one of them may pass.
    (Counting without FOR UPDATE, both would count two admins and both would commit.)"""
    if store_config.is_sqlite:
        pytest.skip("SQLite serializes writers at BEGIN IMMEDIATE: there is no row lock to wait on")
    application_name = store_config.url.rsplit("application_name=", 1)[1]
    conninfo = store_config.url.rsplit("&application_name=", 1)[0]

    async def body(repo: AccountRepository) -> None:
        first = await repo.create_user("first@example.com", role="admin")
        second = await repo.create_user("second@example.com", role="admin")
        holder = await psycopg.AsyncConnection.connect(conninfo)  # a transaction of its own
        try:
            await holder.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (first.id,))
            demotions = asyncio.gather(
                repo.update_user(first.id, role="user"),
                repo.delete_user(second.id),
                return_exceptions=True,
            )
            deadline = time.monotonic() + 10
            # Both must be inside their transactions, blocked, before the holder lets go.
            while await asyncio.to_thread(_waiting_on_locks, conninfo, application_name) < 2:
                assert time.monotonic() < deadline, "the demotions never waited on the admin rows"
                await asyncio.sleep(0.05)
            await holder.rollback()
            results = await demotions
        finally:
            await holder.close()
        assert sum(isinstance(r, LastAdmin) for r in results) == 1, results
        assert len(await active_admins(repo)) == 1

    with_repo(store_config, body)
