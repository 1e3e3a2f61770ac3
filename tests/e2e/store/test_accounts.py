"""The account repository, on SQLite and on PostgreSQL (the store suite's fixtures)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from ghostllm.accounts import AccountRepository, KeyState, Permissions, Role
from ghostllm.accounts.keys import digest
from ghostllm.config import StoreConfig
from ghostllm.errors import AlreadyExists, InvalidRequest, NotFound
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.store import Store, make_store

T = TypeVar("T")
ACCOUNT_TABLES = ("teams", "users", "api_keys", "audit_log")


def with_repo(config: StoreConfig, body: Callable[[AccountRepository], Awaitable[T]]) -> T:
    async def run() -> T:
        async with make_store(config) as store:
            await store.migrate()
            return await body(AccountRepository(store, bcrypt_cost=4))

    return asyncio.run(run())


async def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    return {t: sorted(map(tuple, await store.fetch_all(f"SELECT * FROM {t}")), key=repr) for t in ACCOUNT_TABLES}


async def audit(store: Store) -> list[tuple[str, str, dict[str, Any]]]:
    found = await store.fetch_all("SELECT action, target_id, detail, created_at FROM audit_log")
    rows = [(a, str(t), d if isinstance(d, dict) else json.loads(d), str(c)) for a, t, d, c in found]
    return [(a, t, d) for a, t, d, _ in sorted(rows, key=lambda r: r[3])]


def test_users_create_get_list_update_delete(store_config: StoreConfig) -> None:
    async def body(repo: AccountRepository) -> None:
        team = await repo.create_team("platform", budget_limit=100.0, rate_limit=600)
        assert (team.name, team.budget_limit, team.rate_limit) == ("platform", 100.0, 600)
        alice = await repo.create_user(
            "Alice@Example.com", username="alice", team="platform", password="correct horse", budget_limit=12.5
        )
        assert (alice.email, alice.username, alice.role, alice.team_id) == (
            "alice@example.com",
            "alice",
            Role.USER,
            team.id,
        )
        assert alice.budget_limit == 12.5 and alice.is_active and alice.has_password
        assert alice.created_at.tzinfo is not None
        for i in range(4):
            await repo.create_user(f"user{i}@example.com", role="viewer")
        assert await repo.get_user(alice.id) == alice == await repo.get_user("ALICE@example.com")

        page = await repo.list_users(page=1, limit=2)
        assert (page.total, page.pages, len(page.items)) == (5, 3, 2)
        assert len((await repo.list_users(page=3, limit=2)).items) == 1
        found = await repo.list_users(search="ALI")
        assert [u.email for u in found.items] == ["alice@example.com"] and found.total == 1
        assert (await repo.list_users(search="%")).total == 0  # a LIKE wildcard is a literal

        updated = await repo.update_user(alice.email, role="admin", team=None, budget_limit=None, is_active=False)
        assert (updated.role, updated.team_id, updated.budget_limit, updated.is_active) == (
            Role.ADMIN,
            None,
            None,
            False,
        )
        assert updated.updated_at >= alice.updated_at

        hashes = await repo.store.fetch_all("SELECT password_hash FROM users WHERE id = ?", (alice.id,))
        assert hashes[0][0].startswith("$2b$04$") and "correct horse" not in hashes[0][0]

        assert (await repo.delete_user(alice.id)).id == alice.id
        with pytest.raises(NotFound, match="no user"):
            await repo.get_user(alice.id)
        assert (await repo.list_users()).total == 4

        actions = [a for a, _, _ in await audit(repo.store)]
        assert actions == ["team.create", "user.create", *["user.create"] * 4, "user.update", "user.delete"]

    with_repo(store_config, body)


def test_keys_are_stored_only_as_digests_and_found_by_value(store_config: StoreConfig) -> None:
    async def body(repo: AccountRepository) -> None:
        user = await repo.create_user("dev@example.com", password="s3cret-password")
        perms = Permissions(frozenset({Endpoint.CHAT, Endpoint.MODELS}), ("gpt-4",))
        new = await repo.create_key("ci", user=user.email, permissions=perms, rate_limit=60, tpm_limit=1000)
        assert new.secret.startswith("gk-") and len(new.secret) - 3 >= 43
        assert new.key.prefix == new.secret[:11] and new.key.user_id == user.id and not new.key.is_service_key
        assert (new.key.rate_limit, new.key.tpm_limit, new.key.permissions) == (60, 1000, perms)

        team = await repo.create_team("batch")
        service = await repo.create_key("svc", team="batch")
        assert service.key.is_service_key and service.key.team_id == team.id

        # The clear keys and the password appear nowhere in the store.
        raw = repr(await dump(repo.store))
        for secret in (new.secret, service.secret, new.secret[3:], "s3cret-password"):
            assert secret not in raw
        assert digest(new.secret) in raw  # what is kept

        match = await repo.find_key(new.secret)
        assert match is not None and match.usable and match.state is KeyState.ACTIVE
        assert match.key == new.key and match.user == user and match.team is None
        match = await repo.find_key(service.secret)
        assert match is not None and match.user is None and match.team == team and match.usable

        assert await repo.find_key(new.secret[:-1] + ("A" if new.secret[-1] != "A" else "B")) is None
        assert await repo.find_key("gk-' OR '1'='1") is None and await repo.find_key("") is None

        assert [k.id for k in await repo.list_keys()] == [new.key.id, service.key.id]
        assert [k.id for k in await repo.list_keys(user=user.id)] == [new.key.id]
        assert [k.id for k in await repo.list_keys(team="batch")] == [service.key.id]

    with_repo(store_config, body)


def test_revoked_expired_and_owner_inactive_keys_are_reported(store_config: StoreConfig) -> None:
    async def body(repo: AccountRepository) -> None:
        await repo.create_user("a@example.com")
        soon = datetime.now(UTC) + timedelta(hours=1)
        new = await repo.create_key("k", user="a@example.com", expires_at=soon.isoformat())
        assert new.key.expires_at is not None and abs(new.key.expires_at - soon) < timedelta(milliseconds=2)

        match = await repo.find_key(new.secret)
        assert match is not None and match.state is KeyState.ACTIVE
        later = await repo.find_key(new.secret, at=soon + timedelta(seconds=1))
        assert later is not None and later.state is KeyState.EXPIRED and not later.usable

        await repo.update_user("a@example.com", is_active=False)
        match = await repo.find_key(new.secret)
        assert match is not None and match.state is KeyState.OWNER_INACTIVE and not match.usable
        await repo.update_user("a@example.com", is_active=True)

        revoked = await repo.revoke_key(new.key.id)
        assert not revoked.is_active
        match = await repo.find_key(new.secret)
        assert match is not None and match.state is KeyState.REVOKED and not match.usable

        past = await repo.create_key("old", user="a@example.com", expires_at="2020-01-01T00:00:00Z")
        match = await repo.find_key(past.secret)
        assert match is not None and match.state is KeyState.EXPIRED

    with_repo(store_config, body)


def test_key_update_changes_permissions_and_limits(store_config: StoreConfig) -> None:
    async def body(repo: AccountRepository) -> None:
        await repo.create_user("a@example.com")
        new = await repo.create_key("k", user="a@example.com")
        assert new.key.permissions.allows(Endpoint.EMBEDDINGS, "anything")
        narrowed = Permissions.from_json({"chat_completions": True, "models": ["gpt-4"]})
        key = await repo.update_key(new.key.id, permissions=narrowed, rate_limit=5, budget_limit=2.5, name="renamed")
        assert (key.name, key.rate_limit, key.budget_limit) == ("renamed", 5, 2.5)
        assert key.permissions.allows(Endpoint.CHAT, "gpt-4") and not key.permissions.allows(Endpoint.CHAT, "gpt-5")
        assert not key.permissions.allows(Endpoint.EMBEDDINGS, "gpt-4")
        assert key.permissions.allows(Endpoint.MODELS)
        match = await repo.find_key(new.secret)
        assert match is not None and match.key.permissions == narrowed
        key = await repo.update_key(key.id, rate_limit=None, expires_at="2031-06-01")
        assert key.rate_limit is None and key.expires_at == datetime(2031, 6, 1, tzinfo=UTC)

    with_repo(store_config, body)


def test_duplicates_are_typed_errors(store_config: StoreConfig) -> None:
    async def body(repo: AccountRepository) -> None:
        await repo.create_team("platform")
        await repo.create_user("a@example.com")
        before = await dump(repo.store)
        with pytest.raises(AlreadyExists, match=r"a user with email 'a@example\.com' already exists") as exc:
            await repo.create_user("A@EXAMPLE.COM")
        assert exc.value.param == "email" and exc.value.http_status == 409
        with pytest.raises(AlreadyExists, match="a team named 'platform' already exists"):
            await repo.create_team("platform")
        assert await dump(repo.store) == before  # no audit row for what failed either

    with_repo(store_config, body)


INJECTION = "x'); DROP TABLE users; --"
BAD_INPUTS: list[tuple[str, Callable[[AccountRepository], Awaitable[object]], str]] = [
    ("email injection", lambda r: r.create_user(INJECTION), "email"),
    ("email quote", lambda r: r.create_user("o'brien@example.com' OR '1'='1"), "email"),
    ("email oversized", lambda r: r.create_user("a" * 250 + "@example.com"), "email"),
    ("username injection", lambda r: r.create_user("a@example.com", username=INJECTION), "username"),
    ("username oversized", lambda r: r.create_user("a@example.com", username="u" * 65), "username"),
    ("role", lambda r: r.create_user("a@example.com", role="root"), "role"),
    ("negative budget", lambda r: r.create_user("a@example.com", budget_limit=-1.0), "budget_limit"),
    ("nan budget", lambda r: r.create_user("a@example.com", budget_limit=float("nan")), "budget_limit"),
    ("short password", lambda r: r.create_user("a@example.com", password="short"), "password"),
    ("oversized password", lambda r: r.create_user("a@example.com", password="p" * 73), "password"),
    ("team injection", lambda r: r.create_team(INJECTION), "name"),
    ("team oversized", lambda r: r.create_team("t" * 65), "name"),
    ("team negative rpm", lambda r: r.create_team("t", rate_limit=-1), "rate_limit"),
    ("key oversized name", lambda r: r.create_key("n" * 101, user="owner@example.com"), "name"),
    ("key control chars", lambda r: r.create_key("a\x00b", user="owner@example.com"), "name"),
    ("key negative tpm", lambda r: r.create_key("k", user="owner@example.com", tpm_limit=-5), "tpm_limit"),
    ("key huge rpm", lambda r: r.create_key("k", user="owner@example.com", rate_limit=2**40), "rate_limit"),
    ("key bad expiry", lambda r: r.create_key("k", user="owner@example.com", expires_at=INJECTION), "expires_at"),
    ("key no owner", lambda r: r.create_key("k"), "user"),
    ("key update injection id", lambda r: r.update_key(INJECTION, name="x"), "key"),
    ("search oversized", lambda r: r.list_users(search="s" * 101), "search"),
    ("page size", lambda r: r.list_users(limit=1000), "limit"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_values_are_rejected_and_change_nothing(
    store_config: StoreConfig, case: tuple[str, Callable[[AccountRepository], Awaitable[object]], str]
) -> None:
    _, call, param = case

    async def body(repo: AccountRepository) -> None:
        await repo.create_user("owner@example.com")
        before = await dump(repo.store)
        with pytest.raises(InvalidRequest) as exc:
            await call(repo)
        assert exc.value.param == param and param in exc.value.message
        assert await dump(repo.store) == before

    with_repo(store_config, body)


def test_injection_shaped_free_text_is_stored_verbatim(store_config: StoreConfig) -> None:
    async def body(repo: AccountRepository) -> None:
        await repo.create_user("a@example.com")
        new = await repo.create_key(INJECTION, user="a@example.com")
        assert (await repo.get_key(new.key.id)).name == INJECTION
        assert (await repo.list_users(search=INJECTION)).total == 0
        with pytest.raises(NotFound):
            await repo.get_user(INJECTION)
        with pytest.raises(NotFound):
            await repo.get_team(INJECTION)
        assert (await repo.list_users()).total == 1  # the table is still there

    with_repo(store_config, body)


def test_every_mutation_is_audited_without_secrets(store_config: StoreConfig) -> None:
    async def body(repo: AccountRepository) -> None:
        team = await repo.create_team("t")
        user = await repo.create_user("a@example.com", password="first-password", team="t")
        await repo.update_user(user.id, password="second-password")
        new = await repo.create_key("k", user=user.id)
        await repo.update_key(new.key.id, rate_limit=1)
        await repo.revoke_key(new.key.id)
        await repo.delete_user(user.id)
        await repo.delete_team(team.id)

        trail = await audit(repo.store)
        assert [(a, t) for a, t, _ in trail] == [
            ("team.create", team.id),
            ("user.create", user.id),
            ("user.update", user.id),
            ("key.create", new.key.id),
            ("key.update", new.key.id),
            ("key.revoke", new.key.id),
            ("user.delete", user.id),
            ("team.delete", team.id),
        ]
        assert all(d["via"] == "cli" for _, _, d in trail)
        assert trail[1][2]["email"] == "a@example.com" and trail[2][2] == {"via": "cli", "password_hash": "(changed)"}
        assert trail[3][2]["prefix"] == new.key.prefix
        raw = repr(await repo.store.fetch_all("SELECT * FROM audit_log"))
        for secret in ("first-password", "second-password", new.secret, digest(new.secret), "$2b$"):
            assert secret not in raw

    with_repo(store_config, body)
