"""Accounts in a running stack's store, made from the test process (the store is the
stack's own SQLite file or PostgreSQL schema): what an operator's CLI would do."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from ghostllm.accounts.permissions import Permissions
from ghostllm.accounts.repository import AccountRepository
from ghostllm.config import StoreConfig, default_store_url
from ghostllm.store import make_store

T = TypeVar("T")


def stack_store(config: dict[str, Any]) -> StoreConfig:
    url = config.get("store", {}).get("url") or default_store_url(str(Path(config["server"]["data_dir"])))
    return StoreConfig(url=url, pool_min_size=0, pool_max_size=1)


class Accounts:
    def __init__(self, store: StoreConfig) -> None:
        self.store = store

    def run(self, work: Callable[[AccountRepository], Awaitable[T]]) -> T:
        async def go() -> T:
            async with make_store(self.store) as store:
                return await work(AccountRepository(store, bcrypt_cost=4))

        return asyncio.run(go())

    def team(
        self,
        name: str | None = None,
        *,
        budget_limit: float | None = None,
        budget_period: str | None = None,
        **fields: Any,
    ) -> str:
        """A new team's id (a unique name unless given); `fields` as create_team takes them
        (description, rate_limit, tpm_limit, max_parallel)."""
        name = name or f"team-{uuid.uuid4().hex[:10]}"
        made = self.run(lambda r: r.create_team(name, budget_limit=budget_limit, budget_period=budget_period, **fields))
        return made.id

    def user(
        self,
        role: str = "user",
        *,
        budget_limit: float | None = None,
        budget_period: str | None = None,
        **fields: Any,
    ) -> str:
        """A new user's id; `fields` as create_user takes them (team: a name or id, password, ...)."""
        email = f"{role}-{uuid.uuid4().hex[:10]}@example.com"
        return self.run(
            lambda r: r.create_user(email, role=role, budget_limit=budget_limit, budget_period=budget_period, **fields)
        ).id

    def key(
        self,
        user: str | None = None,
        *,
        team: str | None = None,
        endpoints: list[str] | None = None,
        models: list[str] | None = None,
        budget_limit: float | None = None,
        budget_period: str | None = None,
        **fields: Any,
    ) -> tuple[str, str]:
        """(key id, clear key) for `user` (a new user-role user when neither is given), or a
        service key for `team`; `fields` as create_key takes them (rate_limit, expires_at, ...)."""
        if user is None and team is None:
            user = self.user()
        perms = Permissions.from_names(endpoints, models)
        new = self.run(
            lambda r: r.create_key(
                "test key",
                user=user,
                team=team,
                permissions=perms,
                budget_limit=budget_limit,
                budget_period=budget_period,
                **fields,
            )
        )
        return new.key.id, new.secret
