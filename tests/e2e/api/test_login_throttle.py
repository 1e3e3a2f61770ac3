"""The login throttle, end to end (POST /v1/auth/login over REST, AuthService.Login over
gRPC): after LIMIT wrong passwords for an email, or IP_LIMIT from one address, every further
attempt (the right password too) is 429 rate_limit_exceeded with retry-after, gRPC
RESOURCE_EXHAUSTED, and its access log line says 429; a success clears the email's count.

Without Redis each worker counts on its own, so that stack runs one worker. With Redis, two
workers share the counters: each is called directly (gRPC, naming the client address as
Envoy would) to show it. REST calls come from their own loopback address each (127.x.y.z):
Envoy names that address as the client's, so tests do not share an address's count."""

from __future__ import annotations

import http.client
import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ghostllm.auth.login_guard import email_digest
from ghostllm.v1 import auth_pb2, auth_pb2_grpc
from tests.e2e.api.test_access_log import record_for
from tests.support.accounts import Accounts, stack_store
from tests.support.http import Reply, check_error
from tests.support.poll import eventually
from tests.support.procs import Stack, stack_config, start_stack, stop
from tests.support.redis import require_redis, unique_prefix
from tests.support.tcpproxy import TcpProxy, tcp_proxy

LIMIT, IP_LIMIT, WINDOW_S = 3, 5, 60
PASSWORD = "the right password"
WRONG = "a wrong password"
# One loopback address per use (Linux answers on all of 127.0.0.0/8).
_ADDRESSES = (f"127.0.{i // 250}.{i % 250 + 2}" for i in itertools.count(10))


def throttle_config(upstream_port: int, tmp: Path, workers: int) -> dict[str, Any]:
    config = stack_config(upstream_port, tmp, workers=workers)
    config["auth"] = {"login_max_failures": LIMIT, "login_max_failures_per_ip": IP_LIMIT, "login_window_s": WINDOW_S}
    return config


@pytest.fixture(scope="module")
def throttled(upstream_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker, no Redis."""
    tmp = tmp_path_factory.mktemp("throttle")
    s = start_stack(throttle_config(upstream_port, tmp, 1), upstream_port, tmp)
    try:
        yield s
    finally:
        stop(s.proc)


@pytest.fixture(scope="module")
def shared(upstream_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, TcpProxy, str]]:
    """Two workers on one Redis, reached through a proxy the test can cut."""
    client = require_redis()
    prefix = unique_prefix()
    tmp = tmp_path_factory.mktemp("throttle-redis")
    with tcp_proxy(6379) as proxy:
        config = throttle_config(upstream_port, tmp, 2)
        config["redis"] = {"url": f"redis://127.0.0.1:{proxy.port}/0", "prefix": prefix}
        s = start_stack(config, upstream_port, tmp)
        try:
            yield s, proxy, prefix
        finally:
            stop(s.proc)
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)
            client.close()


def new_user(stack: Stack) -> str:
    email = f"login-{uuid.uuid4().hex[:10]}@example.com"
    Accounts(stack_store(stack.config)).run(lambda r: r.create_user(email, password=PASSWORD))
    return email


def login(stack: Stack, email: str, password: str, source: str) -> Reply:
    """POST /v1/auth/login through Envoy, from the loopback address `source`."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.rest_port, timeout=30, source_address=(source, 0))
    try:
        body = json.dumps({"email": email, "password": password})
        conn.request("POST", "/v1/auth/login", body=body, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def check_throttled(reply: Reply) -> dict[str, Any]:
    err = check_error(reply, 429, "rate_limit_error", "rate_limit_exceeded")
    retry_after = int(reply.headers["retry-after"])
    assert 1 <= retry_after <= WINDOW_S
    assert err["message"] == f"Too many failed login attempts. Please try again in {retry_after}s."
    assert err["param"] is None
    return err


def check_bad_password(reply: Reply) -> None:
    check_error(reply, 401, "invalid_request_error", "invalid_api_key")


def grpc_login(address: str, email: str, password: str, client_ip: str | None = None) -> auth_pb2.LoginResponse:
    """AuthService.Login at `address` (Envoy's, or a worker's own: then `client_ip` is sent
    as Envoy would send it)."""
    metadata = (("x-client-ip", client_ip),) if client_ip else ()
    with grpc.insecure_channel(address) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        reply: auth_pb2.LoginResponse = stub.Login(
            auth_pb2.LoginRequest(email=email, password=password), metadata=metadata, timeout=30
        )
        return reply


def grpc_code(address: str, email: str, password: str, client_ip: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        grpc_login(address, email, password, client_ip)
    return err.value


def check_exhausted(err: grpc.RpcError) -> None:
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert err.details().startswith("Too many failed login attempts.")
    trailers: dict[str, str] = dict(err.trailing_metadata())
    assert 1 <= int(trailers["retry-after"]) <= WINDOW_S


def worker(stack: Stack, index: int) -> str:
    return f"127.0.0.1:{int(stack.config['server']['worker_base_port']) + index}"


# One worker, counters in the worker


def test_rest_wrong_passwords_then_429_even_with_the_right_one(throttled: Stack) -> None:
    email, source = new_user(throttled), next(_ADDRESSES)
    for _ in range(LIMIT):
        check_bad_password(login(throttled, email, WRONG, source))
    refused = login(throttled, email, PASSWORD, source)
    check_throttled(refused)
    check_throttled(login(throttled, email.upper(), PASSWORD, next(_ADDRESSES)))  # the email, from anywhere
    # Kept by the pipeline like any call: the record says what the client got.
    record = record_for(throttled.log, refused.headers["x-request-id"])
    assert (record["endpoint"], record["status"], record["error_code"]) == ("auth.login", 429, "rate_limit_exceeded")
    assert record["client_ip"] == source
    # The email's limit, not the address's: another user logs in from there.
    assert login(throttled, new_user(throttled), PASSWORD, source).status == 200


def test_grpc_wrong_passwords_then_resource_exhausted(throttled: Stack) -> None:
    email, envoy = new_user(throttled), f"127.0.0.1:{throttled.grpc_port}"
    assert grpc_login(envoy, email, PASSWORD).access_token  # a success counts for nothing
    for _ in range(LIMIT):
        assert grpc_code(envoy, email, WRONG).code() is grpc.StatusCode.UNAUTHENTICATED
    check_exhausted(grpc_code(envoy, email, PASSWORD))
    check_throttled(login(throttled, email, PASSWORD, next(_ADDRESSES)))  # one count, both protocols


def test_a_success_clears_the_emails_count(throttled: Stack) -> None:
    email = new_user(throttled)
    for _ in range(2):
        source = next(_ADDRESSES)
        for _ in range(LIMIT - 1):
            check_bad_password(login(throttled, email, WRONG, source))
        # Without the reset, the first round's failures and this round's would be over LIMIT.
        assert login(throttled, email, PASSWORD, source).status == 200


def test_unknown_emails_are_counted_alike(throttled: Stack) -> None:
    """The throttle tells nothing about which emails exist: an unknown one is refused the same."""
    email, source = f"nobody-{uuid.uuid4().hex[:8]}@example.com", next(_ADDRESSES)
    for _ in range(LIMIT):
        check_bad_password(login(throttled, email, WRONG, source))
    check_throttled(login(throttled, email, PASSWORD, source))


def test_an_address_is_refused_after_its_failures_over_many_emails(throttled: Stack) -> None:
    source = next(_ADDRESSES)
    for _ in range(IP_LIMIT):
        check_bad_password(login(throttled, new_user(throttled), WRONG, source))
    email = new_user(throttled)
    check_throttled(login(throttled, email, PASSWORD, source))
    assert login(throttled, email, PASSWORD, next(_ADDRESSES)).status == 200


# Two workers, counters in Redis


def test_two_workers_share_the_count(shared: tuple[Stack, TcpProxy, str]) -> None:
    stack, _proxy, prefix = shared
    email, ip = new_user(stack), "203.0.113.9"
    for index in (0, 1, 0):
        err = grpc_code(worker(stack, index), email, WRONG, ip)
        assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    # Each worker saw fewer than LIMIT failures itself: only the shared count refuses.
    check_exhausted(grpc_code(worker(stack, 1), email, PASSWORD, "198.51.100.9"))
    check_exhausted(grpc_code(worker(stack, 0), email, PASSWORD, "198.51.100.9"))
    check_throttled(login(stack, email, PASSWORD, next(_ADDRESSES)))
    client = require_redis()
    try:
        key = f"{prefix}login:email:{email_digest(email)}"
        assert client.get(key) == b"3" and 0 < client.pttl(key) <= WINDOW_S * 1000
        assert client.get(f"{prefix}login:ip:{ip}") == b"3"
        # Counted by digest: no key holds the email in clear.
        assert not [k for k in client.scan_iter(match=f"{prefix}*") if email.split("@")[0].encode() in k]
    finally:
        client.close()


def test_a_success_on_one_worker_clears_the_count_for_the_other(shared: tuple[Stack, TcpProxy, str]) -> None:
    stack, _proxy, _prefix = shared
    email, ip = new_user(stack), "203.0.113.10"
    for _ in range(LIMIT - 1):
        grpc_code(worker(stack, 0), email, WRONG, ip)
    assert grpc_login(worker(stack, 0), email, PASSWORD, ip).access_token
    for _ in range(LIMIT - 1):
        grpc_code(worker(stack, 1), email, WRONG, ip)
    assert grpc_login(worker(stack, 1), email, PASSWORD, ip).access_token


def test_redis_unreachable_serves_logins_unthrottled(shared: tuple[Stack, TcpProxy, str]) -> None:
    stack, proxy, _prefix = shared
    email = new_user(stack)
    proxy.cut()
    try:
        # The client's 30 s timeout is the hang detector: each is answered, none refused.
        for _ in range(LIMIT + 2):
            check_bad_password(login(stack, email, WRONG, next(_ADDRESSES)))
        assert login(stack, email, PASSWORD, next(_ADDRESSES)).status == 200
    finally:
        proxy.restore()
    assert "login throttle unavailable" in stack.log.read_text()

    def throttled_again() -> bool:
        fresh, source = new_user(stack), next(_ADDRESSES)
        for _ in range(LIMIT):
            login(stack, fresh, WRONG, source)
        return login(stack, fresh, PASSWORD, source).status == 429

    # Each worker leaves Redis alone for a second after its last failure, then counts again.
    eventually(throttled_again)
