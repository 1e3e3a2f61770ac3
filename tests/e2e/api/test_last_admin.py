"""The admin API refuses to delete, demote or deactivate the last active admin user: 409
with code last_admin over REST (through Envoy), FAILED_PRECONDITION over gRPC. The stack
is this module's own (Envoy + 1 worker, a fresh SQLite store), so its only admin user is
the first start's admin@localhost; the session's shared stack has admins made by other
tests."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ghostllm.v1 import admin_pb2, admin_pb2_grpc
from tests.e2e.api.test_admin import api, create_user, ok
from tests.support.auth import authorized
from tests.support.http import check_error
from tests.support.procs import Stack, stack_config, start_stack, stop


def refusal(email: str) -> str:
    return f"user {email} is the last active admin: make another user admin first"


@pytest.fixture(scope="module")
def stack(upstream_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("last-admin")
    s = start_stack(stack_config(upstream_port, tmp, workers=1), upstream_port, tmp)
    try:
        yield s
    finally:
        stop(s.proc)


@pytest.fixture(scope="module")
def bootstrap_key(stack: Stack) -> str:
    """admin@localhost's own key: the admin who would lock themselves out."""
    return (Path(stack.config["server"]["data_dir"]) / "admin-key").read_text().strip()


def find_user(stack: Stack, email: str) -> dict[str, Any]:
    users: list[dict[str, Any]] = ok(api(stack, f"/admin/users?search={urllib.parse.quote(email)}"))["users"]
    assert [u["email"] for u in users] == [email]
    return users[0]


def audit_total(stack: Stack) -> int:
    return int(ok(api(stack, "/admin/audit?limit=1"))["pagination"]["total"])


def grpc_refusal(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    return exc.value


def test_last_admin_over_rest_and_grpc(stack: Stack, bootstrap_key: str) -> None:
    root = find_user(stack, "admin@localhost")
    assert root["role"] == "admin" and root["is_active"]
    path = f"/admin/users/{root['id']}"
    audited = audit_total(stack)

    for body, method, param in [
        (None, "DELETE", None),
        ({"role": "user"}, "PATCH", "role"),
        ({"role": "viewer", "username": "demoted"}, "PATCH", "role"),
        ({"is_active": False}, "PATCH", "is_active"),
    ]:
        reply = api(stack, path, body, method=method, key=bootstrap_key)
        error = check_error(reply, 409, "invalid_request_error", "last_admin")
        assert error == {"message": refusal("admin@localhost"), "type": "invalid_request_error",
                        "param": param, "code": "last_admin"}  # fmt: skip

    with authorized(grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}"), bootstrap_key) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        for call in [
            lambda: stub.DeleteUser(admin_pb2.DeleteRequest(id=root["id"])),
            lambda: stub.UpdateUser(admin_pb2.UpdateUserRequest(id=root["id"], role="user")),
            lambda: stub.UpdateUser(admin_pb2.UpdateUserRequest(id=root["id"], is_active=False)),
        ]:
            failed = grpc_refusal(call)
            assert failed.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert failed.details() == refusal("admin@localhost")

        # Nothing changed and nothing was audited; the admin still administers.
        assert find_user(stack, "admin@localhost") == root
        assert audit_total(stack) == audited
        assert ok(api(stack, "/admin/users", key=bootstrap_key))["pagination"]["total"] >= 1

    # With a second active admin the first may step down (its own key loses admin access,
    # so the master key carries on); then the second is the last.
    deputy = create_user(stack, "admin")
    demoted = ok(api(stack, path, {"role": "user"}, method="PATCH", key=bootstrap_key))
    assert demoted["role"] == "user"
    with authorized(grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        failed = grpc_refusal(lambda: stub.DeleteUser(admin_pb2.DeleteRequest(id=deputy["id"])))
        assert failed.code() == grpc.StatusCode.FAILED_PRECONDITION and failed.details() == refusal(deputy["email"])
    check_error(api(stack, f"/admin/users/{deputy['id']}", method="DELETE"), 409, code="last_admin")
    assert find_user(stack, deputy["email"])["role"] == "admin"
