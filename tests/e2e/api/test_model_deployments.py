"""Deployments managed through the admin API (issue 10): a store model with several
deployments, a strategy, fallbacks and retries, created and changed over REST (through
Envoy), native gRPC and the CLI, is served by every worker within seconds, routed as stored
(priority fails over from a dead first deployment to the second, weighted spreads, a
fallback answers when every deployment failed), and every write is checked and audited.

One stack for the module (two workers, a development upstream, the stack's own SQLite
store, no Redis: the workers' poll delivers changes). Each worker is asked directly over
gRPC, so "every worker" is not left to Envoy's round robin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import struct_pb2

from ghostllm.v1 import admin_pb2, admin_pb2_grpc, chat_pb2, chat_pb2_grpc, openai_pb2
from tests.support import poll
from tests.support.auth import METADATA, authorized
from tests.support.http import Reply, check_error, request
from tests.support.procs import ROOT, Stack, Upstream, dev_upstream, running_stack, stack_config

T = TypeVar("T")
# The gateway promises 5 s; the bound only stops a broken run (a busy machine must not flake it).
WITHIN_S = 15.0
HEADER = "x-ghostllm-deployment"
HELLO = [{"role": "user", "content": "Hello"}]
# Two deployments of the development upstream's echo model; `dead` answers nowhere.
DEAD, DEV, SHORT = (
    {"provider": p, "upstream_model": "dev-echo"} for p in ("dead", "dev", "dev-short")
)  # fmt: skip


def eventually(check: Callable[[], T], within_s: float = WITHIN_S) -> T:
    return poll.eventually(check, within_s)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("deployments")
    with dev_upstream(tmp) as upstream, running_stack(_config(upstream, tmp), upstream, tmp) as s:
        yield s


def _config(upstream: Upstream, tmp: Path) -> dict[str, Any]:
    config = stack_config(upstream.port, tmp)
    # Quick failovers from the dead deployment: one retry after 10-20 ms.
    config["routing"].update(backoff_base_s=0.01, backoff_max_s=0.02)
    return config


def api(stack: Stack, path: str, body: dict[str, Any] | None = None, *, method: str | None = None) -> Reply:
    return request(f"http://localhost:{stack.rest_port}{path}", body, method=method)


def ok(reply: Reply) -> Any:
    assert reply.status == 200, reply.body[:1000]
    return reply.json()


def chat(stack: Stack, model: str) -> Reply:
    return api(stack, "/v1/chat/completions", {"model": model, "messages": HELLO})


def served_by(stack: Stack) -> Callable[[str], list[str | None]]:
    """Per worker, asked directly: the deployment that answered a chat for the model (None
    while that worker does not serve it, or when it failed)."""
    base = int(stack.config["server"]["worker_base_port"])
    message = openai_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value="Hello"))

    def ask(model: str) -> list[str | None]:
        seen: list[str | None] = []
        for i in range(int(stack.config["server"]["workers"])):
            with grpc.insecure_channel(f"127.0.0.1:{base + i}") as channel:
                stub = chat_pb2_grpc.ChatServiceStub(channel)
                try:
                    _, call = stub.CreateChatCompletion.with_call(
                        chat_pb2.ChatCompletionRequest(model=model, messages=[message]), metadata=METADATA, timeout=10
                    )
                except grpc.RpcError:
                    seen.append(None)
                    continue
            seen.append(dict(call.initial_metadata()).get(HEADER))
        return seen

    return ask


def on_every_worker(stack: Stack, model: str, key: str) -> bool:
    return all(k == key for k in served_by(stack)(model))


def shown(d: dict[str, Any]) -> tuple[str, str, float]:
    return d["provider"], d["upstream_model"], d["weight"]


def test_two_deployments_fail_over_in_priority_order_and_changes_reach_every_worker(stack: Stack) -> None:
    model = unique("pair")
    created = ok(api(stack, "/admin/models", {"id": model, "deployments": [DEAD, DEV], "capabilities": ["chat"]}))
    assert created["source"] == "database" and created["strategy"] == "priority" and created["fallbacks"] == []
    assert [shown(d) for d in created["deployments"]] == [("dead", "dev-echo", 1), ("dev", "dev-echo", 1)]
    assert created["provider"] == "dead" and "retries" not in created
    listed = next(m for m in ok(api(stack, "/admin/models"))["models"] if m["id"] == model)
    assert listed == created

    # Served by every worker within seconds; the dead first deployment fails over to the second.
    eventually(lambda: on_every_worker(stack, model, "dev/dev-echo"))
    reply = chat(stack, model)
    assert reply.status == 200 and reply.headers[HEADER] == "dev/dev-echo" and reply.json()["model"] == model

    # New deployments, in a new order: seen everywhere.
    updated = ok(api(stack, f"/admin/models/{model}", {"deployments": [SHORT, DEAD]}, method="PATCH"))
    assert [d["provider"] for d in updated["deployments"]] == ["dev-short", "dead"]
    eventually(lambda: on_every_worker(stack, model, "dev-short/dev-echo"))

    # Weighted, evenly: both deployments serve (60 requests: both seen but with odds of 2^-59).
    both = [{**DEV, "weight": 1}, {**SHORT, "weight": 1}]
    updated = ok(api(stack, f"/admin/models/{model}", {"deployments": both, "strategy": "weighted"}, method="PATCH"))
    assert updated["strategy"] == "weighted"
    eventually(lambda: all(k in ("dev/dev-echo", "dev-short/dev-echo") for k in served_by(stack)(model)))
    keys = {chat(stack, model).headers[HEADER] for _ in range(60)}
    assert keys == {"dev/dev-echo", "dev-short/dev-echo"}

    trail = [e for e in ok(api(stack, "/admin/audit?limit=20"))["entries"] if e["target_id"] == model]
    assert [e["action"] for e in trail] == ["model.update", "model.update", "model.create"]
    assert trail[0]["detail"]["strategy"] == "weighted" and trail[-1]["detail"]["deployments"][0]["provider"] == "dead"
    ok(api(stack, f"/admin/models/{model}", method="DELETE"))
    eventually(lambda: served_by(stack)(model) == [None, None])


def test_a_stored_deployments_own_time_to_first_token_limit_fails_over(stack: Stack) -> None:
    """A deployment that accepts and never answers (the dev upstream's "hang") with its own
    1 s ttft_timeout_s (its provider allows 600 s): the request fails over to the next one."""
    model = unique("slow-first")
    hang = {"provider": "dev", "upstream_model": "hang", "ttft_timeout_s": 1}
    created = ok(api(stack, "/admin/models", {"id": model, "deployments": [hang, DEV], "capabilities": ["chat"]}))
    assert created["deployments"][0]["ttft_timeout_s"] == 1 and "ttft_timeout_s" not in created["deployments"][1]
    eventually(lambda: on_every_worker(stack, model, "dev/dev-echo"))
    reply = chat(stack, model)
    assert reply.status == 200 and reply.headers[HEADER] == "dev/dev-echo"
    ok(api(stack, f"/admin/models/{model}", method="DELETE"))


def test_fallbacks_answer_when_every_deployment_failed_and_can_be_cleared(stack: Stack) -> None:
    model = unique("lonely")
    body = {"id": model, "deployments": [DEAD], "fallbacks": ["dev-echo"], "retries": 0}
    created = ok(api(stack, "/admin/models", body))
    assert created["fallbacks"] == ["dev-echo"] and created["retries"] == 0
    eventually(lambda: on_every_worker(stack, model, "dev/dev-echo"))
    reply = chat(stack, model)
    assert reply.headers[HEADER] == "dev/dev-echo" and reply.json()["model"] == "dev-echo"  # the fallback answered

    cleared = ok(api(stack, f"/admin/models/{model}", {"clear": ["fallbacks", "retries"]}, method="PATCH"))
    assert cleared["fallbacks"] == [] and "retries" not in cleared
    eventually(lambda: served_by(stack)(model) == [None, None])  # the dead deployment alone: no answer
    assert chat(stack, model).status >= 500
    ok(api(stack, f"/admin/models/{model}", method="DELETE"))


def test_configured_models_show_their_deployments(stack: Stack) -> None:
    listed = {m["id"]: m for m in ok(api(stack, "/admin/models"))["models"]}
    echo = listed["dev-echo"]
    assert echo["source"] == "config" and echo["strategy"] == "priority" and echo["fallbacks"] == []
    assert [shown(d) for d in echo["deployments"]] == [("dev", "dev-echo", 1)]
    assert [shown(d) for d in listed["gpt-test"]["deployments"]] == [("dev", "dev-echo", 1)]


def test_bad_deployments_strategies_and_fallbacks_are_400s_that_change_nothing(stack: Stack) -> None:
    multi = unique("multi")
    ok(api(stack, "/admin/models", {"id": multi, "deployments": [DEV, SHORT]}))
    before = ok(api(stack, "/admin/models")), ok(api(stack, "/admin/audit?limit=1"))["pagination"]["total"]
    new = unique("new")
    ghost = {"provider": "ghost", "upstream_model": "x"}
    cases: list[tuple[str, str, dict[str, Any], str, str]] = [
        ("POST", "/admin/models", {"id": new, "deployments": [DEV, ghost]}, "deployments[1].provider", "'ghost'"),
        ("POST", "/admin/models", {"id": new, "provider": "ghost"}, "provider", "unknown provider 'ghost'"),
        ("POST", "/admin/models", {"id": new, "provider": "dev", "strategy": "fastest"}, "strategy", "'fastest'"),
        ("POST", "/admin/models", {"id": new, "deployments": [{**DEV, "weight": 0}]}, "deployments[0].weight", "0"),
        ("POST", "/admin/models", {"id": new, "provider": "dev", "fallbacks": [new]}, "fallbacks[0]", "itself"),
        ("POST", "/admin/models", {"id": new, "provider": "dev", "fallbacks": ["nope"]}, "fallbacks[0]", "'nope'"),
        ("POST", "/admin/models", {"id": new, "provider": "dead", "deployments": [DEV]}, "deployments", "not both"),
        ("POST", "/admin/models", {"id": new, "provider": "dev", "retries": 11}, "retries", "0 to 10"),
        ("PATCH", f"/admin/models/{multi}", {"deployments": [ghost]}, "deployments[0].provider", "'ghost'"),
        ("PATCH", f"/admin/models/{multi}", {"provider": "dev"}, "provider", "2 deployments"),
        ("PATCH", f"/admin/models/{multi}", {"strategy": "random"}, "strategy", "'random'"),
        ("PATCH", f"/admin/models/{multi}", {"fallbacks": [multi]}, "fallbacks[0]", "itself"),
        ("PATCH", f"/admin/models/{multi}", {"fallbacks": ["dev-echo"], "clear": ["fallbacks"]}, "fallbacks", "both"),
        ("PATCH", f"/admin/models/{multi}", {"clear": ["deployments"]}, "clear", "cannot be cleared"),
    ]
    for method, path, body, param, words in cases:
        err = check_error(api(stack, path, body, method=method), 400)
        assert err["param"] == param and words in err["message"], (body, err)
    after = ok(api(stack, "/admin/models")), ok(api(stack, "/admin/audit?limit=1"))["pagination"]["total"]
    assert after == before
    ok(api(stack, f"/admin/models/{multi}", method="DELETE"))


def test_grpc_round_trip(stack: Stack) -> None:
    model = unique("grpc")
    with authorized(grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        created = admin.CreateModel(
            admin_pb2.CreateCatalogueModelRequest(
                id=model,
                deployments=[
                    admin_pb2.Deployment(provider="dead", upstream_model="dev-echo"),
                    admin_pb2.Deployment(provider="dev", upstream_model="dev-echo", weight=2, input_price_per_1m=0.5),
                ],
                strategy="lowest-cost",
                fallbacks=["dev-echo"],
                retries=1,
            )
        )
        assert created.strategy == "lowest-cost" and list(created.fallbacks) == ["dev-echo"] and created.retries == 1
        assert [(d.provider, d.weight) for d in created.deployments] == [("dead", 1.0), ("dev", 2.0)]
        assert created.deployments[1].input_price_per_1m == 0.5
        assert not created.deployments[0].HasField("input_price_per_1m")
        updated = admin.UpdateModel(admin_pb2.UpdateCatalogueModelRequest(id=model, clear=["fallbacks", "retries"]))
        assert list(updated.fallbacks) == [] and not updated.HasField("retries") and len(updated.deployments) == 2
        with pytest.raises(grpc.RpcError) as exc:
            admin.UpdateModel(admin_pb2.UpdateCatalogueModelRequest(id=model, strategy="sideways"))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # lowest-cost: the dev deployment's own price (0.5) beats the dead one's (the model's, 0).
        eventually(lambda: on_every_worker(stack, model, "dev/dev-echo"))
        assert admin.DeleteModel(admin_pb2.DeleteRequest(id=model)).deleted


def ghostllm(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ghostllm", *args, "-c", str(Path(stack.log).parent / "ghostllm.yaml")],
        capture_output=True, text=True, cwd=ROOT, timeout=60, env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip


def test_cli_creates_and_updates_deployments(stack: Stack) -> None:
    model = unique("cli")
    out = ghostllm(
        stack, "model", "create", model, "--deployment", "dead:dev-echo",
        "--deployment", "dev:dev-echo:2,input_price=1", "--fallback", "dev-echo", "--retries", "0", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)["model"]
    assert [(d["provider"], d["weight"], d["input_price_per_1m"]) for d in created["deployments"]] == [
        ("dead", 1.0, None),
        ("dev", 2.0, 1.0),
    ]
    assert created["fallbacks"] == ["dev-echo"] and created["retries"] == 0 and created["provider_id"] == "dead"
    eventually(lambda: on_every_worker(stack, model, "dev/dev-echo"))

    out = ghostllm(stack, "model", "update", model, "--deployment", "dev-short:dev-echo", "--no-fallbacks")
    assert out.returncode == 0 and f"updated model {model} (deployments, fallbacks)" in out.stdout, out.stderr
    eventually(lambda: on_every_worker(stack, model, "dev-short/dev-echo"))
    listing = json.loads(ghostllm(stack, "model", "list", "--json").stdout)["models"]
    mine = next(m for m in listing if m["id"] == model)
    assert [d["provider"] for d in mine["deployments"]] == ["dev-short"] and mine["fallbacks"] == [] and mine["served"]
    table = ghostllm(stack, "model", "list").stdout
    assert "dev-short/dev-echo" in table

    bad = ghostllm(stack, "model", "create", unique("cli"), "--deployment", "dev:dev-echo:0")
    assert bad.returncode == 1 and "deployments[0].weight" in bad.stderr
    bad = ghostllm(stack, "model", "create", unique("cli"), "--deployment", "dev:x,weight=2")
    assert bad.returncode == 2 and "input_price=USD" in bad.stderr
    assert ghostllm(stack, "model", "delete", model).returncode == 0
