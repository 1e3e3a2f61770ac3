"""First start with an empty store: an admin user and one admin key, so the operator
can do anything at all. The key is written to `<data_dir>/admin-key` (mode 0600) and
shown once in the start-up banner; later starts point at the file."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from ghostllm.accounts.audit import Actor
from ghostllm.accounts.records import Role
from ghostllm.accounts.repository import AccountRepository
from ghostllm.config import Config
from ghostllm.errors import AlreadyExists
from ghostllm.store import make_store

ADMIN_EMAIL = "admin@localhost"
KEY_FILE = "admin-key"
BOOTSTRAP = Actor(via="bootstrap")


@dataclass(frozen=True)
class Bootstrap:
    # The admin key made just now (None: the store had users already).
    created_key: str | None
    key_file: Path


async def ensure_admin(repository: AccountRepository, data_dir: str) -> Bootstrap:
    key_file = Path(data_dir) / KEY_FILE
    if await repository.count_users():
        return Bootstrap(None, key_file)
    try:
        user = await repository.create_user(ADMIN_EMAIL, username="admin", role=Role.ADMIN, actor=BOOTSTRAP)
    except AlreadyExists:  # another replica started at the same moment and won
        return Bootstrap(None, key_file)
    new = await repository.create_key("bootstrap admin key", user=user.id, actor=BOOTSTRAP)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(new.secret + "\n")
    os.chmod(key_file, 0o600)  # an existing file keeps its mode through O_CREAT
    return Bootstrap(new.secret, key_file)


async def _run(config: Config) -> Bootstrap:
    async with make_store(config.store, max_size=1) as store:
        return await ensure_admin(
            AccountRepository(store, bcrypt_cost=config.accounts.bcrypt_cost), config.server.data_dir
        )


def ensure_admin_sync(config: Config) -> Bootstrap:
    return asyncio.run(_run(config))
