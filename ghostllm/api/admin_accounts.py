"""The admin API's users, teams and API keys (/admin/users, /admin/teams, /admin/keys).

The repository validates every value (a 400 naming the field) and writes the audit
row with each change; here requests become repository calls, and every change is
announced so each worker's key and user caches forget what it changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ghostllm.accounts.permissions import Permissions
from ghostllm.accounts.records import Role
from ghostllm.accounts.repository import UNSET, AccountRepository
from ghostllm.accounts.validation import record_id
from ghostllm.api import admin_messages as msg
from ghostllm.api.admin_access import actor, admitted
from ghostllm.api.boundary import unary
from ghostllm.cluster.changes import ACCOUNTS
from ghostllm.errors import InvalidRequest
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.ledger.spend import with_current_spend
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.v1 import admin_pb2

READ, WRITE = Endpoint.ADMIN_READ, Endpoint.ADMIN_WRITE
# What an update's `clear` may name (as the proto's comments list them).
USER_CLEARABLE = ("budget_limit", "budget_period", "team_id", "username")
LIMITS = ("rate_limit", "tpm_limit", "max_parallel")
TEAM_CLEARABLE = ("budget_limit", "budget_period", *LIMITS)
KEY_CLEARABLE = ("budget_limit", "budget_period", "expires_at", *LIMITS)


def _permissions(request: object) -> Permissions | None:
    data = msg.permissions(request)
    return None if data is UNSET else Permissions.from_json(data)


class AccountsAdmin:
    pipeline: Pipeline
    accounts: AccountRepository
    changed: Callable[[str], Awaitable[None]]

    # Users

    @unary
    async def ListUsers(self, request: admin_pb2.ListUsersRequest, rc: RequestContext) -> admin_pb2.ListUsersResponse:
        async with admitted(self.pipeline, rc, READ):
            page = await self.accounts.list_users(**msg.page_args(request), search=msg.optional(request, "search"))
            users = await with_current_spend(self.accounts.store, "user", page.items)
            return admin_pb2.ListUsersResponse(users=[msg.user(u) for u in users], pagination=msg.pagination(page))

    @unary
    async def CreateUser(self, request: admin_pb2.CreateUserRequest, rc: RequestContext) -> admin_pb2.User:
        async with admitted(self.pipeline, rc, WRITE) as p:
            created = await self.accounts.create_user(
                request.email,
                username=msg.optional(request, "username"),
                role=msg.optional(request, "role") or Role.USER,
                team=msg.id_field(request, "team_id"),
                password=msg.optional(request, "password"),
                budget_limit=msg.optional(request, "budget_limit"),
                budget_period=msg.optional(request, "budget_period"),
                actor=actor(p, rc),
            )
            await self.changed(ACCOUNTS)
            return msg.user(created)

    @unary
    async def GetUser(self, request: admin_pb2.GetUserRequest, rc: RequestContext) -> admin_pb2.User:
        async with admitted(self.pipeline, rc, READ):
            found = await self.accounts.get_user(record_id("id", request.id))
            return msg.user((await with_current_spend(self.accounts.store, "user", [found]))[0])

    @unary
    async def UpdateUser(self, request: admin_pb2.UpdateUserRequest, rc: RequestContext) -> admin_pb2.User:
        async with admitted(self.pipeline, rc, WRITE) as p:
            clear = msg.cleared(request, USER_CLEARABLE)
            updated = await self.accounts.update_user(
                record_id("id", request.id),
                username=msg.given(request, "username", clear),
                role=msg.given(request, "role"),
                team=msg.given_id(request, "team_id", clear),
                budget_limit=msg.given(request, "budget_limit", clear),
                budget_period=msg.given(request, "budget_period", clear),
                is_active=msg.given(request, "is_active"),
                password=msg.given(request, "password"),
                actor=actor(p, rc),
            )
            await self.changed(ACCOUNTS)
            return msg.user((await with_current_spend(self.accounts.store, "user", [updated]))[0])

    @unary
    async def DeleteUser(self, request: admin_pb2.DeleteRequest, rc: RequestContext) -> admin_pb2.Deleted:
        async with admitted(self.pipeline, rc, WRITE) as p:
            gone = await self.accounts.delete_user(record_id("id", request.id), actor=actor(p, rc))
            await self.changed(ACCOUNTS)
            return admin_pb2.Deleted(id=gone.id, deleted=True)

    # Teams

    @unary
    async def ListTeams(self, request: admin_pb2.ListTeamsRequest, rc: RequestContext) -> admin_pb2.ListTeamsResponse:
        async with admitted(self.pipeline, rc, READ):
            teams = await with_current_spend(self.accounts.store, "team", await self.accounts.list_teams())
            return admin_pb2.ListTeamsResponse(teams=[msg.team(t) for t in teams])

    @unary
    async def CreateTeam(self, request: admin_pb2.CreateTeamRequest, rc: RequestContext) -> admin_pb2.Team:
        async with admitted(self.pipeline, rc, WRITE) as p:
            created = await self.accounts.create_team(
                request.name,
                description=msg.optional(request, "description") or "",
                budget_limit=msg.optional(request, "budget_limit"),
                budget_period=msg.optional(request, "budget_period"),
                **{field: msg.optional(request, field) for field in LIMITS},
                actor=actor(p, rc),
            )
            await self.changed(ACCOUNTS)
            return msg.team(created)

    @unary
    async def UpdateTeam(self, request: admin_pb2.UpdateTeamRequest, rc: RequestContext) -> admin_pb2.Team:
        async with admitted(self.pipeline, rc, WRITE) as p:
            clear = msg.cleared(request, TEAM_CLEARABLE)
            updated = await self.accounts.update_team(
                record_id("id", request.id),
                name=msg.given(request, "name"),
                description=msg.given(request, "description"),
                budget_limit=msg.given(request, "budget_limit", clear),
                budget_period=msg.given(request, "budget_period", clear),
                **{field: msg.given(request, field, clear) for field in LIMITS},
                actor=actor(p, rc),
            )
            await self.changed(ACCOUNTS)
            return msg.team((await with_current_spend(self.accounts.store, "team", [updated]))[0])

    @unary
    async def DeleteTeam(self, request: admin_pb2.DeleteRequest, rc: RequestContext) -> admin_pb2.Deleted:
        async with admitted(self.pipeline, rc, WRITE) as p:
            gone = await self.accounts.delete_team(record_id("id", request.id), actor=actor(p, rc))
            await self.changed(ACCOUNTS)
            return admin_pb2.Deleted(id=gone.id, deleted=True)

    # API keys

    @unary
    async def ListKeys(self, request: admin_pb2.ListKeysRequest, rc: RequestContext) -> admin_pb2.ListKeysResponse:
        async with admitted(self.pipeline, rc, READ):
            user, team = msg.id_field(request, "user_id"), msg.id_field(request, "team_id")
            if user is not None and team is not None:
                raise InvalidRequest("give user_id or team_id, not both", param="team_id", code="invalid_value")
            keys = await self.accounts.list_keys(user=user, team=team)
            keys = await with_current_spend(self.accounts.store, "API key", keys)
            return admin_pb2.ListKeysResponse(keys=[msg.api_key(k) for k in keys])

    @unary
    async def CreateKey(self, request: admin_pb2.CreateKeyRequest, rc: RequestContext) -> admin_pb2.CreatedKey:
        async with admitted(self.pipeline, rc, WRITE) as p:
            new = await self.accounts.create_key(
                request.name,
                user=msg.id_field(request, "user_id"),
                team=msg.id_field(request, "team_id"),
                permissions=_permissions(request),
                budget_limit=msg.optional(request, "budget_limit"),
                budget_period=msg.optional(request, "budget_period"),
                expires_at=msg.optional(request, "expires_at"),
                **{field: msg.optional(request, field) for field in LIMITS},
                actor=actor(p, rc),
            )
            await self.changed(ACCOUNTS)
            key = new.key
            return msg.fill(admin_pb2.CreatedKey, key.to_dict(), key=new.secret)

    @unary
    async def UpdateKey(self, request: admin_pb2.UpdateKeyRequest, rc: RequestContext) -> admin_pb2.ApiKey:
        async with admitted(self.pipeline, rc, WRITE) as p:
            clear = msg.cleared(request, KEY_CLEARABLE)
            permissions = _permissions(request)
            updated = await self.accounts.update_key(
                record_id("id", request.id),
                name=msg.given(request, "name"),
                permissions=UNSET if permissions is None else permissions,
                budget_limit=msg.given(request, "budget_limit", clear),
                budget_period=msg.given(request, "budget_period", clear),
                expires_at=msg.given(request, "expires_at", clear),
                is_active=msg.given(request, "is_active"),
                **{field: msg.given(request, field, clear) for field in LIMITS},
                actor=actor(p, rc),
            )
            await self.changed(ACCOUNTS)
            return msg.api_key((await with_current_spend(self.accounts.store, "API key", [updated]))[0])

    @unary
    async def RevokeKey(self, request: admin_pb2.RevokeKeyRequest, rc: RequestContext) -> admin_pb2.ApiKey:
        async with admitted(self.pipeline, rc, WRITE) as p:
            revoked = await self.accounts.revoke_key(record_id("id", request.id), actor=actor(p, rc))
            await self.changed(ACCOUNTS)
            return msg.api_key((await with_current_spend(self.accounts.store, "API key", [revoked]))[0])
