"""Users, teams and API keys over the store. Every input is validated first (an
InvalidRequest naming the field: nothing reaches SQL unchecked, and all SQL is
parameterized); every mutation writes an audit_log row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from datetime import datetime
from enum import Enum
from typing import Any

from ghostllm.accounts import rows, validation
from ghostllm.accounts.audit import CLI, Actor, record
from ghostllm.accounts.keys import NewKey, digest, generate_key, looks_like_key, visible_prefix
from ghostllm.accounts.passwords import hash_password, verify_password
from ghostllm.accounts.permissions import Permissions
from ghostllm.accounts.records import ApiKey, AuditPage, KeyMatch, KeyState, Role, Team, User, UserPage
from ghostllm.accounts.writes import update, write
from ghostllm.errors import AlreadyExists, InvalidRequest, LastAdmin, NotFound
from ghostllm.store import DuplicateError, Executor, Store


class Unset(Enum):
    """An update argument left out (None means: clear the value)."""

    UNSET = 0


UNSET = Unset.UNSET
MAX_PAGE_SIZE = 100
MAX_SEARCH = 100


def _check_page(page: int, limit: int) -> None:
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise InvalidRequest("page: expected a whole number >= 1", param="page", code="invalid_value")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit: expected 1 to {MAX_PAGE_SIZE}", param="limit", code="invalid_value")


def _like(term: str) -> str:
    escaped = term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _demoting_field(changes: dict[str, Any]) -> str | None:
    """The user update's field that would stop an active admin being one, if any."""
    if "role" in changes and changes["role"] != Role.ADMIN.value:
        return "role"
    if changes.get("is_active") is False:
        return "is_active"
    return None


class AccountRepository:
    def __init__(self, store: Store, *, bcrypt_cost: int = 12) -> None:
        self.store = store
        self.bcrypt_cost = bcrypt_cost
        self._dummy_hash: str | None = None

    # Teams

    async def create_team(
        self,
        name: str,
        *,
        description: str = "",
        budget_limit: float | None = None,
        rate_limit: int | None = None,
        tpm_limit: int | None = None,
        max_parallel: int | None = None,
        budget_period: str | None = None,
        actor: Actor = CLI,
    ) -> Team:
        name = validation.team_name(name)
        values = {
            "description": validation.text("description", description, max_length=validation.MAX_DESCRIPTION),
            "budget_limit": validation.money("budget_limit", budget_limit),
            "rate_limit": validation.limit("rate_limit", rate_limit),
            "tpm_limit": validation.limit("tpm_limit", tpm_limit),
            "max_parallel": validation.limit("max_parallel", max_parallel),
            "budget_period": validation.budget_period(budget_period),
        }
        team_id = str(uuid.uuid4())
        async with self.store.transaction() as tx:
            await write(
                tx,
                "INSERT INTO teams (id, name, description, budget_limit, rate_limit, tpm_limit, max_parallel,"
                " budget_period) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (team_id, name, *values.values()),
                duplicate=AlreadyExists(f"a team named {name!r} already exists", param="name"),
            )
            await record(tx, actor, "team.create", "team", team_id, {"name": name, **values})
        return await self.get_team(team_id)

    async def get_team(self, ref: str) -> Team:
        """By id or by name."""
        if validation.is_id(ref):
            found = await self.store.fetch_all(
                f"SELECT {rows.TEAM_COLUMNS} FROM teams WHERE id = ?", (validation.record_id("team", ref),)
            )
        else:
            found = await self.store.fetch_all(f"SELECT {rows.TEAM_COLUMNS} FROM teams WHERE name = ?", (ref,))
        if not found:
            raise NotFound(f"no team {ref!r}", param="team")
        return rows.team(found[0])

    async def list_teams(self) -> list[Team]:
        return [
            rows.team(r) for r in await self.store.fetch_all(f"SELECT {rows.TEAM_COLUMNS} FROM teams ORDER BY name")
        ]

    async def update_team(
        self,
        ref: str,
        *,
        name: str | Unset = UNSET,
        description: str | Unset = UNSET,
        budget_limit: float | Unset | None = UNSET,
        rate_limit: int | Unset | None = UNSET,
        tpm_limit: int | Unset | None = UNSET,
        max_parallel: int | Unset | None = UNSET,
        budget_period: str | Unset | None = UNSET,
        actor: Actor = CLI,
    ) -> Team:
        team = await self.get_team(ref)
        changes: dict[str, Any] = {}
        if name is not UNSET:
            changes["name"] = validation.team_name(name)
        if description is not UNSET:
            changes["description"] = validation.text("description", description, max_length=validation.MAX_DESCRIPTION)
        if budget_limit is not UNSET:
            changes["budget_limit"] = validation.money("budget_limit", budget_limit)
        if budget_period is not UNSET:
            changes["budget_period"] = validation.budget_period(budget_period)
        for field, value in (("rate_limit", rate_limit), ("tpm_limit", tpm_limit), ("max_parallel", max_parallel)):
            if value is not UNSET:
                changes[field] = validation.limit(field, value)
        if not changes:
            raise InvalidRequest("nothing to update")
        try:
            async with self.store.transaction() as tx:
                await update(tx, "teams", team.id, changes)
                await record(tx, actor, "team.update", "team", team.id, changes)
        except DuplicateError:
            raise AlreadyExists(f"a team named {changes['name']!r} already exists", param="name") from None
        return await self.get_team(team.id)

    async def delete_team(self, ref: str, *, actor: Actor = CLI) -> Team:
        """Its members stay (without a team); its service keys go."""
        team = await self.get_team(ref)
        async with self.store.transaction() as tx:
            await write(tx, "DELETE FROM teams WHERE id = ?", (team.id,))
            await record(tx, actor, "team.delete", "team", team.id, {"name": team.name})
        return team

    # Users

    async def create_user(
        self,
        email: str,
        *,
        username: str | None = None,
        role: str | Role = Role.USER,
        team: str | None = None,
        password: str | None = None,
        budget_limit: float | None = None,
        budget_period: str | None = None,
        actor: Actor = CLI,
    ) -> User:
        email = validation.email(email)
        values: dict[str, Any] = {
            "username": validation.username(username),
            "role": validation.role(role).value,
            "team_id": None if team is None else (await self.get_team(team)).id,
            "budget_limit": validation.money("budget_limit", budget_limit),
            "budget_period": validation.budget_period(budget_period),
        }
        password_hash = None if password is None else await hash_password(password, self.bcrypt_cost)
        user_id = str(uuid.uuid4())
        detail = {"email": email, **values, **({"password": True} if password is not None else {})}
        async with self.store.transaction() as tx:
            await write(
                tx,
                "INSERT INTO users (id, email, username, role, team_id, budget_limit, budget_period, password_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (user_id, email, *values.values(), password_hash),
                duplicate=AlreadyExists(f"a user with email {email!r} already exists", param="email"),
            )
            await record(tx, actor, "user.create", "user", user_id, detail)
        return await self.get_user(user_id)

    async def get_user(self, ref: str) -> User:
        """By id or by email."""
        if validation.is_id(ref):
            sql, param = f"SELECT {rows.USER_COLUMNS} FROM users WHERE id = ?", validation.record_id("user", ref)
        else:
            sql, param = f"SELECT {rows.USER_COLUMNS} FROM users WHERE email = ?", ref.lower()
        found = await self.store.fetch_all(sql, (param,))
        if not found:
            raise NotFound(f"no user {ref!r}", param="user")
        return rows.user(found[0])

    async def list_users(self, *, page: int = 1, limit: int = 20, search: str | None = None) -> UserPage:
        _check_page(page, limit)
        where, params = "", []
        if search:
            validation.text("search", search, max_length=MAX_SEARCH)
            where = " WHERE LOWER(email) LIKE ? ESCAPE '\\' OR LOWER(COALESCE(username, '')) LIKE ? ESCAPE '\\'"
            params = [_like(search), _like(search)]
        total = (await self.store.fetch_all(f"SELECT COUNT(*) FROM users{where}", params))[0][0]
        found = await self.store.fetch_all(
            f"SELECT {rows.USER_COLUMNS} FROM users{where} ORDER BY created_at, email LIMIT ? OFFSET ?",
            [*params, limit, (page - 1) * limit],
        )
        return UserPage(tuple(rows.user(r) for r in found), page, limit, int(total))

    async def update_user(
        self,
        ref: str,
        *,
        username: str | Unset | None = UNSET,
        role: str | Role | Unset = UNSET,
        team: str | Unset | None = UNSET,
        budget_limit: float | Unset | None = UNSET,
        budget_period: str | Unset | None = UNSET,
        is_active: bool | Unset = UNSET,
        password: str | Unset = UNSET,
        actor: Actor = CLI,
    ) -> User:
        """Refused (LastAdmin) when it would demote or deactivate the last active admin."""
        user = await self.get_user(ref)
        changes: dict[str, Any] = {}
        if username is not UNSET:
            changes["username"] = validation.username(username)
        if role is not UNSET:
            changes["role"] = validation.role(role).value
        if team is not UNSET:
            changes["team_id"] = None if team is None else (await self.get_team(team)).id
        if budget_limit is not UNSET:
            changes["budget_limit"] = validation.money("budget_limit", budget_limit)
        if budget_period is not UNSET:
            changes["budget_period"] = validation.budget_period(budget_period)
        if is_active is not UNSET:
            if not isinstance(is_active, bool):
                raise InvalidRequest("is_active: expected true or false", param="is_active", code="invalid_type")
            changes["is_active"] = is_active
        if password is not UNSET:
            changes["password_hash"] = await hash_password(password, self.bcrypt_cost)
        if not changes:
            raise InvalidRequest("nothing to update")
        demoting = _demoting_field(changes)
        async with self.store.transaction() as tx:
            if demoting is not None:
                await self._keep_an_admin(tx, user, param=demoting)
            await update(tx, "users", user.id, changes)
            await record(tx, actor, "user.update", "user", user.id, changes)
        return await self.get_user(user.id)

    async def delete_user(self, ref: str, *, actor: Actor = CLI) -> User:
        """Their keys go with them. Refused (LastAdmin) for the last active admin."""
        user = await self.get_user(ref)
        async with self.store.transaction() as tx:
            await self._keep_an_admin(tx, user)
            await write(tx, "DELETE FROM users WHERE id = ?", (user.id,))
            await record(tx, actor, "user.delete", "user", user.id, {"email": user.email})
        return user

    async def _keep_an_admin(self, tx: Executor, user: User, *, param: str | None = None) -> None:
        """Refuses (LastAdmin) to take away `user`'s active admin role when no other active
        admin would remain. Runs in the writing transaction before its first write, so a
        refusal leaves nothing behind, and reads the rows as they are now (not as `user`
        was read before the transaction began)."""
        # PostgreSQL (READ COMMITTED) would let two demotions each count the other as still
        # there: FOR UPDATE makes the second wait for the first and then re-read the rows it
        # changed. ORDER BY: every caller locks in the same order, so two never deadlock.
        # FOR UPDATE cannot go with COUNT(*), hence the ids. SQLite has no FOR UPDATE, and
        # needs none: BEGIN IMMEDIATE takes the database's write lock before this runs.
        lock = " ORDER BY id FOR UPDATE" if self.store.dialect == "postgresql" else ""
        found = await tx.fetch_all(
            f"SELECT id FROM users WHERE role = ? AND is_active = ?{lock}", (Role.ADMIN.value, True)
        )
        admins = {str(row[0]) for row in found}
        if user.id in admins and not admins - {user.id}:
            raise LastAdmin(user.email, param=param)

    # API keys

    async def create_key(
        self,
        name: str,
        *,
        user: str | None = None,
        team: str | None = None,
        permissions: Permissions | None = None,
        rate_limit: int | None = None,
        tpm_limit: int | None = None,
        max_parallel: int | None = None,
        budget_limit: float | None = None,
        expires_at: str | datetime | None = None,
        budget_period: str | None = None,
        actor: Actor = CLI,
    ) -> NewKey:
        """A key for a user, or a service key for a team (no human owner). The clear key
        is in the result and nowhere else, ever."""
        if (user is None) == (team is None):
            raise InvalidRequest("a key belongs to a user or to a team (give exactly one)", param="user")
        name = validation.text("name", name, max_length=validation.MAX_KEY_NAME, required=True)
        perms = permissions or Permissions()
        expires = validation.timestamp("expires_at", expires_at)
        values: dict[str, Any] = {
            "user_id": None if user is None else (await self.get_user(user)).id,
            "team_id": None if team is None else (await self.get_team(team)).id,
            "rate_limit": validation.limit("rate_limit", rate_limit),
            "tpm_limit": validation.limit("tpm_limit", tpm_limit),
            "max_parallel": validation.limit("max_parallel", max_parallel),
            "budget_limit": validation.money("budget_limit", budget_limit),
            "expires_at": None if expires is None else rows.stamp(expires),
            "budget_period": validation.budget_period(budget_period),
        }
        secret = generate_key()
        key_id, prefix = str(uuid.uuid4()), visible_prefix(secret)

        detail = {"name": name, "prefix": prefix, "permissions": perms.to_json(), **values}
        async with self.store.transaction() as tx:
            await write(
                tx,
                "INSERT INTO api_keys (id, name, key_prefix, key_hash, permissions, user_id, team_id, rate_limit,"
                " tpm_limit, max_parallel, budget_limit, expires_at, budget_period)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key_id, name, prefix, digest(secret), json.dumps(perms.to_json()), *values.values()),
            )
            await record(tx, actor, "key.create", "api_key", key_id, detail)
        return NewKey(await self.get_key(key_id), secret)

    async def get_key(self, key_id: str) -> ApiKey:
        key_id = validation.record_id("key", key_id)
        found = await self.store.fetch_all(f"SELECT {rows.KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        if not found:
            raise NotFound(f"no key {key_id!r}", param="key")
        return rows.api_key(found[0])

    async def list_keys(self, *, user: str | None = None, team: str | None = None) -> list[ApiKey]:
        where, params = "", []
        if user is not None:
            where, params = " WHERE user_id = ?", [(await self.get_user(user)).id]
        elif team is not None:
            where, params = " WHERE team_id = ?", [(await self.get_team(team)).id]
        found = await self.store.fetch_all(
            f"SELECT {rows.KEY_COLUMNS} FROM api_keys{where} ORDER BY created_at, id", params
        )
        return [rows.api_key(r) for r in found]

    async def update_key(
        self,
        key_id: str,
        *,
        name: str | Unset = UNSET,
        permissions: Permissions | Unset = UNSET,
        rate_limit: int | Unset | None = UNSET,
        tpm_limit: int | Unset | None = UNSET,
        max_parallel: int | Unset | None = UNSET,
        budget_limit: float | Unset | None = UNSET,
        expires_at: str | datetime | Unset | None = UNSET,
        is_active: bool | Unset = UNSET,
        budget_period: str | Unset | None = UNSET,
        actor: Actor = CLI,
        action: str = "key.update",
    ) -> ApiKey:
        key = await self.get_key(key_id)
        changes: dict[str, Any] = {}
        if name is not UNSET:
            changes["name"] = validation.text("name", name, max_length=validation.MAX_KEY_NAME, required=True)
        if permissions is not UNSET:
            changes["permissions"] = permissions.to_json()
        for field, value in (("rate_limit", rate_limit), ("tpm_limit", tpm_limit), ("max_parallel", max_parallel)):
            if value is not UNSET:
                changes[field] = validation.limit(field, value)
        if budget_limit is not UNSET:
            changes["budget_limit"] = validation.money("budget_limit", budget_limit)
        if budget_period is not UNSET:
            changes["budget_period"] = validation.budget_period(budget_period)
        if expires_at is not UNSET:
            expires = validation.timestamp("expires_at", expires_at)
            changes["expires_at"] = None if expires is None else rows.stamp(expires)
        if is_active is not UNSET:
            if not isinstance(is_active, bool):
                raise InvalidRequest("is_active: expected true or false", param="is_active", code="invalid_type")
            changes["is_active"] = is_active
        if not changes:
            raise InvalidRequest("nothing to update")

        stored = {k: json.dumps(v) if k == "permissions" else v for k, v in changes.items()}
        async with self.store.transaction() as tx:
            await update(tx, "api_keys", key.id, stored, updated_at=False)
            await record(tx, actor, action, "api_key", key.id, {"prefix": key.prefix, **changes})
        return await self.get_key(key.id)

    async def revoke_key(self, key_id: str, *, actor: Actor = CLI) -> ApiKey:
        """Kept (usage refers to it), never usable again."""
        return await self.update_key(key_id, is_active=False, actor=actor, action="key.revoke")

    async def find_key(self, secret: str, *, at: datetime | None = None) -> KeyMatch | None:
        """The key whose clear value is `secret`, with its owner and state; None when no
        key has that value (a malformed one never reaches the store)."""
        if not isinstance(secret, str) or not looks_like_key(secret):
            return None
        return await self.find_key_by_digest(digest(secret), at=at)

    async def find_key_by_digest(self, key_hash: str, *, at: datetime | None = None) -> KeyMatch | None:
        found = await self.store.fetch_all(f"SELECT {rows.KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,))
        if not found:
            return None
        key = rows.api_key(found[0])
        user = None if key.user_id is None else await self.get_user(key.user_id)
        team_id = key.team_id or (user.team_id if user else None)
        team = None if team_id is None else await self.get_team(team_id)
        state = key.state(at or rows.now())
        if state is KeyState.ACTIVE and user is not None and not user.is_active:
            state = KeyState.OWNER_INACTIVE
        return KeyMatch(key, user, team, state)

    async def find_user(self, user_id: str) -> User | None:
        """By id; None when there is none (a deleted user's token)."""
        if not validation.is_id(user_id):
            return None
        found = await self.store.fetch_all(f"SELECT {rows.USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return rows.user(found[0]) if found else None

    async def check_login(self, email: str, password: str) -> User | None:
        """The active user with this email and password; None otherwise (the same None,
        whichever part was wrong). bcrypt runs even for an unknown email, so timing
        does not tell which emails exist."""
        found = []
        if isinstance(email, str) and 0 < len(email) <= validation.MAX_EMAIL:
            found = await self.store.fetch_all(
                f"SELECT {rows.USER_COLUMNS}, password_hash FROM users WHERE email = ?", (email.strip().lower(),)
            )
        if self._dummy_hash is None:
            # Checked against when no user matches, at the same cost as a real one.
            self._dummy_hash = await hash_password("no such user here", self.bcrypt_cost)
        hashed = found[0][-1] if found and found[0][-1] else self._dummy_hash
        ok = isinstance(password, str) and await verify_password(password, hashed)
        if not found or not ok:
            return None
        user = rows.user(found[0][:-1])
        return user if user.is_active else None

    # The audit log

    async def list_audit(self, *, page: int = 1, limit: int = 20) -> AuditPage:
        """Newest first."""
        _check_page(page, limit)
        total = (await self.store.fetch_all("SELECT COUNT(*) FROM audit_log"))[0][0]
        found = await self.store.fetch_all(
            f"SELECT {rows.AUDIT_COLUMNS} FROM audit_log ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            (limit, (page - 1) * limit),
        )
        return AuditPage(tuple(rows.audit_entry(r) for r in found), page, limit, int(total))

    async def count_users(self) -> int:
        return int((await self.store.fetch_all("SELECT COUNT(*) FROM users"))[0][0])

    async def touch_keys(self, key_ids: Collection[str], at: datetime) -> None:
        """last_used_at for keys used since the last call: one statement for all of them
        (written in batches off the request path, so never audited)."""
        ids = list(key_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            await self.store.execute(
                f"UPDATE api_keys SET last_used_at = ? WHERE id IN ({marks})", (rows.stamp(at), *chunk)
            )
