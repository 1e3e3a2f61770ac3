"""`model: "auto"` through a real stack (issue 10): the openai SDK gets an answer whose `model`
names the model that served it and whose x-ghostllm-deployment header names the deployment; the
cheapest chat model by default (an embeddings-only model is cheaper still, and chosen for
embeddings), skipping one whose provider failed its health check; a key restricted to models
gets one of those; when the cheapest model the key may use is failing (the development
upstream's error-503) the next candidate serves the same request, streamed or not; the
usage_logs row names the model that served; "auto" in the model listing (REST and gRPC) and
retrievable. No timing assertions.

Upstreams: the development upstream, reached through two provider ids, and a dead port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest

from ghostllm.store import make_store
from ghostllm.v1 import models_pb2, models_pb2_grpc
from tests.support.accounts import Accounts, stack_store
from tests.support.auth import ADMIN_KEY
from tests.support.procs import Stack, dev_upstream, free_port, running_stack, server_config

HELLO = [{"role": "user", "content": "Hello there"}]
HEADER = "x-ghostllm-deployment"
CHAT = ["chat", "streaming", "completions"]


def auto_config(upstream_port: int, tmp: Path) -> dict[str, Any]:
    dev = f"http://127.0.0.1:{upstream_port}/v1"

    def model(mid: str, provider: str, upstream: str, price: float, caps: list[str] = CHAT) -> dict[str, Any]:
        return {"id": mid, "provider": provider, "upstream_model": upstream, "capabilities": caps,
                "input_price_per_1m": price, "output_price_per_1m": price}  # fmt: skip

    return {
        "server": server_config(tmp, 2, shutdown_grace_s=10),
        # No retry on the same deployment, and circuits that stay closed: every request that
        # meets the failing model fails over within itself, on either worker.
        "routing": {"health_check_interval_s": 3600, "retries": 0, "circuit_failures": 1000,
                    "auto": {"prefer": "cheapest"}},
        "providers": [
            {"id": "dev", "type": "openai", "base_url": dev},
            {"id": "dev2", "type": "openai", "base_url": dev},
            {"id": "dead", "type": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "connect_timeout_s": 1},
        ],
        # Cost (input + output per 1M): embed-free 0, down 1, mid 3, broken 8, pricey 30.
        "models": [
            model("pricey", "dev2", "dev-echo", 15.0),
            model("broken", "dev", "error-503", 4.0),
            model("mid", "dev", "dev-echo", 1.5),
            model("down", "dead", "dev-echo", 0.5),
            model("embed-free", "dev", "dev-embed", 0.0, ["embeddings"]),
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("auto")
    with dev_upstream(tmp) as up, running_stack(auto_config(up.port, tmp), up, tmp) as s:
        yield s


@pytest.fixture(scope="module")
def accounts(stack: Stack) -> Accounts:
    return Accounts(stack_store(stack.config))


@pytest.fixture(scope="module")
def keys(accounts: Accounts) -> Callable[..., str]:
    made: dict[tuple[str, ...], str] = {}

    def key(*models: str) -> str:
        """A key that may use only `models` (one per set, made once)."""
        if models not in made:
            made[models] = accounts.key(models=list(models))[1]
        return made[models]

    return key


def sdk(stack: Stack, key: str = ADMIN_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=60)


def usage_row(stack: Stack, request_id: str) -> dict[str, Any]:
    """The request's usage_logs row, once the ledger has written it."""
    names = ("model_id", "provider_id", "deployment", "attempts", "deployments_tried", "status")

    async def go() -> list[Any]:
        async with make_store(stack_store(stack.config)) as store:
            return await store.fetch_all(
                f"SELECT {', '.join(names)} FROM usage_logs WHERE request_id = ?", (request_id,)
            )

    deadline = time.monotonic() + 15
    while not (found := asyncio.run(go())) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(found) == 1, f"expected one row for {request_id}, found {found}"
    return dict(zip(names, found[0], strict=True))


def ask(stack: Stack, key: str = ADMIN_KEY, *, stream: bool = False) -> tuple[str, dict[str, str], str]:
    """(the model the answer names, its headers, its text) for a chat with model "auto"."""
    with sdk(stack, key) as client:
        raw = client.chat.completions.with_raw_response.create(model="auto", messages=HELLO, stream=stream)
        headers = dict(raw.headers)
        if not stream:
            answer = raw.parse()
            return answer.model, headers, answer.choices[0].message.content or ""
        chunks = list(raw.parse())
        models = {c.model for c in chunks}
        assert len(models) == 1, models
        return models.pop(), headers, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("stream", [False, True])
def test_auto_is_the_cheapest_healthy_chat_model(stack: Stack, stream: bool) -> None:
    model, headers, text = ask(stack, stream=stream)
    # embed-free is cheaper but offers no chat; down is cheaper but its provider is not answering.
    assert model == "mid" and text
    assert headers[HEADER] == "dev/dev-echo"
    row = usage_row(stack, headers["x-request-id"])
    assert (row["model_id"], row["provider_id"], row["status"]) == ("mid", "dev", 200)


def test_auto_for_embeddings_and_completions(stack: Stack) -> None:
    with sdk(stack) as client:
        assert client.embeddings.create(model="auto", input="hello").model == "embed-free"
        assert client.completions.create(model="auto", prompt="hello").model == "mid"


@pytest.mark.parametrize("stream", [False, True])
def test_a_key_restricted_to_one_model_gets_that_one(stack: Stack, keys: Callable[..., str], stream: bool) -> None:
    model, headers, _ = ask(stack, keys("pricey"), stream=stream)
    assert (model, headers[HEADER]) == ("pricey", "dev2/dev-echo")


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_cheapest_model_falls_back_to_the_next(stack: Stack, keys: Callable[..., str], stream: bool) -> None:
    model, headers, text = ask(stack, keys("broken", "pricey"), stream=stream)
    assert (model, headers[HEADER]) == ("pricey", "dev2/dev-echo") and text
    row = usage_row(stack, headers["x-request-id"])
    # The row names the model that served; the failed attempt is in deployments_tried.
    assert (row["model_id"], row["deployment"], row["attempts"]) == ("pricey", "dev2/dev-echo", 2)
    assert row["deployments_tried"] == "dev/error-503,dev2/dev-echo"


def test_a_model_whose_provider_fails_its_health_check_is_skipped(stack: Stack, keys: Callable[..., str]) -> None:
    key = keys("down", "pricey")
    for _ in range(4):  # both workers (Envoy spreads the requests)
        model, headers, _ = ask(stack, key)
        row = usage_row(stack, headers["x-request-id"])
        assert (model, row["attempts"], row["deployments_tried"]) == ("pricey", 1, "dev2/dev-echo")


def test_a_key_that_may_use_no_candidate_is_refused(stack: Stack, keys: Callable[..., str]) -> None:
    with sdk(stack, keys("embed-free")) as client, pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model="auto", messages=HELLO)
    assert err.value.code == "permission_denied" and "'auto'" in err.value.message


def test_auto_is_listed_and_retrievable(stack: Stack, keys: Callable[..., str]) -> None:
    with sdk(stack) as client:
        listed = {m.id: m for m in client.models.list()}
        assert list(listed)[-1] == "auto"
        auto = listed["auto"].to_dict()
        assert (auto["owned_by"], auto["provider"]) == ("ghostllm", "ghostllm")
        assert auto["capabilities"]["embeddings"] is True and auto["capabilities"]["streaming"] is True
        assert "pricing" not in auto  # the chosen model's
        assert client.models.retrieve("auto").to_dict() == auto
    with sdk(stack, keys("embed-free")) as client:
        assert [m.id for m in client.models.list()] == ["embed-free", "auto"]
        caps = client.models.retrieve("auto").to_dict()["capabilities"]
        assert (caps["embeddings"], caps["streaming"]) == (True, False)
    with sdk(stack, keys("nothing-here")) as client:
        assert [m.id for m in client.models.list()] == []
        with pytest.raises(openai.PermissionDeniedError):
            client.models.retrieve("auto")
    # gRPC lists the same.
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as channel:
        reply = models_pb2_grpc.ModelServiceStub(channel).ListModels(
            models_pb2.ListModelsRequest(), metadata=(("authorization", f"Bearer {ADMIN_KEY}"),), timeout=30
        )
    grpc_auto = reply.data[-1]
    assert (grpc_auto.id, grpc_auto.owned_by, grpc_auto.HasField("pricing")) == ("auto", "ghostllm", False)
    assert [m.id for m in reply.data] == list(listed)
