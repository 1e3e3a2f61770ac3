"""`ghostllm user|team|key ...`: accounts managed against the configured store directly
(no server needed). An embedded SQLite store is migrated first, as serve does; a
PostgreSQL one must be current (`ghostllm migrate`). Tables by default, `--json` for
scripts; a failure is one line on stderr and a non-zero exit (cli.main maps errors).

Heavy imports (store, accounts, rich) happen inside the commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ghostllm.cli_output import leaf_maker, print_json, say, table

if TYPE_CHECKING:
    from ghostllm.accounts import AccountRepository, ApiKey, Team, User

T = TypeVar("T")


def _run(args: argparse.Namespace, body: Callable[[AccountRepository], Awaitable[T]], *, announce: bool = False) -> T:
    """`body` against the store; `announce`: it changed accounts, so tell running workers
    over Redis when it is configured (else their key caches expire within seconds)."""
    import asyncio

    from ghostllm.accounts import AccountRepository
    from ghostllm.cluster.changes import ACCOUNTS, ChangeFeed
    from ghostllm.config import load_config
    from ghostllm.store import make_store
    from ghostllm.store.startup import ensure_schema

    config = load_config(args.config)

    async def run() -> T:
        async with make_store(config.store, max_size=2) as store:
            for m in await ensure_schema(store):
                print(f"store: applied migration {m.version:04d}_{m.name}", file=sys.stderr)
            result = await body(AccountRepository(store, bcrypt_cost=config.accounts.bcrypt_cost))
        if announce and config.redis.url:
            feed = ChangeFeed(config.redis)
            await feed.publish(ACCOUNTS)
            await feed.close()
        return result

    return asyncio.run(run())


def _s(value: object) -> str:
    return "-" if value is None else str(value)


def _users_table(users: list[User], title: str = "users") -> None:
    columns = ["id", "email", "username", "role", "team", "budget", "period", "active"]
    rows = []
    for u in users:
        budget = [_s(u.budget_limit), _s(u.budget_period)]
        rows.append(
            [u.id, u.email, _s(u.username), u.role.value, _s(u.team_id), *budget, "yes" if u.is_active else "no"]
        )
    table(title, columns, rows)


def _teams_table(teams: list[Team], title: str = "teams") -> None:
    columns = ["id", "name", "budget", "period", "rpm", "tpm", "parallel"]
    rows = [
        [t.id, t.name, _s(t.budget_limit), _s(t.budget_period), _s(t.rate_limit), _s(t.tpm_limit), _s(t.max_parallel)]
        for t in teams
    ]
    table(title, columns, rows)


def _keys_table(keys: list[ApiKey], owners: dict[str, str], title: str = "keys") -> None:
    from ghostllm.accounts.rows import now

    columns = ["id", "name", "prefix", "owner", "permissions", "rpm", "tpm", "budget", "period", "expires", "state"]
    at = now()
    rows = []
    for k in keys:
        perms = k.permissions.to_json()
        allowed = ",".join(_SHORT[flag] for flag, on in perms.items() if on is True) or "none"
        models = ",".join(k.permissions.models) if k.permissions.models is not None else "any model"
        owner = owners.get(k.user_id or "") or f"team {owners.get(k.team_id or '', k.team_id)}"
        expires = k.expires_at.strftime("%Y-%m-%d %H:%M") if k.expires_at else "-"
        row = [k.id, k.name, k.prefix + "...", owner, f"{allowed}; {models}", _s(k.rate_limit), _s(k.tpm_limit)]
        rows.append([*row, _s(k.budget_limit), _s(k.budget_period), expires, k.state(at).value])
    table(title, columns, rows)


_SHORT = {"chat_completions": "chat", "completions": "completions", "embeddings": "embeddings", "list_models": "models"}


def _password(args: argparse.Namespace) -> str | None:
    if not args.password_stdin:
        return None
    from ghostllm.errors import InvalidRequest

    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise InvalidRequest("password: nothing on stdin", param="password")
    return line


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


# Users


def _user_create(args: argparse.Namespace) -> int:
    password = _password(args)

    async def body(repo: AccountRepository) -> User:
        return await repo.create_user(
            args.email,
            username=args.username,
            role=args.role,
            team=args.team,
            password=password,
            budget_limit=args.budget_limit,
            budget_period=args.budget_period,
        )

    user = _run(args, body, announce=True)
    say(args, user.to_dict(), f"created user {user.email} ({user.id}), role {user.role.value}")
    return 0


def _user_list(args: argparse.Namespace) -> int:
    page = _run(args, lambda repo: repo.list_users(page=args.page, limit=args.limit, search=args.search))
    if args.json:
        pagination = {"page": page.page, "limit": page.limit, "total": page.total, "pages": page.pages}
        print_json({"users": [u.to_dict() for u in page.items], "pagination": pagination})
    else:
        _users_table(list(page.items), f"users (page {page.page} of {max(page.pages, 1)}, {page.total} in all)")
    return 0


def _user_update(args: argparse.Namespace) -> int:
    from ghostllm.accounts.repository import UNSET

    password = _password(args)
    changes: dict[str, Any] = {}
    for name in ("username", "role", "team", "budget_limit", "budget_period"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    for flag, name in (("no_team", "team"), ("no_budget_limit", "budget_limit"), ("no_budget_period", "budget_period")):
        if getattr(args, flag):
            changes[name] = None
    if args.active is not None:
        changes["is_active"] = args.active
    changes["password"] = UNSET if password is None else password

    user = _run(args, lambda repo: repo.update_user(args.user, **changes), announce=True)
    say(args, user.to_dict(), f"updated user {user.email} ({user.id})")
    return 0


def _user_delete(args: argparse.Namespace) -> int:
    user = _run(args, lambda repo: repo.delete_user(args.user), announce=True)
    say(args, {"deleted": user.to_dict()}, f"deleted user {user.email} ({user.id}) and their keys")
    return 0


# Teams


def _team_create(args: argparse.Namespace) -> int:
    async def body(repo: AccountRepository) -> Team:
        return await repo.create_team(
            args.name,
            description=args.description,
            budget_limit=args.budget_limit,
            budget_period=args.budget_period,
            rate_limit=args.rpm,
            tpm_limit=args.tpm,
            max_parallel=args.max_parallel,
        )

    team = _run(args, body, announce=True)
    say(args, team.to_dict(), f"created team {team.name} ({team.id})")
    return 0


def _team_list(args: argparse.Namespace) -> int:
    teams = _run(args, lambda repo: repo.list_teams())
    if args.json:
        print_json({"teams": [t.to_dict() for t in teams]})
    else:
        _teams_table(teams)
    return 0


def _team_update(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    for name, field in (("name", "name"), ("description", "description"), ("budget_limit", "budget_limit"),
                        ("budget_period", "budget_period"), ("rpm", "rate_limit"), ("tpm", "tpm_limit"),
                        ("max_parallel", "max_parallel")):  # fmt: skip
        if getattr(args, name) is not None:
            changes[field] = getattr(args, name)
    for flag, field in (("no_budget_limit", "budget_limit"), ("no_budget_period", "budget_period"),
                        ("no_rpm", "rate_limit"), ("no_tpm", "tpm_limit")):  # fmt: skip
        if getattr(args, flag):
            changes[field] = None
    team = _run(args, lambda repo: repo.update_team(args.team, **changes), announce=True)
    say(args, team.to_dict(), f"updated team {team.name} ({team.id})")
    return 0


def _team_delete(args: argparse.Namespace) -> int:
    team = _run(args, lambda repo: repo.delete_team(args.team), announce=True)
    say(
        args,
        {"deleted": team.to_dict()},
        f"deleted team {team.name} ({team.id}) and its service keys; its members have no team now",
    )
    return 0


# Keys


def _key_create(args: argparse.Namespace) -> int:
    from ghostllm.accounts import NewKey, Permissions

    permissions = Permissions.from_names(_csv(args.endpoints), _csv(args.models))

    async def body(repo: AccountRepository) -> NewKey:
        return await repo.create_key(
            args.name,
            user=args.user,
            team=args.team,
            permissions=permissions,
            rate_limit=args.rpm,
            tpm_limit=args.tpm,
            max_parallel=args.max_parallel,
            budget_limit=args.budget_limit,
            budget_period=args.budget_period,
            expires_at=args.expires,
        )

    new = _run(args, body, announce=True)
    if args.json:
        print_json({**new.key.to_dict(), "key": new.secret})
    else:
        owner = f"user {new.key.user_id}" if new.key.user_id else f"team {new.key.team_id} (service key)"
        print(f"created key {new.key.name!r} ({new.key.id}) for {owner}:")
        print(new.secret)
        print("Store it now: it is not shown again (only its digest is kept).")
    return 0


def _key_list(args: argparse.Namespace) -> int:
    async def body(repo: AccountRepository) -> tuple[list[ApiKey], dict[str, str]]:
        keys = await repo.list_keys(user=args.user, team=args.team)
        owners = {t.id: t.name for t in await repo.list_teams()}
        for user_id in {k.user_id for k in keys if k.user_id}:
            owners[user_id] = (await repo.get_user(user_id)).email
        return keys, owners

    keys, owners = _run(args, body)
    if args.json:
        print_json({"keys": [k.to_dict() for k in keys]})
    else:
        _keys_table(keys, owners)
    return 0


def _key_update(args: argparse.Namespace) -> int:
    from ghostllm.accounts import Permissions
    from ghostllm.accounts.permissions import ENDPOINT_NAMES

    changes: dict[str, Any] = {}
    for arg, name in (("name", "name"), ("rpm", "rate_limit"), ("tpm", "tpm_limit"), ("max_parallel", "max_parallel")):
        if getattr(args, arg) is not None:
            changes[name] = getattr(args, arg)
    if args.budget_limit is not None:
        changes["budget_limit"] = args.budget_limit
    if args.budget_period is not None:
        changes["budget_period"] = args.budget_period
    if args.no_budget_limit:
        changes["budget_limit"] = None
    if args.no_budget_period:
        changes["budget_period"] = None
    if args.expires is not None:
        changes["expires_at"] = args.expires
    if args.no_expiry:
        changes["expires_at"] = None
    if args.active is not None:
        changes["is_active"] = args.active

    async def body(repo: AccountRepository) -> ApiKey:
        if args.endpoints is not None or args.models is not None or args.all_models:
            current = (await repo.get_key(args.key)).permissions
            names = {v: k for k, v in ENDPOINT_NAMES.items()}
            endpoints = _csv(args.endpoints) or [names[e] for e in current.endpoints]
            models = None if args.all_models else _csv(args.models) if args.models is not None else current.models
            changes["permissions"] = Permissions.from_names(endpoints, None if models is None else list(models))
        return await repo.update_key(args.key, **changes)

    key = _run(args, body, announce=True)
    say(args, key.to_dict(), f"updated key {key.name!r} ({key.id})")
    return 0


def _key_revoke(args: argparse.Namespace) -> int:
    key = _run(args, lambda repo: repo.revoke_key(args.key), announce=True)
    say(args, key.to_dict(), f"revoked key {key.name!r} ({key.id}, {key.prefix}...)")
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The user, team and key commands; `common` carries --config."""
    leaf = leaf_maker(common)

    def active(p: argparse.ArgumentParser) -> None:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--active", dest="active", action="store_true", default=None, help="enable")
        g.add_argument("--inactive", dest="active", action="store_false", help="disable")

    # validation.BUDGET_PERIODS (not imported here: the command line starts light).
    periods = ["daily", "weekly", "monthly"]

    def budget(p: argparse.ArgumentParser, *, update: bool = False) -> None:
        """--budget-limit and --budget-period; an update also has their --no- forms (to clear)."""
        if not update:
            p.add_argument("--budget-limit", type=float, help="USD")
            p.add_argument("--budget-period", choices=periods, help="when the budget resets (default: never)")
            return
        g = p.add_mutually_exclusive_group()
        g.add_argument("--budget-limit", type=float, help="USD")
        g.add_argument("--no-budget-limit", action="store_true", help="no budget")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--budget-period", choices=periods, help="when the budget resets")
        g.add_argument("--no-budget-period", action="store_true", help="the budget never resets")

    roles = ["admin", "user", "viewer"]
    users = sub.add_parser("user", help="manage users").add_subparsers(dest="action", required=True)
    p = leaf(users, "create", _user_create, "create a user")
    p.add_argument("--email", required=True)
    p.add_argument("--username")
    p.add_argument("--role", choices=roles, default="user")
    p.add_argument("--team", help="team name or id")
    p.add_argument("--password-stdin", action="store_true", help="read a password (one line) from stdin")
    budget(p)
    p = leaf(users, "list", _user_list, "list users")
    p.add_argument("--search", help="part of an email or username")
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--limit", type=int, default=20)
    p = leaf(users, "update", _user_update, "change a user")
    p.add_argument("user", metavar="ID_OR_EMAIL")
    p.add_argument("--username")
    p.add_argument("--role", choices=roles)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--team", help="team name or id")
    g.add_argument("--no-team", action="store_true", help="remove from their team")
    budget(p, update=True)
    p.add_argument("--password-stdin", action="store_true", help="set a password read (one line) from stdin")
    active(p)
    p = leaf(users, "delete", _user_delete, "delete a user and their keys")
    p.add_argument("user", metavar="ID_OR_EMAIL")

    teams = sub.add_parser("team", help="manage teams").add_subparsers(dest="action", required=True)
    p = leaf(teams, "create", _team_create, "create a team")
    p.add_argument("name")
    p.add_argument("--description", default="")
    budget(p)
    p.add_argument("--rpm", type=int, help="requests per minute")
    p.add_argument("--tpm", type=int, help="tokens per minute")
    p.add_argument("--max-parallel", type=int)
    leaf(teams, "list", _team_list, "list teams")
    p = leaf(teams, "update", _team_update, "change a team's name, description, budget or limits")
    p.add_argument("team", metavar="NAME_OR_ID")
    p.add_argument("--name")
    p.add_argument("--description")
    budget(p, update=True)
    for flag, unit in (("rpm", int), ("tpm", int)):
        g = p.add_mutually_exclusive_group()
        g.add_argument(f"--{flag}", type=unit)
        g.add_argument(f"--no-{flag}", action="store_true")
    p.add_argument("--max-parallel", type=int)
    p = leaf(teams, "delete", _team_delete, "delete a team (and its service keys)")
    p.add_argument("team", metavar="NAME_OR_ID")

    keys = sub.add_parser("key", help="manage API keys").add_subparsers(dest="action", required=True)

    def limits(p: argparse.ArgumentParser, *, update: bool = False) -> None:
        p.add_argument("--models", help="comma-separated models the key may use (default: any)")
        p.add_argument("--endpoints", help="comma-separated: chat,completions,embeddings,models (default: all)")
        p.add_argument("--rpm", type=int, help="requests per minute")
        p.add_argument("--tpm", type=int, help="tokens per minute")
        p.add_argument("--max-parallel", type=int)
        budget(p, update=update)

    p = leaf(keys, "create", _key_create, "create a key (printed once)")
    owner = p.add_mutually_exclusive_group(required=True)
    owner.add_argument("--user", metavar="EMAIL_OR_ID")
    owner.add_argument("--team", metavar="NAME_OR_ID", help="a service key, with no human owner")
    p.add_argument("--name", required=True)
    limits(p)
    p.add_argument("--expires", metavar="ISO8601")
    p = leaf(keys, "list", _key_list, "list keys (never their values)")
    owner = p.add_mutually_exclusive_group()
    owner.add_argument("--user", metavar="EMAIL_OR_ID")
    owner.add_argument("--team", metavar="NAME_OR_ID")
    p = leaf(keys, "update", _key_update, "change a key's name, permissions or limits")
    p.add_argument("key", metavar="ID")
    p.add_argument("--name")
    limits(p, update=True)
    p.add_argument("--all-models", action="store_true", help="allow any model")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--expires", metavar="ISO8601")
    g.add_argument("--no-expiry", action="store_true")
    active(p)
    p = leaf(keys, "revoke", _key_revoke, "revoke a key (it stops working at once)")
    p.add_argument("key", metavar="ID")
