"""Budget reset periods in the admin API (/admin/teams, /admin/users, /admin/keys): set,
changed and cleared over REST and native gRPC, shown wherever the record is, and refused
(400, nothing changed) when not daily, weekly or monthly. Against the session's stack."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from ghostllm.v1 import admin_pb2, admin_pb2_grpc
from tests.e2e.api.test_admin import (
    HUGE,
    INJECTION,
    admin_stub,
    api,
    channel,
    create_key,
    create_user,
    email,
    ok,
    state,
    unique,
)
from tests.support.http import check_error
from tests.support.procs import Stack

__all__ = ["admin_stub", "channel"]  # the admin suite's fixtures, used here too

PERIOD_MESSAGE = "budget_period: expected one of daily, weekly, monthly"


def create_team(stack: Stack, **fields: Any) -> dict[str, Any]:
    team: dict[str, Any] = ok(api(stack, "/admin/teams", {"name": unique("team"), **fields}))
    return team


def listed(stack: Stack, path: str, field: str, record_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [r for r in ok(api(stack, path))[field] if r["id"] == record_id]
    assert len(found) == 1, found
    return found[0]


def test_team_period_set_changed_and_cleared(stack: Stack) -> None:
    team = create_team(stack, budget_limit=100, budget_period="monthly")
    assert (team["budget_limit"], team["budget_period"]) == (100, "monthly")
    assert listed(stack, "/admin/teams", "teams", team["id"]) == team
    path = f"/admin/teams/{team['id']}"
    changed = ok(api(stack, path, {"budget_period": "weekly"}, method="PATCH"))
    assert (changed["budget_period"], changed["budget_limit"], changed["name"]) == ("weekly", 100, team["name"])
    assert listed(stack, "/admin/teams", "teams", team["id"])["budget_period"] == "weekly"
    cleared = ok(api(stack, path, {"clear": ["budget_period"]}, method="PATCH"))
    # Cleared: absent (the budget never resets), the budget itself kept.
    assert "budget_period" not in cleared and cleared["budget_limit"] == 100
    assert "budget_period" not in listed(stack, "/admin/teams", "teams", team["id"])
    # Without one: absent too.
    assert "budget_period" not in create_team(stack, budget_limit=5)


def test_user_period_set_changed_and_cleared(stack: Stack) -> None:
    user = create_user(stack, budget_limit=20, budget_period="weekly")
    assert (user["budget_limit"], user["budget_period"]) == (20, "weekly")
    assert ok(api(stack, f"/admin/users/{user['id']}")) == user
    (found,) = ok(api(stack, f"/admin/users?search={user['email']}"))["users"]
    assert found == user
    path = f"/admin/users/{user['id']}"
    changed = ok(api(stack, path, {"budget_period": "Daily"}, method="PATCH"))
    assert changed["budget_period"] == "daily" and changed["budget_limit"] == 20  # any case in, lower case out
    assert ok(api(stack, path))["budget_period"] == "daily"
    cleared = ok(api(stack, path, {"clear": ["budget_period", "budget_limit"]}, method="PATCH"))
    assert "budget_period" not in cleared and "budget_limit" not in cleared
    assert "budget_period" not in ok(api(stack, path))
    assert "budget_period" not in create_user(stack)


def test_key_period_set_changed_and_cleared(stack: Stack) -> None:
    user = create_user(stack)
    created = create_key(stack, user_id=user["id"], budget_limit=2.5, budget_period="daily")
    # The create answer keeps the seed's shape; the period shows wherever the key is listed.
    assert set(created) == {"id", "key", "name", "created_at"}
    key = listed(stack, f"/admin/keys?user_id={user['id']}", "keys", created["id"])
    assert (key["budget_limit"], key["budget_period"]) == (2.5, "daily")
    assert listed(stack, "/admin/keys", "keys", created["id"])["budget_period"] == "daily"
    # The owner's own listing (/v1/keys) shows it too.
    own = ok(api(stack, "/v1/keys", key=created["key"]))["keys"]
    assert [(k["id"], k["budget_period"]) for k in own] == [(created["id"], "daily")]

    path = f"/admin/keys/{created['id']}"
    changed = ok(api(stack, path, {"budget_period": "monthly"}, method="PATCH"))
    assert (changed["budget_period"], changed["budget_limit"]) == ("monthly", 2.5)
    cleared = ok(api(stack, path, {"clear": ["budget_period"]}, method="PATCH"))
    assert "budget_period" not in cleared and cleared["budget_limit"] == 2.5
    assert "budget_period" not in listed(stack, "/admin/keys", "keys", created["id"])

    team = create_team(stack)
    service = create_key(stack, team_id=team["id"], budget_limit=1, budget_period="weekly")
    assert listed(stack, f"/admin/keys?team_id={team['id']}", "keys", service["id"])["budget_period"] == "weekly"


def test_changes_are_audited(stack: Stack) -> None:
    team = create_team(stack, budget_period="monthly")
    ok(api(stack, f"/admin/teams/{team['id']}", {"clear": ["budget_period"]}, method="PATCH"))
    entries = ok(api(stack, "/admin/audit?limit=20"))["entries"]
    mine = {e["action"]: e["detail"] for e in entries if e["target_id"] == team["id"]}
    assert mine["team.create"]["budget_period"] == "monthly"
    assert mine["team.update"] == {"via": "admin_api", "budget_period": None}


def _records(stack: Stack) -> dict[str, str]:
    team = create_team(stack)
    user = create_user(stack)
    key = create_key(stack, user_id=user["id"])
    return {"team": team["id"], "user": user["id"], "key": key["id"]}


def _period_cases(ids: dict[str, str], period: Any) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("POST", "/admin/teams", {"name": unique("team"), "budget_period": period}),
        ("POST", "/admin/users", {"email": email(), "budget_period": period}),
        ("POST", "/admin/keys", {"user_id": ids["user"], "name": "k", "budget_period": period}),
        ("PATCH", f"/admin/teams/{ids['team']}", {"budget_period": period}),
        ("PATCH", f"/admin/users/{ids['user']}", {"budget_period": period}),
        ("PATCH", f"/admin/keys/{ids['key']}", {"budget_period": period}),
    ]


@pytest.mark.parametrize("period", ["yearly", "", "hourly", "daily ", INJECTION, HUGE], ids=lambda p: p[:12])
def test_other_periods_are_400_and_change_nothing(stack: Stack, period: str) -> None:
    cases = _period_cases(_records(stack), period)
    before = state(stack)
    for method, path, body in cases:
        err = check_error(api(stack, path, body, method=method), 400, "invalid_request_error", "invalid_value")
        assert (err["param"], err["message"]) == ("budget_period", PERIOD_MESSAGE), (method, path)
    assert state(stack) == before


def test_wrong_types_and_both_given_and_cleared_are_400(stack: Stack) -> None:
    ids = _records(stack)
    before = state(stack)
    for value in (7, True, ["daily"], {"period": "daily"}):
        for method, path, body in _period_cases(ids, value):
            check_error(api(stack, path, body, method=method), 400, "invalid_request_error")
    for kind in ("teams", "users", "keys"):
        both = {"budget_period": "daily", "clear": ["budget_period"]}
        err = check_error(api(stack, f"/admin/{kind}/{ids[kind[:-1]]}", both, method="PATCH"), 400)
        assert err["param"] == "budget_period" and "both given and cleared" in err["message"]
    assert state(stack) == before


def test_clear_names_budget_period_among_the_clearable(stack: Stack) -> None:
    ids = _records(stack)
    for kind, clearable in (
        ("teams", "budget_limit, budget_period, max_parallel, rate_limit, tpm_limit"),
        ("users", "budget_limit, budget_period, team_id, username"),
        ("keys", "budget_limit, budget_period, expires_at, max_parallel, rate_limit, tpm_limit"),
    ):
        reply = api(stack, f"/admin/{kind}/{ids[kind[:-1]]}", {"clear": ["current_spend"]}, method="PATCH")
        err = check_error(reply, 400, code="invalid_value")
        assert err["param"] == "clear" and err["message"].endswith(f"these can: {clearable}"), err


@pytest.mark.parametrize("bad", [-1, -0.01, "NaN", "Infinity", "-Infinity", 1e12])
def test_budget_limits_out_of_range_are_400(stack: Stack, bad: Any) -> None:
    ids = _records(stack)
    before = state(stack)
    for method, path, body in [
        ("POST", "/admin/teams", {"name": unique("team"), "budget_limit": bad}),
        ("POST", "/admin/users", {"email": email(), "budget_limit": bad}),
        ("POST", "/admin/keys", {"user_id": ids["user"], "name": "k", "budget_limit": bad}),
        ("PATCH", f"/admin/teams/{ids['team']}", {"budget_limit": bad}),
        ("PATCH", f"/admin/users/{ids['user']}", {"budget_limit": bad}),
        ("PATCH", f"/admin/keys/{ids['key']}", {"budget_limit": bad}),
    ]:
        err = check_error(api(stack, path, body, method=method), 400, "invalid_request_error")
        assert err["param"] == "budget_limit", (method, path, err)
    assert state(stack) == before


def test_grpc_periods(stack: Stack, admin_stub: admin_pb2_grpc.AdminServiceStub) -> None:
    team = admin_stub.CreateTeam(admin_pb2.CreateTeamRequest(name=unique("team"), budget_period="monthly"))
    assert team.budget_period == "monthly" and not team.HasField("budget_limit")
    user = admin_stub.CreateUser(
        admin_pb2.CreateUserRequest(email=email(), team_id=team.id, budget_limit=10, budget_period="weekly")
    )
    assert user.budget_period == "weekly" and admin_stub.GetUser(admin_pb2.GetUserRequest(id=user.id)) == user
    created = admin_stub.CreateKey(admin_pb2.CreateKeyRequest(user_id=user.id, name="k", budget_period="daily"))
    (key,) = admin_stub.ListKeys(admin_pb2.ListKeysRequest(user_id=user.id)).keys
    assert key.id == created.id and key.budget_period == "daily"

    team = admin_stub.UpdateTeam(admin_pb2.UpdateTeamRequest(id=team.id, clear=["budget_period"]))
    assert not team.HasField("budget_period")
    (listed_team,) = [t for t in admin_stub.ListTeams(admin_pb2.ListTeamsRequest()).teams if t.id == team.id]
    assert not listed_team.HasField("budget_period")
    user = admin_stub.UpdateUser(admin_pb2.UpdateUserRequest(id=user.id, budget_period="MONTHLY"))
    assert user.budget_period == "monthly" and user.budget_limit == 10
    key = admin_stub.UpdateKey(admin_pb2.UpdateKeyRequest(id=key.id, budget_period="weekly"))
    assert key.budget_period == "weekly"

    for call in (
        lambda: admin_stub.CreateTeam(admin_pb2.CreateTeamRequest(name=unique("team"), budget_period="yearly")),
        lambda: admin_stub.UpdateUser(admin_pb2.UpdateUserRequest(id=user.id, budget_period="yearly")),
        lambda: admin_stub.UpdateKey(admin_pb2.UpdateKeyRequest(id=key.id, budget_period="")),
    ):
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert PERIOD_MESSAGE in (exc.value.details() or "")
    assert admin_stub.GetUser(admin_pb2.GetUserRequest(id=user.id)).budget_period == "monthly"
    assert admin_stub.DeleteUser(admin_pb2.DeleteRequest(id=user.id)).deleted
    assert admin_stub.DeleteTeam(admin_pb2.DeleteRequest(id=team.id)).deleted
