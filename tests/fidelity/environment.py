"""The processes the fidelity proof runs against: one GhostLLM stack with every provider in it.

- `case_environment`: a replay upstream per provider type (anthropic, gemini, ollama) serving
  the shared cases, and the models the cases name (claude-test, gemini-test, ollama-test).
  The recorded listings (anthropic/models_list, ollama/tags) are what those replay servers
  answer to model discovery, so the gateway's /v1/models shows whether they were understood.
- `matrix_environment`: the emulators (ghostllm/emulators) and the development upstream (the
  OpenAI reference column), with a chat model and the error scenario models per provider.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from tests.fidelity.answer import Client
from tests.fidelity.cases import Case, upstream_body
from tests.support.procs import Stack, Upstream, dev_upstream, emulator, server_config, start_stack, stop
from tests.support.replay import ReplayServer

ALL_CAPABILITIES: Final = ["chat", "streaming", "functions", "vision", "structured_output"]
KEY_ENV: Final = "GHOSTLLM_TEST_UPSTREAM_KEY"
# The public model each case names, by provider type.
CASE_MODELS: Final = {"anthropic": "claude-test", "gemini": "gemini-test", "ollama": "ollama-test"}
# Aux cases: recorded listings served at the provider's listing path.
LISTING_CASES: Final = {"anthropic/models_list": "/v1/models", "ollama/tags": "/api/tags"}


@dataclass
class CaseEnvironment:
    stack: Stack
    replays: dict[str, ReplayServer]
    client: Client
    # The aux cases the listings came from, by provider.
    listings: dict[str, Case] = field(default_factory=dict)


@contextlib.contextmanager
def case_environment(tmp: Path, cases: list[Case]) -> Iterator[CaseEnvironment]:
    with contextlib.ExitStack() as exits:
        replays = {p: exits.enter_context(ReplayServer([m])) for p, m in CASE_MODELS.items()}
        listings: dict[str, Case] = {}
        for case in cases:
            suffix = LISTING_CASES.get(case["id"])
            if suffix is not None:
                replays[case["provider"]].serve_listing(
                    suffix, case["upstream_status"], case["upstream_headers"], upstream_body(case)
                )
                listings[case["provider"]] = case
        config = {
            "server": server_config(tmp, 1, shutdown_grace_s=5),
            # One call, one upstream request: the matrix judges translation, not the retry policy
            # (an upstream error retried would be sent twice), nor the background health checks.
            "routing": {"retries": 0, "health_check_interval_s": 3600},
            "providers": [
                {
                    "id": p,
                    "type": p,
                    "base_url": server.url,
                    "api_key_env": KEY_ENV,
                    # Discovery reads the recorded listing (where there is one) at start-up.
                    "discover_models": p in listings,
                    "timeout_s": 20,
                }
                for p, server in replays.items()
            ],
            "models": [
                {"id": m, "provider": p, "context_length": 200000, "capabilities": ALL_CAPABILITIES}
                for p, m in CASE_MODELS.items()
            ],
        }
        stack = start_stack(config, replays["anthropic"].port, tmp)
        exits.callback(stop, stack.proc)
        client = Client(stack.base_url)
        exits.callback(client.close)
        yield CaseEnvironment(stack, replays, client, listings)


# -- the matrix --------------------------------------------------------------------------

EMULATED: Final = ("anthropic", "gemini", "ollama", "azure")
# Upstream scenario models (the emulators' contract; the development upstream's names).
SCENARIOS: Final = ("error-400", "error-401", "error-429", "error-500", "stream-error")
DEV_SCENARIOS: Final = {"stream-error": "cut-stream"}


@dataclass
class Target:
    """One provider column: where its upstream runs and how to read what it received."""

    provider: str
    upstream: Upstream
    http: httpx.Client

    @property
    def chat_model(self) -> str:
        return f"{self.provider}-chat"

    def scenario_model(self, scenario: str) -> str:
        return f"{self.provider}-{scenario}"

    def reset(self) -> None:
        path = "/_dev/reset" if self.provider == "openai" else "/_emulator/reset"
        self.http.post(self.upstream.url + path).raise_for_status()

    def sent(self) -> list[dict[str, Any]]:
        """The chat requests the upstream received since the last reset, oldest first."""
        if self.provider == "openai":
            last = self.http.get(self.upstream.url + "/_dev/stats").json()["last_request"]
            found = [last] if last else []
        else:
            found = self.http.get(self.upstream.url + "/_emulator/requests").json()
            if isinstance(found, dict):
                found = found.get("requests", [])
        return [r for r in found if _is_generation(r)]


def _is_generation(request: dict[str, Any]) -> bool:
    path = str(request.get("path", "")).partition("?")[0]
    return request.get("method") == "POST" and not path.endswith(("/api/show", "/reset"))


@dataclass
class MatrixEnvironment:
    stack: Stack
    targets: dict[str, Target]
    client: Client
    # Providers whose emulator could not start (its module is not there yet), with why.
    missing: dict[str, str] = field(default_factory=dict)


def _emulator_module(provider: str) -> Path:
    return Path(__file__).resolve().parents[2] / "ghostllm" / "emulators" / f"{provider}.py"


@contextlib.contextmanager
def matrix_environment(tmp: Path, providers: tuple[str, ...] = ("openai", *EMULATED)) -> Iterator[MatrixEnvironment]:
    tmp.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as exits:
        http = exits.enter_context(httpx.Client(timeout=10))
        upstreams: dict[str, Upstream] = {}
        missing: dict[str, str] = {}
        for p in providers:
            if p == "openai":
                upstreams[p] = exits.enter_context(dev_upstream(tmp))
                continue
            if not _emulator_module(p).exists():
                missing[p] = f"ghostllm/emulators/{p}.py does not exist yet"
                continue
            try:
                upstreams[p] = exits.enter_context(emulator(tmp, p))
            except (RuntimeError, TimeoutError) as err:
                log = sorted(tmp.glob(f"emulator-{p}-*.log"))
                missing[p] = f"emulator did not start ({err}): {log[-1].read_text()[-500:] if log else ''}"
        config = {
            "server": server_config(tmp, 1, shutdown_grace_s=5),
            # One call, one upstream request: the matrix judges translation, not the retry policy
            # (an upstream error retried would be sent twice), nor the background health checks.
            "routing": {"retries": 0, "health_check_interval_s": 3600},
            "providers": [_provider(p, u) for p, u in upstreams.items()],
            "models": [m for p in upstreams for m in _models(p)],
        }
        (tmp / "matrix-config.json").write_text(json.dumps(config, indent=1))
        any_port = next(iter(upstreams.values())).port
        stack = start_stack(config, any_port, tmp)
        exits.callback(stop, stack.proc)
        client = Client(stack.base_url)
        exits.callback(client.close)
        targets = {p: Target(p, u, http) for p, u in upstreams.items()}
        yield MatrixEnvironment(stack, targets, client, missing)


def _provider(provider: str, upstream: Upstream) -> dict[str, Any]:
    base_url = upstream.url + "/v1" if provider == "openai" else upstream.url
    return {"id": provider, "type": provider, "base_url": base_url, "api_key_env": KEY_ENV, "timeout_s": 20}


def _models(provider: str) -> list[dict[str, Any]]:
    chat_upstream = "dev-echo" if provider == "openai" else f"{provider}-small"
    models = [
        {
            "id": f"{provider}-chat",
            "provider": provider,
            "upstream_model": chat_upstream,
            "context_length": 128000,
            "capabilities": ALL_CAPABILITIES,
        }
    ]
    for scenario in SCENARIOS:
        upstream = DEV_SCENARIOS.get(scenario, scenario) if provider == "openai" else scenario
        models.append(
            {
                "id": f"{provider}-{scenario}",
                "provider": provider,
                "upstream_model": upstream,
                "capabilities": ALL_CAPABILITIES,
            }
        )
    return models
