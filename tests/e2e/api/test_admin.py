"""The admin API (/admin/...), login (/v1/auth/login) and a caller's own keys (/v1/keys),
over REST and native gRPC, against the session's real stack (Envoy + 2 workers + the
development upstream; its store is the embedded SQLite file). Names and emails are
unique per test: the stack is shared by the whole session."""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import openai
import pytest

from ghostllm.v1 import admin_pb2, admin_pb2_grpc, auth_pb2, auth_pb2_grpc
from tests.support.auth import ADMIN_KEY, authorized
from tests.support.http import Reply, check_error, request
from tests.support.procs import Stack

INJECTION = "x'; DROP TABLE users;--"
HUGE = "x" * 10_000
PASSWORD = "correct horse battery"
HELLO = [{"role": "user", "content": "hi"}]
# How long a change may take to reach the other worker without Redis (its key cache TTL is 2 s).
PROPAGATION_S = 15.0  # the gateway promises 5 s; the bound is looser so a busy machine cannot flake it


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def email() -> str:
    return f"{unique('u')}@example.com"


def api(
    stack: Stack,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    method: str | None = None,
    key: str | None = ADMIN_KEY,
) -> Reply:
    return request(f"http://localhost:{stack.rest_port}{path}", body, method=method, key=key)


def ok(reply: Reply) -> Any:
    assert reply.status == 200, reply.body[:1000]
    assert reply.headers["content-type"] == "application/json"
    return reply.json()


def create_user(stack: Stack, role: str = "user", **fields: Any) -> dict[str, Any]:
    user: dict[str, Any] = ok(api(stack, "/admin/users", {"email": email(), "role": role, **fields}))
    return user


def create_key(stack: Stack, **fields: Any) -> dict[str, Any]:
    key: dict[str, Any] = ok(api(stack, "/admin/keys", {"name": unique("key"), **fields}))
    return key


def eventually(check: Callable[[], bool], timeout: float = PROPAGATION_S) -> None:
    """`check` holds within `timeout`, on every worker: four times in a row (Envoy takes
    turns between the two)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < 4:
        streak = streak + 1 if check() else 0
        assert time.monotonic() < deadline, "not seen in time"
        if not streak:
            time.sleep(0.1)


def models_for(stack: Stack, key: str) -> list[str]:
    with openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0) as client:
        return [m.id for m in client.models.list()]


@dataclass
class Person:
    user: dict[str, Any]
    key: str
    key_id: str

    @property
    def id(self) -> str:
        return str(self.user["id"])


@dataclass
class People:
    team: dict[str, Any]
    alice: Person  # role user, with a password
    bob: Person  # role user
    vera: Person  # role viewer
    ada: Person  # role admin


def person(stack: Stack, role: str, **fields: Any) -> Person:
    user = create_user(stack, role, **fields)
    key = create_key(stack, user_id=user["id"])
    return Person(user, key["key"], key["id"])


@pytest.fixture(scope="module")
def people(stack: Stack) -> People:
    team = ok(api(stack, "/admin/teams", {"name": unique("team")}))
    return People(
        team,
        person(stack, "user", password=PASSWORD, team_id=team["id"]),
        person(stack, "user"),
        person(stack, "viewer"),
        person(stack, "admin"),
    )


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with authorized(grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")) as ch:
        yield ch


@pytest.fixture(scope="module")
def admin_stub(channel: grpc.Channel) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(channel)


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


# ---------------------------------------------------------------------------------- round trips


def test_create_team_user_key_round_trip(stack: Stack) -> None:
    team = ok(api(stack, "/admin/teams", {"name": unique("team"), "description": "ML", "rate_limit": 600}))
    assert team["rate_limit"] == 600 and team["description"] == "ML" and team["current_spend"] == 0
    address = email()
    user = ok(
        api(
            stack,
            "/admin/users",
            {"email": address.upper(), "username": unique("name"), "team_id": team["id"], "budget_limit": 100},
        )
    )
    assert user["email"] == address and user["role"] == "user" and user["team_id"] == team["id"]
    assert user["is_active"] is True and user["has_password"] is False and user["budget_limit"] == 100
    assert ok(api(stack, f"/admin/users/{user['id']}")) == user
    listed = ok(api(stack, f"/admin/users?search={urllib.parse.quote(address[:14])}&limit=5"))
    assert [u["id"] for u in listed["users"]] == [user["id"]]
    assert listed["pagination"] == {"page": 1, "limit": 5, "total": 1, "pages": 1}

    created = ok(
        api(
            stack,
            "/admin/keys",
            {
                "user_id": user["id"],
                "name": "Production Key",
                "permissions": {"chat_completions": True, "completions": True, "models": ["dev-echo"]},
                "rate_limit": 500,
                "tpm_limit": 100000,
                "max_parallel": 4,
                "budget_limit": 25.5,
                "expires_at": "2999-12-31T23:59:59Z",
            },
        )
    )
    # The seed's answer, and the only time the key is shown.
    assert set(created) == {"id", "key", "name", "created_at"}
    assert created["key"].startswith("gk-") and len(created["key"]) >= 46 and created["name"] == "Production Key"
    keys = ok(api(stack, f"/admin/keys?user_id={user['id']}"))["keys"]
    assert [k["id"] for k in keys] == [created["id"]]
    (key,) = keys
    assert key["prefix"] == created["key"][:11] and created["key"] not in json.dumps(keys)
    assert not {"key", "key_hash", "secret"} & set(key)
    assert key["permissions"] == {
        "chat_completions": True,
        "completions": True,
        "embeddings": False,
        "list_models": True,
        "models": ["dev-echo"],
    }
    assert (key["rate_limit"], key["tpm_limit"], key["max_parallel"]) == (500, 100000, 4)
    assert key["budget_limit"] == 25.5 and key["expires_at"] == "2999-12-31T23:59:59Z" and key["is_active"] is True
    assert "last_used_at" not in key  # never used: none

    # The new key works with the unmodified SDK, and sees only the models it may use (and "auto").
    assert models_for(stack, created["key"]) == ["dev-echo", "auto"]
    with openai.OpenAI(base_url=stack.base_url, api_key=created["key"], max_retries=0) as client:
        assert client.chat.completions.create(model="dev-echo", messages=HELLO).choices[0].message.content
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="gpt-test", messages=HELLO)
        with pytest.raises(openai.PermissionDeniedError):
            client.embeddings.create(model="dev-echo", input="x")


def test_numbers_are_json_numbers(stack: Stack, people: People) -> None:
    body = ok(api(stack, "/admin/users?page=1&limit=2"))
    assert all(type(v) is int for v in body["pagination"].values())
    key = create_key(stack, user_id=people.bob.id, rate_limit=7, budget_limit=1.25)
    (listed,) = [k for k in ok(api(stack, "/admin/keys"))["keys"] if k["id"] == key["id"]]
    assert type(listed["rate_limit"]) is int and type(listed["budget_limit"]) is float
    assert type(listed["current_spend"]) in (int, float) and type(listed["is_active"]) is bool
    team = ok(api(stack, "/admin/teams", {"name": unique("team"), "max_parallel": 0}))
    # Zero and false are printed, not left out.
    assert team["max_parallel"] == 0 and team["current_spend"] == 0


def test_update_user(stack: Stack, people: People) -> None:
    user = create_user(stack, budget_limit=5)
    updated = ok(
        api(
            stack,
            f"/admin/users/{user['id']}",
            {"role": "viewer", "team_id": people.team["id"], "username": unique("n")},
            method="PATCH",
        )
    )
    assert updated["role"] == "viewer" and updated["team_id"] == people.team["id"] and updated["budget_limit"] == 5
    cleared = ok(api(stack, f"/admin/users/{user['id']}", {"clear": ["team_id", "budget_limit"]}, method="PATCH"))
    assert "team_id" not in cleared and "budget_limit" not in cleared and cleared["role"] == "viewer"
    err = check_error(api(stack, f"/admin/users/{user['id']}", {}, method="PATCH"), 400)
    assert "nothing to update" in err["message"]
    both = {"budget_limit": 3, "clear": ["budget_limit"]}
    check_error(api(stack, f"/admin/users/{user['id']}", both, method="PATCH"), 400)
    missing = str(uuid.uuid4())
    check_error(api(stack, f"/admin/users/{missing}", {"role": "user"}, method="PATCH"), 404, code="not_found")
    check_error(api(stack, f"/admin/users/{missing}"), 404, code="not_found")
    check_error(api(stack, "/admin/users", {"email": user["email"]}), 409, code="already_exists")


def test_delete_user_takes_their_keys(stack: Stack) -> None:
    doomed = person(stack, "user")
    assert models_for(stack, doomed.key)
    gone = ok(api(stack, f"/admin/users/{doomed.id}", method="DELETE"))
    assert gone == {"id": doomed.id, "deleted": True}
    check_error(api(stack, f"/admin/users/{doomed.id}"), 404)
    assert not [k for k in ok(api(stack, "/admin/keys"))["keys"] if k["id"] == doomed.key_id]
    eventually(lambda: api(stack, "/v1/models", key=doomed.key).status == 401)


def test_teams(stack: Stack) -> None:
    name = unique("team")
    team = ok(api(stack, "/admin/teams", {"name": name, "budget_limit": 50, "tpm_limit": 1000}))
    assert team["name"] in [t["name"] for t in ok(api(stack, "/admin/teams"))["teams"]]
    renamed = ok(
        api(stack, f"/admin/teams/{team['id']}", {"name": name + "-b", "description": "renamed"}, method="PATCH")
    )
    assert renamed["name"] == name + "-b" and renamed["description"] == "renamed" and renamed["tpm_limit"] == 1000
    cleared = ok(api(stack, f"/admin/teams/{team['id']}", {"clear": ["tpm_limit"]}, method="PATCH"))
    assert "tpm_limit" not in cleared and cleared["budget_limit"] == 50
    other = ok(api(stack, "/admin/teams", {"name": unique("team")}))
    taken = api(stack, f"/admin/teams/{other['id']}", {"name": name + "-b"}, method="PATCH")
    check_error(taken, 409, code="already_exists")
    check_error(api(stack, "/admin/teams", {"name": name + "-b"}), 409, code="already_exists")

    # A team's service key goes with the team; its members stay, without a team.
    member = create_user(stack, team_id=team["id"])
    service = create_key(stack, team_id=team["id"])
    assert ok(api(stack, f"/admin/keys?team_id={team['id']}"))["keys"][0]["id"] == service["id"]
    assert ok(api(stack, f"/admin/teams/{team['id']}", method="DELETE")) == {"id": team["id"], "deleted": True}
    assert team["id"] not in [t["id"] for t in ok(api(stack, "/admin/teams"))["teams"]]
    assert "team_id" not in ok(api(stack, f"/admin/users/{member['id']}"))
    check_error(api(stack, f"/admin/teams/{team['id']}", method="DELETE"), 404)
    eventually(lambda: api(stack, "/v1/models", key=service["key"]).status == 401)


def test_update_and_revoke_key(stack: Stack, people: People) -> None:
    key = create_key(stack, user_id=people.bob.id, rate_limit=10)
    updated = ok(
        api(
            stack,
            f"/admin/keys/{key['id']}",
            {"name": "renamed", "permissions": {"chat_completions": True}, "clear": ["rate_limit"], "max_parallel": 2},
            method="PATCH",
        )
    )
    assert updated["name"] == "renamed" and "rate_limit" not in updated and updated["max_parallel"] == 2
    assert updated["permissions"]["chat_completions"] is True and updated["permissions"]["embeddings"] is False
    with openai.OpenAI(base_url=stack.base_url, api_key=key["key"], max_retries=0) as client:
        eventually(lambda: _denied(lambda: client.embeddings.create(model="dev-embed", input="x")))

    revoked = ok(api(stack, f"/admin/keys/{key['id']}", method="DELETE"))
    assert revoked["id"] == key["id"] and revoked["is_active"] is False
    eventually(lambda: api(stack, "/v1/models", key=key["key"]).status == 401)
    err = check_error(api(stack, "/v1/models", key=key["key"]), 401, code="invalid_api_key")
    assert "revoked" in err["message"]
    # Still listed (usage refers to it), inactive.
    assert [k["is_active"] for k in ok(api(stack, "/admin/keys"))["keys"] if k["id"] == key["id"]] == [False]
    check_error(api(stack, f"/admin/keys/{uuid.uuid4()}", method="DELETE"), 404)


def _denied(call: Callable[[], object]) -> bool:
    try:
        call()
    except openai.PermissionDeniedError:
        return True
    return False


def test_expired_key_is_401(stack: Stack, people: People) -> None:
    key = create_key(stack, user_id=people.bob.id)
    assert models_for(stack, key["key"])
    ok(api(stack, f"/admin/keys/{key['id']}", {"expires_at": "2001-01-01T00:00:00Z"}, method="PATCH"))
    eventually(lambda: api(stack, "/v1/models", key=key["key"]).status == 401)
    assert "expired" in check_error(api(stack, "/v1/models", key=key["key"]), 401, code="invalid_api_key")["message"]


def test_wrong_method_is_405_with_allow(stack: Stack) -> None:
    for method, path, allow in [
        ("PUT", "/admin/users", "GET, POST"),
        ("POST", f"/admin/users/{uuid.uuid4()}", "GET, PATCH, DELETE"),
        ("GET", f"/admin/keys/{uuid.uuid4()}", "PATCH, DELETE"),
        ("DELETE", "/admin/providers", "GET"),
        ("GET", "/v1/auth/login", "POST"),
        ("POST", "/v1/keys", "GET"),
    ]:
        reply = api(stack, path, {} if method in ("PUT", "POST") else None, method=method)
        check_error(reply, 405, code="method_not_allowed")
        assert reply.headers["allow"] == allow
    check_error(api(stack, "/admin/nothing"), 404, code="not_found")


# ---------------------------------------------------------------------------------- who may do what


def test_no_key_or_bad_key_is_401(stack: Stack) -> None:
    for key in (None, "nonsense", "gk-" + "a" * 43):
        for method, path in [("GET", "/admin/users"), ("POST", "/admin/teams"), ("GET", "/v1/keys")]:
            body = {"name": unique("team")} if method == "POST" else None
            check_error(api(stack, path, body, method=method, key=key), 401, code="invalid_api_key")


def test_user_role_cannot_use_the_admin_api(stack: Stack, people: People) -> None:
    key = people.alice.key
    for method, path, body in [
        ("GET", "/admin/users", None),
        ("GET", f"/admin/users/{people.alice.id}", None),
        ("GET", "/admin/audit", None),
        ("GET", "/admin/providers", None),
        ("POST", "/admin/teams", {"name": unique("team")}),
        ("PATCH", f"/admin/users/{people.alice.id}", {"role": "admin"}),
        ("POST", "/admin/keys", {"user_id": people.alice.id, "name": "mine"}),
    ]:
        check_error(api(stack, path, body, method=method, key=key), 403, "permission_error", "permission_denied")
    # Another user's keys: not through the admin API...
    other = api(stack, f"/admin/keys?user_id={people.bob.id}", key=key)
    check_error(other, 403, code="permission_denied")
    # ...and /v1/keys lists only the caller's own.
    mine = ok(api(stack, "/v1/keys", key=key))["keys"]
    assert [k["id"] for k in mine] == [people.alice.key_id]
    bobs = {k["id"] for k in ok(api(stack, "/v1/keys", key=people.bob.key))["keys"]}
    assert people.bob.key_id in bobs and people.alice.key_id not in bobs
    assert people.alice.key not in json.dumps(mine)
    assert ok(api(stack, f"/admin/users/{people.alice.id}"))["role"] == "user"


def test_viewer_reads_but_does_not_write(stack: Stack, people: People) -> None:
    key = people.vera.key
    for path in ["/admin/users", f"/admin/users/{people.bob.id}", "/admin/teams", "/admin/keys", "/admin/audit"]:
        ok(api(stack, path, key=key))
    ok(api(stack, "/admin/providers", key=key))
    ok(api(stack, "/admin/models", key=key))
    before = state(stack)
    for method, path, body in [
        ("POST", "/admin/users", {"email": email()}),
        ("PATCH", f"/admin/users/{people.bob.id}", {"role": "admin"}),
        ("DELETE", f"/admin/users/{people.bob.id}", None),
        ("POST", "/admin/teams", {"name": unique("team")}),
        ("PATCH", f"/admin/teams/{people.team['id']}", {"description": "x"}),
        ("DELETE", f"/admin/teams/{people.team['id']}", None),
        ("POST", "/admin/keys", {"user_id": people.vera.id, "name": "mine"}),
        ("PATCH", f"/admin/keys/{people.bob.key_id}", {"is_active": False}),
        ("DELETE", f"/admin/keys/{people.bob.key_id}", None),
        ("PUT", "/admin/providers/dev", {"name": "mine"}),
        ("POST", "/admin/models", {"id": unique("m"), "provider": "dev"}),
    ]:
        check_error(api(stack, path, body, method=method, key=key), 403, code="permission_denied")
    assert state(stack) == before


def test_service_key_has_no_own_keys(stack: Stack, people: People) -> None:
    service = create_key(stack, team_id=people.team["id"])
    check_error(api(stack, "/v1/keys", key=service["key"]), 403, code="permission_denied")
    # The master key belongs to no user: an empty list (printed, not left out).
    assert ok(api(stack, "/v1/keys")) == {"keys": []}


def test_admin_role_user_administers(stack: Stack, people: People) -> None:
    user = ok(api(stack, "/admin/users", {"email": email()}, key=people.ada.key))
    ok(api(stack, f"/admin/users/{user['id']}", method="DELETE", key=people.ada.key))


# ---------------------------------------------------------------------------------- login


def test_login_token_works_as_bearer(stack: Stack, people: People) -> None:
    reply = api(stack, "/v1/auth/login", {"email": people.alice.user["email"], "password": PASSWORD}, key=None)
    body = ok(reply)
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer" and type(body["expires_in"]) is int and body["expires_in"] > 0
    token = body["access_token"]
    with openai.OpenAI(base_url=stack.base_url, api_key=token, max_retries=0) as client:
        answer = client.chat.completions.create(model="dev-echo", messages=HELLO)
        assert answer.choices[0].message.content
    assert [k["id"] for k in ok(api(stack, "/v1/keys", key=token))["keys"]] == [people.alice.key_id]
    # A token is no way around the role.
    check_error(api(stack, "/admin/users", key=token), 403, code="permission_denied")
    # Email in any case, as stored.
    upper = {"email": people.alice.user["email"].upper(), "password": PASSWORD}
    ok(api(stack, "/v1/auth/login", upper, key=None))


@pytest.mark.parametrize(
    "credentials",
    [
        {"password": "wrong password!"},
        {"email": "nobody@example.com"},
        {"email": "", "password": ""},
        {"email": INJECTION, "password": INJECTION},
        {"email": HUGE, "password": HUGE},
    ],
)
def test_bad_login_is_401(stack: Stack, people: People, credentials: dict[str, str]) -> None:
    body = {"email": people.alice.user["email"], "password": PASSWORD, **credentials}
    err = check_error(api(stack, "/v1/auth/login", body, key=None), 401, "invalid_request_error", "invalid_api_key")
    assert err["message"] == "Incorrect email or password."


def test_deactivated_user_cannot_log_in_or_use_keys(stack: Stack) -> None:
    user = person(stack, "user", password=PASSWORD)
    credentials = {"email": user.user["email"], "password": PASSWORD}
    token = ok(api(stack, "/v1/auth/login", credentials, key=None))["access_token"]
    ok(api(stack, f"/admin/users/{user.id}", {"is_active": False}, method="PATCH"))
    check_error(api(stack, "/v1/auth/login", credentials, key=None), 401, code="invalid_api_key")
    eventually(lambda: api(stack, "/v1/keys", key=token).status == 401)
    eventually(lambda: api(stack, "/v1/models", key=user.key).status == 401)


def test_password_set_by_admin(stack: Stack) -> None:
    user = create_user(stack)
    credentials = {"email": user["email"], "password": PASSWORD}
    check_error(api(stack, "/v1/auth/login", credentials, key=None), 401)
    patched = ok(api(stack, f"/admin/users/{user['id']}", {"password": PASSWORD}, method="PATCH"))
    assert patched["has_password"] is True and PASSWORD not in json.dumps(patched)
    ok(api(stack, "/v1/auth/login", credentials, key=None))
    check_error(api(stack, f"/admin/users/{user['id']}", {"password": "short"}, method="PATCH"), 400)


# ---------------------------------------------------------------------------------- hostile input

# The volatile parts of a listing: used keys' last_used_at, provider health.
_VOLATILE = ("last_used_at", "health_status", "current_spend")


def _stable(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k not in _VOLATILE} for item in items]


def state(stack: Stack) -> dict[str, Any]:
    """Everything the admin API can change, as listed (every change also writes an audit row)."""
    users = ok(api(stack, "/admin/users?limit=1"))["pagination"]["total"]
    audit = ok(api(stack, "/admin/audit?limit=1"))["pagination"]["total"]
    return {
        "users": users,
        "audit": audit,
        "teams": _stable(ok(api(stack, "/admin/teams"))["teams"]),
        "keys": _stable(ok(api(stack, "/admin/keys"))["keys"]),
        "providers": _stable(ok(api(stack, "/admin/providers"))["providers"]),
    }


# The transcoder's own 400s (a value of the wrong type): Envoy repeats the value whole.
ENVOY_PARSE_ERRORS = ("invalid_json", "invalid_request")


def _quoted(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# (method, path, body) with a hostile value in one field; {user}, {team}, {key} are
# filled with existing records' ids, {bad} with the (quoted) hostile value itself.
def _cases(bad: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    new_user = {"email": "new-user@example.com"}
    new_key = {"user_id": "{user}", "name": "k"}
    new_provider = {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}
    cases: list[tuple[str, str, dict[str, Any] | None]] = [
        # Users
        ("POST", "/admin/users", {"email": bad}),
        ("POST", "/admin/users", {**new_user, "username": bad}),
        ("POST", "/admin/users", {**new_user, "role": bad}),
        ("POST", "/admin/users", {**new_user, "team_id": bad}),
        ("POST", "/admin/users", {**new_user, "budget_limit": bad}),
        ("GET", "/admin/users/{bad}", None),
        ("PATCH", "/admin/users/{bad}", {"role": "user"}),
        ("DELETE", "/admin/users/{bad}", None),
        ("PATCH", "/admin/users/{user}", {"username": bad}),
        ("PATCH", "/admin/users/{user}", {"role": bad}),
        ("PATCH", "/admin/users/{user}", {"team_id": bad}),
        ("PATCH", "/admin/users/{user}", {"budget_limit": bad}),
        ("PATCH", "/admin/users/{user}", {"is_active": bad}),
        ("PATCH", "/admin/users/{user}", {"clear": [bad]}),
        ("GET", "/admin/users?page={bad}", None),
        ("GET", "/admin/users?limit={bad}", None),
        # Teams
        ("POST", "/admin/teams", {"name": bad}),
        ("POST", "/admin/teams", {"name": "fine-name", "rate_limit": bad}),
        ("POST", "/admin/teams", {"name": "fine-name", "budget_limit": bad}),
        ("PATCH", "/admin/teams/{bad}", {"description": "x"}),
        ("DELETE", "/admin/teams/{bad}", None),
        ("PATCH", "/admin/teams/{team}", {"name": bad}),
        ("PATCH", "/admin/teams/{team}", {"tpm_limit": bad}),
        ("PATCH", "/admin/teams/{team}", {"max_parallel": bad}),
        ("PATCH", "/admin/teams/{team}", {"clear": [bad]}),
        # Keys
        ("POST", "/admin/keys", {"user_id": bad, "name": "k"}),
        ("POST", "/admin/keys", {"team_id": bad, "name": "k"}),
        ("POST", "/admin/keys", {**new_key, "permissions": {bad: True}}),
        ("POST", "/admin/keys", {**new_key, "permissions": {"models": [bad]}}),
        ("POST", "/admin/keys", {**new_key, "permissions": {"chat_completions": bad}}),
        ("POST", "/admin/keys", {**new_key, "rate_limit": bad}),
        ("POST", "/admin/keys", {**new_key, "tpm_limit": bad}),
        ("POST", "/admin/keys", {**new_key, "max_parallel": bad}),
        ("POST", "/admin/keys", {**new_key, "budget_limit": bad}),
        ("POST", "/admin/keys", {**new_key, "expires_at": bad}),
        ("GET", "/admin/keys?user_id={bad}", None),
        ("GET", "/admin/keys?team_id={bad}", None),
        ("PATCH", "/admin/keys/{bad}", {"is_active": True}),
        ("DELETE", "/admin/keys/{bad}", None),
        ("PATCH", "/admin/keys/{key}", {"permissions": {"models": [bad]}}),
        ("PATCH", "/admin/keys/{key}", {"rate_limit": bad}),
        ("PATCH", "/admin/keys/{key}", {"expires_at": bad}),
        ("PATCH", "/admin/keys/{key}", {"is_active": bad}),
        ("PATCH", "/admin/keys/{key}", {"clear": [bad]}),
        # Providers
        ("PUT", "/admin/providers/{bad}", new_provider),
        ("PUT", "/admin/providers/new-provider", {**new_provider, "type": bad}),
        ("PUT", "/admin/providers/new-provider", {**new_provider, "base_url": bad}),
        ("PUT", "/admin/providers/new-provider", {**new_provider, "enabled": bad}),
        ("PUT", "/admin/providers/new-provider", {**new_provider, "api_key": bad}),
        ("PUT", "/admin/providers/new-provider", {**new_provider, "config": {"api_key": bad}}),
        ("PUT", "/admin/providers/dead", {"base_url": bad}),
        # Audit
        ("GET", "/admin/audit?page={bad}", None),
        ("GET", "/admin/audit?limit={bad}", None),
    ]
    return cases


def _free_text_cases() -> list[tuple[str, str, dict[str, Any] | None]]:
    """Fields where the injection-shaped value is valid text (stored as it is, see
    test_injection_shaped_text_is_inert): only their oversized values must be refused."""
    return [
        ("POST", "/admin/users", {"email": "new-user@example.com", "password": HUGE}),
        ("PATCH", "/admin/users/{user}", {"password": HUGE}),
        ("GET", "/admin/users?search={bad}", None),
        ("POST", "/admin/teams", {"name": "fine-name", "description": HUGE}),
        ("PATCH", "/admin/teams/{team}", {"description": HUGE}),
        ("POST", "/admin/keys", {"user_id": "{user}", "name": HUGE}),
        ("PATCH", "/admin/keys/{key}", {"name": HUGE}),
        ("PUT", "/admin/providers/new-provider", {"type": "openai", "base_url": "http://h/v1", "name": HUGE}),
        # The config object is free-form JSON up to 64 KiB.
        (
            "PUT",
            "/admin/providers/new-provider",
            {"type": "openai", "base_url": "http://h/v1", "config": {"a": HUGE * 7}},
        ),
    ]


HOSTILE = [
    *((label, case) for label, bad in (("injection", INJECTION), ("oversized", HUGE)) for case in _cases(bad)),
    *(("oversized", case) for case in _free_text_cases()),
]


def _fill(text: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        text = text.replace("{" + name + "}", value)
    return text


@pytest.mark.parametrize(
    ("label", "case"), HOSTILE, ids=[f"{label}-{c[0]}-{c[1]}-{','.join(c[2] or ())}" for label, c in HOSTILE]
)
def test_hostile_values_are_400_and_change_nothing(
    stack: Stack, people: People, label: str, case: tuple[str, str, dict[str, Any] | None]
) -> None:
    method, path, body = case
    bad = INJECTION if label == "injection" else HUGE
    ids = {"user": people.bob.id, "team": people.team["id"], "key": people.bob.key_id}
    path = _fill(path, {**ids, "bad": _quoted(bad)})
    filled = None if body is None else json.loads(_fill(json.dumps(body), ids))
    before = state(stack)
    err = check_error(api(stack, path, filled, method=method), 400, "invalid_request_error")
    if err["code"] not in ENVOY_PARSE_ERRORS:
        assert len(err["message"]) <= 1100  # the workers bound what they repeat
    assert state(stack) == before


def test_numbers_out_of_range_are_400(stack: Stack, people: People) -> None:
    before = state(stack)
    for body in ({"rate_limit": 2**31}, {"rate_limit": -1}, {"budget_limit": -5}, {"max_parallel": 1.5}):
        check_error(api(stack, f"/admin/teams/{people.team['id']}", body, method="PATCH"), 400)
    assert state(stack) == before


def test_injection_shaped_text_is_inert(stack: Stack, people: People) -> None:
    """Free text (a key's name, a team's description, a provider's name, a password, a
    search) may hold quotes and semicolons: it is stored and compared as data, never SQL."""
    users = ok(api(stack, "/admin/users?limit=1"))["pagination"]["total"]
    key = create_key(stack, user_id=people.bob.id, name=INJECTION)
    listed = [k for k in ok(api(stack, "/admin/keys"))["keys"] if k["id"] == key["id"]]
    assert listed[0]["name"] == INJECTION
    team = ok(api(stack, "/admin/teams", {"name": unique("team"), "description": INJECTION}))
    assert team["description"] == INJECTION
    user = create_user(stack, password=INJECTION)
    ok(api(stack, "/v1/auth/login", {"email": user["email"], "password": INJECTION}, key=None))
    assert ok(api(stack, f"/admin/users?search={_quoted(INJECTION)}")) == {
        "users": [],
        "pagination": {"page": 1, "limit": 20, "total": 0, "pages": 0},
    }
    provider = ok(
        api(
            stack,
            f"/admin/providers/{unique('p')}",
            {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "name": INJECTION},
            method="PUT",
        )
    )
    assert provider["name"] == INJECTION
    # The users table is still there, with exactly the one user made here added.
    assert ok(api(stack, "/admin/users?limit=1"))["pagination"]["total"] == users + 1


# ---------------------------------------------------------------------------------- providers


def test_providers_never_show_a_key(stack: Stack) -> None:
    secret = "sk-provider-" + uuid.uuid4().hex
    pid = unique("p")
    created = ok(
        api(
            stack,
            f"/admin/providers/{pid}",
            {
                "name": "Extra",
                "type": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "enabled": False,
                "config": {"api_key": secret, "timeout_s": 30, "headers": {"Authorization": "Bearer x", "X-Team": "a"}},
            },
            method="PUT",
        )
    )
    assert created["has_key"] is True and created["sources"] == ["database"] and created["enabled"] is False
    assert created["health_status"] == "disabled" and created["models"] == []
    # The key left the config (stored encrypted instead); secret-looking values are hidden.
    assert created["config"] == {"timeout_s": 30, "headers": {"Authorization": "(hidden)", "X-Team": "a"}}
    assert type(created["config"]["timeout_s"]) is int
    listing = ok(api(stack, "/admin/providers"))
    assert secret not in json.dumps(listing) and secret not in json.dumps(created)
    (listed,) = [p for p in listing["providers"] if p["id"] == pid]
    assert listed == created

    # An update changes what it names; the key can be replaced (top level or in config).
    updated = ok(api(stack, f"/admin/providers/{pid}", {"enabled": True, "api_key": secret + "-2"}, method="PUT"))
    assert updated["enabled"] is True and updated["name"] == "Extra" and updated["has_key"] is True
    twice = {"api_key": "sk-a", "config": {"api_key": "sk-b"}}
    check_error(api(stack, f"/admin/providers/{pid}", twice, method="PUT"), 400)
    before = state(stack)
    check_error(api(stack, f"/admin/providers/{pid}", {}, method="PUT"), 400)
    # Only settings a worker can use (ProviderConfig's, by their YAML names).
    unknown = check_error(api(stack, f"/admin/providers/{pid}", {"config": {"timeout": 30}}, method="PUT"), 400)
    assert "timeout" in unknown["message"]
    # Never the name of a variable of the gateway's own environment.
    env = {"config": {"api_key_env": "GHOSTLLM_ADMIN_KEY"}}
    check_error(api(stack, f"/admin/providers/{pid}", env, method="PUT"), 400)
    assert state(stack) == before
    audit = json.dumps(ok(api(stack, "/admin/audit?limit=100")))
    assert secret not in audit and pid in audit


def test_configured_provider_gains_a_store_row(stack: Stack) -> None:
    listing = ok(api(stack, "/admin/providers"))["providers"]
    dev = next(p for p in listing if p["id"] == "dev")
    assert dev["sources"] == ["config"] and dev["type"] == "openai" and "dev-echo" in dev["models"]
    assert dev["health_status"] == "healthy" and dev["has_key"] is True
    assert dev["api_key_env"] == "GHOSTLLM_TEST_UPSTREAM_KEY" and "sk-upstream-secret" not in json.dumps(listing)
    # Without type and base_url: the config's.
    dead = ok(api(stack, "/admin/providers/dead", {"name": "Dead Provider"}, method="PUT"))
    assert dead["sources"] == ["config", "database"] and dead["name"] == "Dead Provider"
    assert dead["base_url"] == next(p for p in listing if p["id"] == "dead")["base_url"]
    missing = api(stack, f"/admin/providers/{unique('p')}", {"name": "x"}, method="PUT")
    assert "type" in check_error(missing, 400)["message"]


# ---------------------------------------------------------------------------------- audit


def test_audit_log_names_the_actor_and_no_secret(stack: Stack, people: People) -> None:
    ada = people.ada.key
    user = ok(api(stack, "/admin/users", {"email": email(), "password": PASSWORD}, key=ada))
    key = ok(api(stack, "/admin/keys", {"user_id": user["id"], "name": "audited"}, key=ada))
    ok(api(stack, f"/admin/keys/{key['id']}", method="DELETE", key=ada))
    body = ok(api(stack, "/admin/audit?limit=10", key=people.vera.key))
    entries = body["entries"]
    assert [e["created_at"] for e in entries] == sorted((e["created_at"] for e in entries), reverse=True)
    mine = {e["action"]: e for e in entries if e["target_id"] in (user["id"], key["id"])}
    assert set(mine) == {"user.create", "key.create", "key.revoke"}
    for entry in mine.values():
        assert entry["actor_user_id"] == people.ada.id and entry["actor_key_id"] == people.ada.key_id
        assert entry["ip_address"] and entry["detail"]["via"] == "admin_api"
    assert mine["user.create"]["detail"]["email"] == user["email"]
    assert mine["user.create"]["detail"]["password"] == "(changed)"
    assert mine["key.create"]["target_type"] == "api_key" and mine["key.create"]["detail"]["name"] == "audited"
    text = json.dumps(body)
    assert PASSWORD not in text and key["key"] not in text
    page = body["pagination"]
    assert page["page"] == 1 and page["limit"] == 10 and page["total"] >= 3
    assert page["pages"] == -(-page["total"] // 10)
    second = ok(api(stack, "/admin/audit?limit=10&page=2"))["entries"]
    assert not {e["id"] for e in second} & {e["id"] for e in entries}
    # The master key acts as nobody in particular.
    ok(api(stack, "/admin/teams", {"name": unique("team")}))
    latest = ok(api(stack, "/admin/audit?limit=1"))["entries"][0]
    assert latest["action"] == "team.create" and "actor_user_id" not in latest and "actor_key_id" not in latest


# ---------------------------------------------------------------------------------- gRPC


def test_grpc_round_trip(stack: Stack, admin_stub: admin_pb2_grpc.AdminServiceStub) -> None:
    team = admin_stub.CreateTeam(admin_pb2.CreateTeamRequest(name=unique("team"), rate_limit=60))
    assert team.rate_limit == 60 and not team.HasField("budget_limit")
    user = admin_stub.CreateUser(
        admin_pb2.CreateUserRequest(email=email(), team_id=team.id, budget_limit=12.5, password=PASSWORD)
    )
    assert user.team_id == team.id and user.budget_limit == 12.5 and user.has_password
    assert admin_stub.GetUser(admin_pb2.GetUserRequest(id=user.id)) == user
    created = admin_stub.CreateKey(admin_pb2.CreateKeyRequest(user_id=user.id, name="grpc key", rate_limit=100))
    assert created.key.startswith("gk-")
    keys = admin_stub.ListKeys(admin_pb2.ListKeysRequest(user_id=user.id)).keys
    assert [k.id for k in keys] == [created.id] and keys[0].rate_limit == 100
    assert models_for(stack, created.key)
    updated = admin_stub.UpdateUser(admin_pb2.UpdateUserRequest(id=user.id, role="viewer", clear=["budget_limit"]))
    assert updated.role == "viewer" and not updated.HasField("budget_limit")
    page = admin_stub.ListUsers(admin_pb2.ListUsersRequest(search=user.email))
    assert [u.id for u in page.users] == [user.id] and page.pagination.total == 1

    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as bare:
        auth = auth_pb2_grpc.AuthServiceStub(bare)
        token = auth.Login(auth_pb2.LoginRequest(email=user.email, password=PASSWORD))
        assert token.token_type == "bearer" and token.expires_in > 0
        own = auth.ListOwnKeys(auth_pb2.ListOwnKeysRequest(), metadata=bearer(token.access_token))
        assert [k.id for k in own.keys] == [created.id]
        wrong = auth_pb2.LoginRequest(email=user.email, password="not the password")
        assert _code(lambda: auth.Login(wrong)) == grpc.StatusCode.UNAUTHENTICATED

    revoked = admin_stub.RevokeKey(admin_pb2.RevokeKeyRequest(id=created.id))
    assert not revoked.is_active
    assert admin_stub.DeleteUser(admin_pb2.DeleteRequest(id=user.id)).deleted
    assert admin_stub.DeleteTeam(admin_pb2.DeleteRequest(id=team.id)).deleted


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    code: grpc.StatusCode = exc.value.code()
    return code


def test_grpc_who_may_do_what(stack: Stack, people: People, admin_stub: admin_pb2_grpc.AdminServiceStub) -> None:
    listing = admin_pb2.ListUsersRequest()
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as bare:
        anonymous = admin_pb2_grpc.AdminServiceStub(bare)
        assert _code(lambda: anonymous.ListUsers(listing)) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: admin_stub.ListUsers(listing, metadata=bearer("gk-" + "b" * 43))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    user = bearer(people.alice.key)
    assert _code(lambda: admin_stub.ListUsers(listing, metadata=user)) == grpc.StatusCode.PERMISSION_DENIED
    others = admin_pb2.ListKeysRequest(user_id=people.bob.id)
    assert _code(lambda: admin_stub.ListKeys(others, metadata=user)) == grpc.StatusCode.PERMISSION_DENIED
    viewer = bearer(people.vera.key)
    assert admin_stub.ListUsers(listing, metadata=viewer).pagination.total >= 4
    write = admin_pb2.CreateTeamRequest(name=unique("team"))
    assert _code(lambda: admin_stub.CreateTeam(write, metadata=viewer)) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: admin_stub.CreateTeam(admin_pb2.CreateTeamRequest(name=INJECTION))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    missing = admin_pb2.GetUserRequest(id=str(uuid.uuid4()))
    assert _code(lambda: admin_stub.GetUser(missing)) == grpc.StatusCode.NOT_FOUND
    again = admin_pb2.CreateTeamRequest(name=people.team["name"])
    assert _code(lambda: admin_stub.CreateTeam(again)) == grpc.StatusCode.ALREADY_EXISTS


# ---------------------------------------------------------------------------------- models (last)


def test_models_crud(stack: Stack) -> None:
    listed = ok(api(stack, "/admin/models"))["models"]
    echo = next(m for m in listed if m["id"] == "dev-echo")
    assert echo["source"] == "config" and echo["context_length"] == 8192 and echo["input_price_per_1m"] == 1.5
    model_id = unique("vendor.model")
    created = ok(
        api(
            stack,
            "/admin/models",
            {
                "id": model_id,
                "provider": "dev",
                "upstream_model": "dev-echo",
                "context_length": 4096,
                "input_price_per_1m": 0.5,
                "output_price_per_1m": 1.5,
                "capabilities": ["chat", "streaming"],
            },
        )
    )
    assert created["id"] == model_id and created["source"] == "database" and created["context_length"] == 4096
    assert created["capabilities"] == ["chat", "streaming"] and created["created_at"]
    assert model_id in [m["id"] for m in ok(api(stack, "/admin/models"))["models"]]
    # Served by every worker within seconds, without a restart.
    chat = {"model": model_id, "messages": HELLO}
    eventually(lambda: api(stack, "/v1/chat/completions", chat).status == 200)
    updated = ok(
        api(stack, f"/admin/models/{model_id}", {"output_price_per_1m": 3, "context_length": 8192}, method="PATCH")
    )
    assert updated["output_price_per_1m"] == 3 and updated["context_length"] == 8192
    assert updated["input_price_per_1m"] == 0.5 and updated["upstream_model"] == "dev-echo"
    check_error(api(stack, "/admin/models", {"id": model_id, "provider": "dev"}), 409, code="already_exists")
    actions = [e["action"] for e in ok(api(stack, "/admin/audit?limit=5"))["entries"] if e["target_id"] == model_id]
    assert len(actions) == 2 and all(a.startswith("model.") for a in actions)
    assert ok(api(stack, f"/admin/models/{model_id}", method="DELETE")) == {"id": model_id, "deleted": True}
    assert model_id not in [m["id"] for m in ok(api(stack, "/admin/models"))["models"]]
    eventually(lambda: api(stack, "/v1/chat/completions", chat).status == 404)
    check_error(api(stack, f"/admin/models/{model_id}", method="DELETE"), 404)


@pytest.mark.parametrize("bad", [INJECTION, HUGE])
@pytest.mark.parametrize(
    "body",
    [
        {"id": "{bad}", "provider": "dev"},
        {"id": "fine-model", "provider": "{bad}"},
        {"id": "fine-model", "provider": "dev", "upstream_model": "{bad}"},
        {"id": "fine-model", "provider": "dev", "capabilities": ["{bad}"]},
        {"id": "fine-model", "provider": "dev", "context_length": "{bad}"},
        {"id": "fine-model", "provider": "dev", "input_price_per_1m": "{bad}"},
    ],
)
def test_hostile_model_values_are_400(stack: Stack, bad: str, body: dict[str, Any]) -> None:
    before = state(stack), ok(api(stack, "/admin/models"))
    filled = {k: (v.replace("{bad}", bad) if isinstance(v, str) else [bad]) for k, v in body.items()}
    check_error(api(stack, "/admin/models", filled), 400)
    check_error(api(stack, f"/admin/models/{_quoted(bad)}", {"context_length": 1}, method="PATCH"), 400)
    assert (state(stack), ok(api(stack, "/admin/models"))) == before
