"""Discovered models refreshed in the background (issue 10): an upstream that starts listing
a model has it served by every worker without a restart, one it stops listing goes, and an
upstream that fails or hangs keeps its last list; /v1/models answers from the catalogue
meanwhile, never waiting on the provider.

The upstream is a small HTTP server in this process (an Ollama-like OpenAI-compatible
server whose list the test sets); `catalogue.discovery_interval_s` is half a second."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import openai
import pytest

from ghostllm.v1 import models_pb2, models_pb2_grpc
from tests.support import poll
from tests.support.auth import ADMIN_KEY, METADATA
from tests.support.procs import Stack, free_port, server_config, start_stack, stop

T = TypeVar("T")
WITHIN_S = 20.0  # rounds every 0.5 s and a 1.5 s poll; the bound only stops a broken run


def eventually(check: Callable[[], T], within_s: float = WITHIN_S) -> T:
    return poll.eventually(check, within_s)


@dataclass
class Listing:
    """What the upstream lists, and how it answers GET /v1/models (set by the test)."""

    models: list[str]
    mode: str = "ok"  # ok | fail (500) | hang (until released)
    listings: int = 0  # GET /v1/models answered or begun, whatever the mode
    chats: list[str] = field(default_factory=list)  # the model of each chat request
    release: threading.Event = field(default_factory=threading.Event)


def handler(state: Listing) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            state.listings += 1
            if state.mode == "hang":
                state.release.wait(60)
            if state.mode == "fail":
                self._json(500, {"error": {"message": "listing broke", "type": "server_error"}})
                return
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "local"} for m in state.models]
            self._json(200, {"object": "list", "data": data})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
            state.chats.append(body["model"])
            self._json(
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            )

    return Handler


@pytest.fixture
def upstream() -> Iterator[tuple[Listing, int]]:
    state = Listing(["alpha", "beta"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="listing-upstream", daemon=True)
    thread.start()
    try:
        yield state, int(server.server_address[1])
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def worker_models(stack: Stack) -> list[list[str]]:
    """Each worker's /v1/models, asked of the worker itself (not through Envoy's round robin)."""
    base = int(stack.config["server"]["worker_base_port"])
    seen = []
    for i in range(int(stack.config["server"]["workers"])):
        with grpc.insecure_channel(f"127.0.0.1:{base + i}") as channel:
            reply = models_pb2_grpc.ModelServiceStub(channel).ListModels(
                models_pb2.ListModelsRequest(), metadata=METADATA, timeout=10
            )
        seen.append(real([m.id for m in reply.data]))
    return seen


def real(ids: list[str]) -> list[str]:
    # Without routing.auto's model ("auto", listed while it is enabled): not the provider's.
    return [i for i in ids if i != "auto"]


def everywhere(stack: Stack, models: list[str]) -> bool:
    return all(listed == models for listed in worker_models(stack))


def test_discovered_models_follow_the_upstream_and_survive_its_failures(
    upstream: tuple[Listing, int], tmp_path: Path
) -> None:
    state, port = upstream
    config = {
        "server": server_config(tmp_path, 2, shutdown_grace_s=5),
        "catalogue": {"discovery_interval_s": 0.5},
        # Health rounds would list models too: only the one before serving.
        "routing": {"health_check_interval_s": 3600},
        "providers": [
            {"id": "local", "type": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "discover_models": True}
        ],
        "models": [],
    }
    stack = start_stack(config, port, tmp_path)
    discovered = Path(config["server"]["run_dir"]) / "discovered.json"
    try:
        # Discovered at start, before the workers served.
        assert everywhere(stack, ["alpha", "beta"])

        # The upstream pulls a model and drops one: every worker follows, no restart.
        state.models = ["alpha", "gamma"]
        eventually(lambda: everywhere(stack, ["alpha", "gamma"]))
        with openai.OpenAI(base_url=stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=30) as client:
            assert real([m.id for m in client.models.list()]) == ["alpha", "gamma"]
            assert client.chat.completions.create(model="gamma", messages=[{"role": "user", "content": "hi"}])
            assert state.chats[-1] == "gamma"
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "hi"}])

            # Failing, then hanging: the last list stays, in the file and on every worker, and
            # /v1/models answers from the catalogue while the upstream hangs (a listing on the
            # request path would wait for the release, past the client's timeout).
            for mode in ("fail", "hang"):
                state.mode, seen = mode, state.listings
                eventually(lambda: state.listings >= seen + 2)  # noqa: B023 - called here, in this iteration
                assert json.loads(discovered.read_bytes()) == {"local": ["alpha", "gamma"]}
                assert everywhere(stack, ["alpha", "gamma"])
                with openai.OpenAI(base_url=stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=10) as quick:
                    assert real([m.id for m in quick.models.list()]) == ["alpha", "gamma"]
                    assert quick.models.retrieve("gamma").id == "gamma"

            # Answering again, with another list.
            state.models, state.mode = ["delta"], "ok"
            state.release.set()
            eventually(lambda: everywhere(stack, ["delta"]))
            assert real([m.id for m in client.models.list()]) == ["delta"]
    finally:
        stop(stack.proc)
    log = stack.log.read_text(errors="replace")
    assert "model discovery: provider local: added gamma; gone beta" in log
    assert "model discovery: no answer from local; its last list stays" in log
    assert "catalogue reloaded (discovery)" in log
