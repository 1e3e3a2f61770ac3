"""Models and providers changed in the store at runtime reach every worker of a running
stack without a restart: by each worker's poll of the store, and with Redis at once, by
the change feed (the poll is then made too slow to be what delivers them).

Each test runs a stack of its own (two workers, its own development upstream and SQLite
store) and changes the store as the admin API and `ghostllm model` do, then watches
each worker directly over gRPC and the gateway through Envoy with the openai SDK."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import openai
import pytest

from ghostllm.accounts import ProviderRepository
from ghostllm.accounts.keyring import load_cipher
from ghostllm.accounts.models import ModelRepository
from ghostllm.cluster.changes import CATALOGUE, ChangeFeed
from ghostllm.config import Config, RedisConfig, parse_config
from ghostllm.store import Store, make_store
from ghostllm.v1 import models_pb2, models_pb2_grpc
from tests.support import poll
from tests.support.auth import ADMIN_KEY, METADATA
from tests.support.http import request, upstream_last_request
from tests.support.procs import ROOT, Stack, Upstream, dev_upstream, stack_config, start_stack, stop
from tests.support.redis import REDIS_URL, require_redis, unique_prefix

T = TypeVar("T")
# How long a change may take to be seen; the requirement is 5 s, this only bounds a broken run.
WITHIN_S = 15.0
VAULT_KEY = "sk-vault-CLEAR-0123456789abcdef"
HELLO = [{"role": "user", "content": "Hello"}]


def eventually(check: Callable[[], T], within_s: float = WITHIN_S) -> T:
    return poll.eventually(check, within_s)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    with dev_upstream(tmp_path) as u:
        yield u


def config_of(stack: Stack) -> Config:
    return parse_config(stack.config, env={})


def on_store(stack: Stack, body: Callable[[Store], Awaitable[T]]) -> T:
    """`body` against the stack's own store (its SQLite file in the data dir)."""

    async def run() -> T:
        async with make_store(config_of(stack).store, max_size=1) as store:
            return await body(store)

    return asyncio.run(run())


def worker_models(stack: Stack) -> list[dict[str, Any]]:
    """Each worker's /v1/models, asked of the worker itself (not through Envoy's round robin)."""
    base = int(stack.config["server"]["worker_base_port"])
    seen = []
    for i in range(int(stack.config["server"]["workers"])):
        with grpc.insecure_channel(f"127.0.0.1:{base + i}") as channel:
            reply = models_pb2_grpc.ModelServiceStub(channel).ListModels(
                models_pb2.ListModelsRequest(), metadata=METADATA, timeout=5
            )
        seen.append({m.id: m for m in reply.data})
    return seen


def on_every_worker(stack: Stack, check: Callable[[dict[str, Any]], bool]) -> bool:
    return all(check(models) for models in worker_models(stack))


@pytest.fixture
def client_for() -> Iterator[Callable[[Stack], openai.OpenAI]]:
    made: list[openai.OpenAI] = []

    def make(stack: Stack) -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=30))
        return made[-1]

    yield make
    for c in made:
        c.close()


def listed(client: openai.OpenAI) -> list[str]:
    return [m.id for m in client.models.list()]


def sent_upstream(upstream: Upstream) -> dict[str, Any]:
    last: dict[str, Any] = upstream_last_request(upstream.url)
    return last


def test_store_changes_reach_every_worker_by_their_poll(
    upstream: Upstream, tmp_path: Path, client_for: Callable[[Stack], openai.OpenAI]
) -> None:
    stack = start_stack(stack_config(upstream.port, tmp_path), upstream.port, tmp_path)
    try:
        client = client_for(stack)
        config = config_of(stack)

        # A new model on a config provider: listed everywhere, and it answers.
        on_store(
            stack,
            lambda s: ModelRepository(s).create_model(
                "runtime-echo", provider="dev", upstream_model="dev-echo", context_length=2048,
                input_price_per_1m=0.5, output_price_per_1m=1.5, capabilities=["chat", "streaming"],
            ),
        )  # fmt: skip
        eventually(lambda: on_every_worker(stack, lambda ms: "runtime-echo" in ms))
        eventually(lambda: "runtime-echo" in listed(client))
        model = client.models.retrieve("runtime-echo")
        assert model.model_extra is not None and model.model_extra["pricing"]["input_per_1m"] == 0.5
        assert model.model_extra["context_length"] == 2048 and model.model_extra["capabilities"]["functions"] is False
        answer = client.chat.completions.create(model="runtime-echo", messages=HELLO)
        assert answer.choices[0].message.content
        assert sent_upstream(upstream)["body"]["model"] == "dev-echo"
        with pytest.raises(openai.BadRequestError):  # its capabilities say so
            client.embeddings.create(model="runtime-echo", input="x")

        # Its upstream and price change.
        on_store(
            stack,
            lambda s: ModelRepository(s).update_model(
                "runtime-echo", upstream_model="renamed-upstream", input_price_per_1m=3.0
            ),
        )
        eventually(lambda: on_every_worker(stack, lambda ms: ms["runtime-echo"].pricing.input_per_1m == 3.0))
        client.chat.completions.create(model="runtime-echo", messages=HELLO)
        assert sent_upstream(upstream)["body"]["model"] == "renamed-upstream"

        # A provider only the store has, with its key stored encrypted: that key goes upstream.
        async def vault(store: Store) -> None:
            providers = ProviderRepository(store, load_cipher(config, {}, create=True))
            await providers.create_provider("vault", provider_type="openai", base_url=f"{upstream.url}/v1")
            await providers.set_key("vault", VAULT_KEY)
            await ModelRepository(store).create_model("vault-model", provider="vault", upstream_model="dev-echo")

        on_store(stack, vault)
        eventually(lambda: on_every_worker(stack, lambda ms: "vault-model" in ms))
        client.chat.completions.create(model="vault-model", messages=HELLO)
        assert sent_upstream(upstream)["headers"]["authorization"] == f"Bearer {VAULT_KEY}"

        # Deleted: gone everywhere.
        on_store(stack, lambda s: ModelRepository(s).delete_model("runtime-echo"))
        eventually(lambda: on_every_worker(stack, lambda ms: "runtime-echo" not in ms))
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="runtime-echo", messages=HELLO)

        # The config's provider disabled in the store: it and all its models go; the others stay.
        dev = config.provider("dev")
        on_store(
            stack,
            lambda s: ProviderRepository(s).create_provider(
                "dev", provider_type="openai", base_url=dev.base_url, enabled=False
            ),
        )
        eventually(lambda: on_every_worker(stack, lambda ms: "dev-echo" not in ms and "gpt-test" not in ms))
        assert "vault-model" in listed(client) and "dev-echo" not in listed(client)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="dev-echo", messages=HELLO)
        health = request(stack.base_url.removesuffix("/v1") + "/health").json()
        assert "dev" not in [p["id"] for p in health["providers"]] and "vault" in [p["id"] for p in health["providers"]]

        # Enabled again: back, still with the config's api_key_env (the row stores no key).
        on_store(stack, lambda s: ProviderRepository(s).update_provider("dev", enabled=True))
        eventually(lambda: on_every_worker(stack, lambda ms: "dev-echo" in ms))
        client.chat.completions.create(model="dev-echo", messages=HELLO)
        assert sent_upstream(upstream)["headers"]["authorization"] == "Bearer sk-upstream-secret"
    finally:
        stop(stack.proc)
    log = stack.log.read_text(errors="replace")
    assert "catalogue reloaded" in log and VAULT_KEY not in log


def ghostllm(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ghostllm", *args, "-c", str(Path(stack.log).parent / "ghostllm.yaml")],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip


def test_with_redis_every_worker_reloads_at_once_when_a_change_is_announced(
    upstream: Upstream, tmp_path: Path, client_for: Callable[[Stack], openai.OpenAI]
) -> None:
    watcher = require_redis()
    prefix = unique_prefix()
    config = stack_config(upstream.port, tmp_path)
    config["redis"] = {"url": REDIS_URL, "prefix": prefix}
    # Subscribed workers poll the store only every 10 minutes: what arrives sooner was pushed.
    config["catalogue"] = {"poll_pushed_s": 600}
    stack = start_stack(config, upstream.port, tmp_path)
    try:
        client = client_for(stack)
        channel = f"{prefix}changes"
        eventually(lambda: dict(watcher.pubsub_numsub(channel)).get(channel.encode()) == 2)
        time.sleep(0.5)  # each worker's own reload on subscribing is done

        out = ghostllm(stack, "model", "create", "pushed-model", "--provider", "dev", "--upstream-model", "dev-echo")
        assert out.returncode == 0 and "announced on Redis" in out.stdout, out.stderr
        eventually(lambda: on_every_worker(stack, lambda ms: "pushed-model" in ms))
        assert client.chat.completions.create(model="pushed-model", messages=HELLO).choices[0].message.content

        out = ghostllm(stack, "model", "update", "pushed-model", "--output-price", "7.5", "--json")
        assert out.returncode == 0, out.stderr
        eventually(lambda: on_every_worker(stack, lambda ms: ms["pushed-model"].pricing.output_per_1m == 7.5))

        # A change written by someone else, announced through the feed's own client.
        dev = config_of(stack).provider("dev")
        on_store(
            stack,
            lambda s: ProviderRepository(s).create_provider(
                "dev", provider_type="openai", base_url=dev.base_url, enabled=False
            ),
        )

        async def announce() -> None:
            feed = ChangeFeed(RedisConfig(url=REDIS_URL, prefix=prefix))
            try:
                await feed.publish(CATALOGUE)
            finally:
                await feed.close()

        asyncio.run(announce())
        eventually(lambda: on_every_worker(stack, lambda ms: "pushed-model" not in ms and "dev-echo" not in ms))

        on_store(stack, lambda s: ProviderRepository(s).update_provider("dev", enabled=True))
        asyncio.run(announce())
        eventually(lambda: on_every_worker(stack, lambda ms: "pushed-model" in ms))
        out = ghostllm(stack, "model", "delete", "pushed-model")
        assert out.returncode == 0 and "deleted model pushed-model" in out.stdout, out.stderr
        eventually(lambda: on_every_worker(stack, lambda ms: "pushed-model" not in ms))
        assert "pushed-model" not in listed(client)
    finally:
        stop(stack.proc)
        watcher.close()
