"""A GhostLLM stack with one native provider in front of its emulator, and the helpers the
provider tests share: the public models (`<prefix>-chat`, `-embed` and one per scenario),
the openai SDK clients pointed at a stack, a stream folded into the answer it adds up to,
what the emulator received, and the upstream-error checks every provider runs.

`gateway()` builds the stack from a fixed model table; a test that needs its own table
(several providers, per-model options) builds its config and uses `running_stack`,
`sdk` and the emulator-record helpers alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.auth import ADMIN_KEY
from tests.support.procs import (
    Stack,
    Upstream,
    emulator,
    emulator_received,
    reset_emulator,
    running_stack,
    server_config,
)

ALL_CAPABILITIES = ["chat", "streaming", "functions", "vision", "completions", "structured_output"]
SCENARIOS = ("error-400", "error-401", "error-404", "error-429", "error-500", "error-503", "stream-error")
KEY_ENV = "GHOSTLLM_TEST_UPSTREAM_KEY"
# start_stack's value for KEY_ENV: what the emulator must receive as the provider key.
UPSTREAM_KEY = "sk-upstream-secret"


def sdk(stack: Stack) -> openai.OpenAI:
    """The openai SDK at `stack` as every provider test drives it: no retries, so an
    upstream error is seen once, as the gateway answered it."""
    return openai.OpenAI(base_url=stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=30)


def async_sdk(stack: Stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key=ADMIN_KEY, max_retries=0, timeout=30)


@dataclass
class Gateway:
    stack: Stack
    upstream: Upstream
    provider: str
    sdk: openai.OpenAI

    def model(self, name: str) -> str:
        return f"{self.provider}-{name}"

    def reset(self) -> None:
        reset_emulator(self.upstream)

    def received(self) -> list[dict[str, Any]]:
        return emulator_received(self.upstream)

    def health(self) -> dict[str, Any]:
        found = httpx.get(f"http://127.0.0.1:{self.stack.rest_port}/health", timeout=10).json()
        mine: dict[str, Any] = {p["id"]: p for p in found["providers"]}[self.provider]
        return mine

    def aclient(self) -> openai.AsyncOpenAI:
        return async_sdk(self.stack)


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
        with running_stack(config, up, tmp) as stack, sdk(stack) as client:
            yield Gateway(stack, up, provider_type, client)


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


def user(text: Any) -> Any:
    """One user message, its content text or a list of parts."""
    return [{"role": "user", "content": text}]


def streamed_and_whole(gw: Gateway, request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """The answer to `request` streamed (usage asked for) and folded, the whole answer, and
    the chunks; tool-call ids, which each answer draws anew, checked and taken out."""
    answer = whole(gw.sdk.chat.completions.create(model=gw.model("chat"), **request))
    chunks = list(
        gw.sdk.chat.completions.create(
            model=gw.model("chat"), stream=True, stream_options={"include_usage": True}, **request
        )
    )
    streamed = fold(chunks)
    for side in (answer, streamed):
        for call in side["calls"]:
            assert call.pop("id").startswith("call_")
    return streamed, answer, chunks


def check_async_chats(gw: Gateway) -> None:
    """Three chats at once through the async SDK each get their own answer."""

    async def run() -> Any:
        async with gw.aclient() as client:
            return await asyncio.gather(
                *(client.chat.completions.create(model=gw.model("chat"), messages=user(f"async {i}")) for i in range(3))
            )

    answers = asyncio.run(run())
    assert [a.choices[0].message.content for a in answers] == [f"You said: async {i}" for i in range(3)]


def check_upstream_error(gw: Gateway, scenario: str, status: int, etype: str, *, stream: bool) -> None:
    """The emulator's `scenario` error reaches the SDK as `status`/`etype`, naming the provider;
    a 429 keeps the emulator's retry-after."""
    with pytest.raises(openai.APIStatusError) as exc:
        result = gw.sdk.chat.completions.create(model=gw.model(scenario), messages=user("x"), stream=stream)
        if stream:
            list(result)
    err = exc.value
    assert err.status_code == status
    body: Any = err.body
    assert body["type"] == etype and gw.provider in body["message"]
    if scenario == "error-429":
        assert err.response.headers["retry-after"] == "7"


def check_stream_error_after_relayed(gw: Gateway, message: str) -> None:
    """The stream-error scenario fails in band, after the content sent before it reached the client."""
    seen: list[str] = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in gw.sdk.chat.completions.create(
            model=gw.model("stream-error"), messages=user("a b c"), stream=True
        ):
            seen.extend(c.delta.content or "" for c in chunk.choices)
    assert message in exc.value.message
    assert "".join(seen) == "You said: "
