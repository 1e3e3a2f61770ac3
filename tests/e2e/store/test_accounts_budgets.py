"""Budget reset periods (migration 0004) in the account repository and the store, on SQLite
and on PostgreSQL (the store suite's fixtures), and in `ghostllm user|team|key`."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from ghostllm.accounts import AccountRepository
from ghostllm.config import StoreConfig
from ghostllm.errors import InvalidRequest
from ghostllm.store import ConstraintViolation, Store, make_store
from ghostllm.store.migrations import Migration, load_migrations
from tests.e2e.store import test_accounts_cli as accounts_cli
from tests.e2e.store.test_accounts import audit, dump, with_repo

TABLES = ("teams", "users", "api_keys")
# The CLI suite's fixture: `ghostllm ...` as a real process against a SQLite store in tmp_path.
cli = accounts_cli.cli


def test_periods_are_created_read_updated_and_cleared(store_config: StoreConfig) -> None:
    async def body(repo: AccountRepository) -> None:
        team = await repo.create_team("platform", budget_limit=100.0, budget_period="monthly")
        assert (team.budget_limit, team.budget_period) == (100.0, "monthly")
        assert await repo.get_team("platform") == team and await repo.list_teams() == [team]
        user = await repo.create_user(
            "a@example.com", team="platform", password="correct horse", budget_limit=5.0, budget_period="Weekly"
        )
        assert user.budget_period == "weekly"  # any case in, lower case stored
        assert await repo.get_user(user.id) == user
        assert (await repo.list_users()).items == (user,)
        new = await repo.create_key("k", user=user.id, budget_limit=1.5, budget_period="daily")
        assert new.key.budget_period == "daily" and await repo.get_key(new.key.id) == new.key
        assert await repo.list_keys() == [new.key]
        plain = await repo.create_key("plain", team="platform", budget_limit=2.0)
        assert plain.key.budget_period is None  # the default: the budget never resets

        # The authenticated principal sees all three levels' periods.
        match = await repo.find_key(new.secret)
        assert match is not None and match.key.budget_period == "daily"
        assert match.user is not None and match.user.budget_period == "weekly"
        assert match.team is not None and match.team.budget_period == "monthly"
        assert (await repo.find_user(user.id)) == user
        assert (await repo.check_login("a@example.com", "correct horse")) == user

        # Changed alone: nothing else moves.
        team2 = await repo.update_team(team.id, budget_period="DAILY")
        assert (team2.budget_period, team2.budget_limit, team2.name) == ("daily", 100.0, "platform")
        user2 = await repo.update_user(user.id, budget_period="monthly")
        assert (user2.budget_period, user2.budget_limit, user2.team_id) == ("monthly", 5.0, team.id)
        key2 = await repo.update_key(new.key.id, budget_period="weekly")
        assert (key2.budget_period, key2.budget_limit, key2.name) == ("weekly", 1.5, "k")
        # Cleared (None): the budget never resets, and is still there.
        assert (await repo.update_team(team.id, budget_period=None)).budget_period is None
        cleared = await repo.update_user(user.id, budget_period=None)
        assert (cleared.budget_period, cleared.budget_limit) == (None, 5.0)
        key3 = await repo.update_key(new.key.id, budget_period=None, budget_limit=None)
        assert (key3.budget_period, key3.budget_limit) == (None, None)
        # Other updates leave it alone.
        await repo.update_team(team.id, budget_period="weekly")
        assert (await repo.update_team(team.id, description="x")).budget_period == "weekly"
        assert (await repo.update_user(user.id, role="viewer")).budget_period is None

    with_repo(store_config, body)


def test_periods_are_audited(store_config: StoreConfig) -> None:
    async def body(repo: AccountRepository) -> None:
        team = await repo.create_team("t", budget_period="monthly")
        user = await repo.create_user("a@example.com", budget_period="weekly")
        key = (await repo.create_key("k", user=user.id, budget_period="daily")).key
        await repo.update_team(team.id, budget_period=None)
        await repo.update_user(user.id, budget_period="daily")
        await repo.update_key(key.id, budget_period="monthly")
        trail = {(action, target): detail for action, target, detail in await audit(repo.store)}
        assert trail["team.create", team.id]["budget_period"] == "monthly"
        assert trail["user.create", user.id]["budget_period"] == "weekly"
        assert trail["key.create", key.id]["budget_period"] == "daily"
        assert trail["team.update", team.id] == {"via": "cli", "budget_period": None}
        assert trail["user.update", user.id] == {"via": "cli", "budget_period": "daily"}
        assert trail["key.update", key.id] == {"via": "cli", "prefix": key.prefix, "budget_period": "monthly"}

    with_repo(store_config, body)


@pytest.mark.parametrize("bad", ["yearly", "", "hourly", "daily ", "x'); DROP TABLE users; --", "p" * 10_000])
def test_bad_periods_are_400_and_change_nothing(store_config: StoreConfig, bad: str) -> None:
    async def body(repo: AccountRepository) -> None:
        team = await repo.create_team("t")
        user = await repo.create_user("a@example.com")
        key = (await repo.create_key("k", user=user.id)).key
        before = await dump(repo.store)
        calls = [
            repo.create_team("t2", budget_period=bad),
            repo.create_user("b@example.com", budget_period=bad),
            repo.create_key("k2", user=user.id, budget_period=bad),
            repo.update_team(team.id, budget_period=bad),
            repo.update_user(user.id, budget_period=bad),
            repo.update_key(key.id, budget_period=bad),
        ]
        for call in calls:
            with pytest.raises(InvalidRequest) as exc:
                await call
            assert exc.value.param == "budget_period" and exc.value.http_status == 400
            assert exc.value.message == "budget_period: expected one of daily, weekly, monthly"
        assert await dump(repo.store) == before

    with_repo(store_config, body)


def _store(config: StoreConfig, body: Any) -> Any:
    async def run() -> Any:
        async with make_store(config) as store:
            return await body(store)

    return asyncio.run(run())


def test_the_store_itself_refuses_other_periods(store_config: StoreConfig) -> None:
    """The CHECK constraint holds for any writer, not only the repository."""

    async def body(store: Store) -> None:
        await store.migrate()
        team_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
        await store.execute("INSERT INTO teams (id, name, budget_period) VALUES (?, ?, ?)", (team_id, "t", "daily"))
        await store.execute("INSERT INTO users (id, email) VALUES (?, ?)", (user_id, "a@example.com"))
        await store.execute(
            "INSERT INTO api_keys (id, user_id, key_prefix, key_hash) VALUES (?, ?, ?, ?)",
            (str(uuid.uuid4()), user_id, "gk-abcdefgh", "0" * 64),
        )
        for table in TABLES:
            for period in ("daily", "weekly", "monthly", None):
                await store.execute(f"UPDATE {table} SET budget_period = ?", (period,))
            for bad in ("yearly", "DAILY", ""):
                with pytest.raises(ConstraintViolation):
                    await store.execute(f"UPDATE {table} SET budget_period = ?", (bad,))
            assert await store.fetch_all(f"SELECT budget_period FROM {table}") == [(None,)]

    _store(store_config, body)


def test_rows_from_before_0004_never_reset(store_config: StoreConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store at 0003 with accounts in it migrates to budget_period NULL everywhere: no
    existing budget starts resetting."""

    def up_to_0003(self: Store) -> tuple[Migration, ...]:
        return tuple(m for m in load_migrations(self.dialect) if m.version <= 3)

    monkeypatch.setattr(Store, "migrations", property(up_to_0003))

    async def old(repo: AccountRepository) -> tuple[str, str, str]:
        assert [m.version for m in (await repo.store.status()).applied] == [1, 2, 3]
        team_id, user_id, key_id = (str(uuid.uuid4()) for _ in range(3))
        await repo.store.execute("INSERT INTO teams (id, name, budget_limit) VALUES (?, ?, ?)", (team_id, "t", 10))
        await repo.store.execute(
            "INSERT INTO users (id, email, team_id, budget_limit) VALUES (?, ?, ?, ?)",
            (user_id, "a@example.com", team_id, 5),
        )
        await repo.store.execute(
            "INSERT INTO api_keys (id, user_id, key_prefix, key_hash, budget_limit) VALUES (?, ?, ?, ?, ?)",
            (key_id, user_id, "gk-abcdefgh", "0" * 64, 1),
        )
        return team_id, user_id, key_id

    team_id, user_id, key_id = with_repo(store_config, old)
    monkeypatch.undo()

    async def new(repo: AccountRepository) -> None:
        assert (await repo.store.status()).current
        assert 4 in {m.version for m in (await repo.store.status()).applied}
        team, user, key = await repo.get_team(team_id), await repo.get_user(user_id), await repo.get_key(key_id)
        assert (team.budget_limit, team.budget_period) == (10.0, None)
        assert (user.budget_limit, user.budget_period) == (5.0, None)
        assert (key.budget_limit, key.budget_period) == (1.0, None)
        assert (await repo.update_user(user_id, budget_period="monthly")).budget_period == "monthly"

    with_repo(store_config, new)


def test_cli_sets_shows_and_clears_periods(cli: Any) -> None:
    as_json = accounts_cli.as_json
    team = as_json(cli("team", "create", "platform", "--budget-limit", "100", "--budget-period", "monthly", "--json"))
    assert (team["budget_limit"], team["budget_period"]) == (100.0, "monthly")
    user = as_json(cli("user", "create", "--email", "a@example.com", "--budget-limit", "20", "--budget-period",
                       "weekly", "--json"))  # fmt: skip
    assert (user["budget_limit"], user["budget_period"]) == (20.0, "weekly")
    key = as_json(cli("key", "create", "--user", "a@example.com", "--name", "ci", "--budget-limit", "5",
                      "--budget-period", "daily", "--json"))  # fmt: skip
    assert (key["budget_limit"], key["budget_period"]) == (5.0, "daily")
    assert as_json(cli("key", "create", "--team", "platform", "--name", "svc", "--json"))["budget_period"] is None

    # The tables show the period next to the budget.
    for command, budget, period in (("team", "100.0", "monthly"), ("user", "20.0", "weekly"), ("key", "5.0", "daily")):
        lines = cli(command, "list").stdout.splitlines()
        (header,) = [line for line in lines if " budget " in line]
        assert header.index(" budget ") < header.index(" period "), header
        assert [line for line in lines if budget in line and period in line], lines

    team = as_json(cli("team", "update", "platform", "--budget-period", "weekly", "--json"))
    assert (team["budget_period"], team["budget_limit"]) == ("weekly", 100.0)
    team = as_json(cli("team", "update", "platform", "--no-budget-period", "--json"))
    assert (team["budget_period"], team["budget_limit"]) == (None, 100.0)
    user = as_json(cli("user", "update", "a@example.com", "--budget-period", "monthly", "--json"))
    assert user["budget_period"] == "monthly"
    user = as_json(cli("user", "update", "a@example.com", "--no-budget-period", "--json"))
    assert (user["budget_period"], user["budget_limit"]) == (None, 20.0)
    key = as_json(cli("key", "update", key["id"], "--budget-period", "monthly", "--json"))
    assert (key["budget_period"], key["budget_limit"]) == ("monthly", 5.0)
    key = as_json(cli("key", "update", key["id"], "--no-budget-period", "--no-budget-limit", "--json"))
    assert (key["budget_period"], key["budget_limit"]) == (None, None)

    # argparse's own checks: a period it does not know, and both setting and clearing.
    out = cli("team", "create", "t2", "--budget-period", "yearly", ok=False)
    assert out.returncode == 2 and "invalid choice: 'yearly'" in out.stderr
    out = cli("user", "update", "a@example.com", "--budget-period", "daily", "--no-budget-period", ok=False)
    assert out.returncode == 2 and "not allowed with argument" in out.stderr
    out = cli("key", "update", key["id"], "--budget-limit", "1", "--no-budget-limit", ok=False)
    assert out.returncode == 2 and "not allowed with argument" in out.stderr
