"""Authentication and permissions on every model endpoint, over REST (the openai SDK)
and gRPC: who may call, what they get when they may not, and how soon a change in the
store reaches every worker (the stack runs two)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import openai
import pytest
from google.protobuf import struct_pb2

from ghostllm.v1 import chat_pb2, chat_pb2_grpc, models_pb2, models_pb2_grpc, openai_pb2
from tests.support.accounts import Accounts, stack_store
from tests.support.http import check_error, request
from tests.support.procs import Stack

HELLO = [{"role": "user", "content": "Hello"}]
# Requests per check: Envoy spreads them over both workers.
SPREAD = 12


@pytest.fixture(scope="module")
def accounts(stack: Stack) -> Accounts:
    return Accounts(stack_store(stack.config))


def sdk(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=30)


def chat(stack: Stack, key: str, model: str = "dev-echo") -> int:
    return request(stack.base_url + "/chat/completions", {"model": model, "messages": HELLO}, key=key).status


def eventually(check: Callable[[], bool], within: float = 15.0) -> None:
    """Until `check` holds; the bound is generous (no timing is asserted, only that it happens)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the change was not seen"
        time.sleep(0.2)


# Who is refused


@pytest.mark.parametrize(
    "api_key",
    ["gk-" + "A" * 43, "gk-not-a-key", "sk-test-but-wrong", "a.b.c", "Bearer", "x" * 9000],
    ids=["unknown-key", "malformed-key", "wrong-master", "not-a-token", "scheme-only", "huge"],
)
def test_bad_credentials_are_401(stack: Stack, api_key: str) -> None:
    with sdk(stack, api_key) as client, pytest.raises(openai.AuthenticationError) as err:
        client.chat.completions.create(model="dev-echo", messages=HELLO)
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    assert api_key not in str(err.value.message)


@pytest.mark.parametrize("path", ["/models", "/models/dev-echo", "/chat/completions", "/embeddings", "/completions"])
def test_every_endpoint_needs_a_key(stack: Stack, path: str) -> None:
    body = None if path.startswith("/models") else {"model": "dev-echo"}
    err = check_error(request(stack.base_url + path, body, key=None), 401, "invalid_request_error", "invalid_api_key")
    assert "Authorization" in err["message"]
    check_error(request(stack.base_url + path, body, headers={"authorization": "Basic abc"}), 401)


def test_health_stays_open(stack: Stack) -> None:
    assert request(f"http://127.0.0.1:{stack.rest_port}/health", key=None).status == 200


def test_a_key_works_with_the_sdk_sync_async_and_streaming(stack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key()
    with sdk(stack, key) as client:
        assert client.chat.completions.create(model="dev-echo", messages=HELLO).choices[0].message.content
        chunks = list(client.chat.completions.create(model="dev-echo", messages=HELLO, stream=True))
        assert chunks[-1].choices[0].finish_reason == "stop"

    async def go() -> str | None:
        async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=key, max_retries=0) as client:
            reply = await client.chat.completions.create(model="dev-echo", messages=HELLO)
            return reply.choices[0].message.content

    import asyncio

    assert asyncio.run(go())


def test_expired_key_is_401(stack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with sdk(stack, key) as client, pytest.raises(openai.AuthenticationError, match="expired"):
        client.models.list()


def test_a_key_expiring_while_cached_stops_working(stack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key(expires_at=datetime.now(UTC) + timedelta(seconds=3))
    assert chat(stack, key) == 200
    eventually(lambda: all(chat(stack, key) == 401 for _ in range(SPREAD)))


# What a valid key may not do


def test_endpoint_not_allowed_is_403(stack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key(endpoints=["chat"])
    with sdk(stack, key) as client:
        assert client.chat.completions.create(model="dev-echo", messages=HELLO).id
        with pytest.raises(openai.PermissionDeniedError) as err:
            client.embeddings.create(model="dev-embed", input="x")
        assert err.value.code == "permission_denied"
        with pytest.raises(openai.PermissionDeniedError):
            client.completions.create(model="dev-echo", prompt="x")
        with pytest.raises(openai.PermissionDeniedError):
            client.models.list()


def test_model_not_allowed_is_403_and_hidden_from_the_listing(stack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key(models=["dev-echo", "dev-embed"])
    with sdk(stack, key) as client:
        assert {m.id for m in client.models.list()} == {"dev-echo", "dev-embed", "auto"}  # auto: among those
        assert client.models.retrieve("dev-echo").id == "dev-echo"
        for call in (
            lambda: client.chat.completions.create(model="gpt-test", messages=HELLO),
            lambda: client.models.retrieve("gpt-test"),
            # Not in the catalogue either: the same 403, so a key learns nothing of other models.
            lambda: client.chat.completions.create(model="no-such-model", messages=HELLO),
        ):
            with pytest.raises(openai.PermissionDeniedError) as err:
                call()
            assert err.value.code == "permission_denied"


def test_master_key_sees_every_model(client: openai.OpenAI) -> None:
    assert {"dev-echo", "gpt-test", "dev-embed"} <= {m.id for m in client.models.list()}


# Changes in the store reach every worker


def test_revocation_reaches_every_worker(stack: Stack, accounts: Accounts) -> None:
    key_id, key = accounts.key()
    assert all(chat(stack, key) == 200 for _ in range(SPREAD))  # cached by both workers
    accounts.run(lambda r: r.revoke_key(key_id))
    eventually(lambda: all(chat(stack, key) == 401 for _ in range(SPREAD)))
    with sdk(stack, key) as client, pytest.raises(openai.AuthenticationError, match="revoked"):
        client.models.list()


def test_permission_change_reaches_every_worker(stack: Stack, accounts: Accounts) -> None:
    from ghostllm.accounts.permissions import Permissions

    key_id, key = accounts.key()
    assert all(chat(stack, key) == 200 for _ in range(SPREAD))
    narrowed = Permissions.from_names(None, ["gpt-test"])
    accounts.run(lambda r: r.update_key(key_id, permissions=narrowed))
    eventually(lambda: all(chat(stack, key) == 403 for _ in range(SPREAD)))
    assert chat(stack, key, "gpt-test") == 200


def test_deactivated_owner_loses_access(stack: Stack, accounts: Accounts) -> None:
    user = accounts.user()
    _, key = accounts.key(user)
    assert chat(stack, key) == 200
    accounts.run(lambda r: r.update_user(user, is_active=False))
    eventually(lambda: all(chat(stack, key) == 401 for _ in range(SPREAD)))


def test_last_used_is_recorded_off_the_request_path(stack: Stack, accounts: Accounts) -> None:
    key_id, key = accounts.key()
    assert accounts.run(lambda r: r.get_key(key_id)).last_used_at is None
    assert chat(stack, key) == 200
    eventually(lambda: accounts.run(lambda r: r.get_key(key_id)).last_used_at is not None)


def test_keys_are_never_stored_or_logged_in_clear(stack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key()
    assert chat(stack, key) == 200
    assert request(stack.base_url + "/models", key=key + "x").status == 401
    data_dir = Path(stack.config["server"]["data_dir"])
    for path in [*data_dir.glob("ghostllm.db*"), stack.log]:
        content = path.read_bytes()
        assert key.encode() not in content, path
        assert key[3:].encode() not in content, path
    # Nor the master key, nor the provider key the gateway sends upstream.
    for secret in (b"sk-upstream-secret", b"Bearer sk-test"):
        assert secret not in stack.log.read_bytes()


# gRPC: the same rules, the gRPC codes


def _grpc_chat(stack: Stack, metadata: tuple[tuple[str, str], ...], model: str = "dev-echo") -> str:
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        reply = chat_pb2_grpc.ChatServiceStub(ch).CreateChatCompletion(
            chat_pb2.ChatCompletionRequest(
                model=model,
                messages=[openai_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value="hi"))],
            ),
            metadata=metadata,
            timeout=30,
        )
        return str(reply.id)


def test_grpc_codes(stack: Stack, accounts: Accounts) -> None:
    _, key = accounts.key(models=["dev-echo"])
    assert _grpc_chat(stack, (("authorization", f"Bearer {key}"),))
    for metadata, code in (
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer gk-nope"),), grpc.StatusCode.UNAUTHENTICATED),
    ):
        with pytest.raises(grpc.RpcError) as err:
            _grpc_chat(stack, metadata)
        assert err.value.code() == code
    with pytest.raises(grpc.RpcError) as err:
        _grpc_chat(stack, (("authorization", f"Bearer {key}"),), model="gpt-test")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        listing = models_pb2_grpc.ModelServiceStub(ch).ListModels(
            models_pb2.ListModelsRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=30
        )
    assert [m.id for m in listing.data] == ["dev-echo", "auto"]
