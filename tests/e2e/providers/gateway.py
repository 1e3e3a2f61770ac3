"""A GhostLLM stack with one native provider in front of its emulator, and the helpers the
provider tests share: the public models (`<prefix>-chat`, `-embed` and one per scenario),
a stream folded into the answer it adds up to, and what the emulator received."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.support.auth import ADMIN_KEY
from tests.support.procs import Stack, Upstream, emulator, server_config, start_stack, stop

ALL_CAPABILITIES = ["chat", "streaming", "functions", "vision", "completions", "structured_output"]
SCENARIOS = ("error-400", "error-401", "error-404", "error-429", "error-500", "error-503", "stream-error")
KEY_ENV = "GHOSTLLM_TEST_UPSTREAM_KEY"
# start_stack's value for KEY_ENV: what the emulator must receive as the provider key.
UPSTREAM_KEY = "sk-upstream-secret"


@dataclass
class Gateway:
    stack: Stack
    upstream: Upstream
    provider: str
    sdk: openai.OpenAI

    def model(self, name: str) -> str:
        return f"{self.provider}-{name}"

    def reset(self) -> None:
        httpx.post(f"{self.upstream.url}/_emulator/reset", timeout=10).raise_for_status()

    def received(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(f"{self.upstream.url}/_emulator/requests", timeout=10).json()
        return found

    def health(self) -> dict[str, Any]:
        found = httpx.get(f"http://127.0.0.1:{self.stack.rest_port}/health", timeout=10).json()
        mine: dict[str, Any] = {p["id"]: p for p in found["providers"]}[self.provider]
        return mine

    def aclient(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=30)


@contextlib.contextmanager
def gateway(tmp: Path, provider_type: str, chat: str, embed: str, **provider: Any) -> Iterator[Gateway]:
    """`provider_type`'s emulator and a one-worker stack whose provider (id = the type) points at it."""
    with emulator(tmp, provider_type) as up:
        public = [("chat", chat), ("embed", embed), *((s, s) for s in SCENARIOS)]
        config = {
            "server": server_config(tmp, 1, shutdown_grace_s=5),
            "providers": [
                {"id": provider_type, "type": provider_type, "base_url": up.url, "api_key_env": KEY_ENV,
                 "timeout_s": 20, **provider}
            ],
            "models": [
                {"id": f"{provider_type}-{name}", "provider": provider_type, "upstream_model": upstream,
                 "context_length": 32768, "input_price_per_1m": 1.0, "output_price_per_1m": 2.0,
                 "capabilities": ["embeddings"] if name == "embed" else ALL_CAPABILITIES}
                for name, upstream in public
            ],
        }  # fmt: skip
        stack = start_stack(config, up.port, tmp)
        try:
            with openai.OpenAI(base_url=stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=30) as sdk:
                yield Gateway(stack, up, provider_type, sdk)
        finally:
            stop(stack.proc)


def fold(chunks: list[Any]) -> dict[str, Any]:
    """openai SDK chunks folded into the non-streaming answer's terms."""
    content: str | None = None
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    roles = set()
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage.model_dump(exclude_none=True)
        for choice in chunk.choices:
            delta = choice.delta
            if delta.role:
                roles.add(delta.role)
            if delta.content is not None:
                content = (content or "") + delta.content
            for tc in delta.tool_calls or ():
                call = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = call["id"] or tc.id
                if tc.function is not None:
                    call["name"] += tc.function.name or ""
                    call["arguments"] += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    return {
        "roles": roles,
        "content": content,
        "calls": [calls[i] for i in sorted(calls)],
        "finish_reason": finish,
        "usage": usage,
    }


def whole(completion: Any) -> dict[str, Any]:
    """A non-streaming answer in fold()'s terms."""
    choice = completion.choices[0]
    return {
        "roles": {choice.message.role},
        "content": choice.message.content,
        "calls": [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in choice.message.tool_calls or ()
        ],
        "finish_reason": choice.finish_reason,
        "usage": completion.usage.model_dump(exclude_none=True) if completion.usage else None,
    }
