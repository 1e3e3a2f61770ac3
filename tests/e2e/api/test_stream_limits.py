"""What bounds a long healthy stream: the worker ends it at `request_timeout_s` minus a second,
with an in-band error event (before Envoy's route timeout would cut it with no event), and the
usage record says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.api.test_access_log import record_for
from tests.support.auth import ADMIN_KEY
from tests.support.http import request
from tests.support.procs import Stack, stack_config, start_stack, stop


@pytest.fixture(scope="module")
def short_stack(upstream_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("short")
    s = start_stack(stack_config(upstream_port, tmp, workers=1, request_timeout_s=3), upstream_port, tmp)
    try:
        yield s
    finally:
        stop(s.proc)


BODY = {"model": "slow-chunks-300", "stream": True, "messages": [{"role": "user", "content": "tell a long story"}]}


def test_stream_over_the_limit_ends_with_an_error_event(short_stack: Stack) -> None:
    reply = request(f"{short_stack.base_url}/chat/completions", BODY)
    assert reply.status == 200
    events = reply.events()
    assert "[DONE]" not in events
    err = json.loads(events[-1])["error"]
    assert err["type"] == "timeout_error" and "stream limit" in err["message"]
    assert any(json.loads(e).get("choices") for e in events[:-1])  # it had started streaming
    r = record_for(Path(short_stack.log), reply.headers["x-request-id"])
    assert (r["status"], r["error_code"], r["estimated"]) == (504, "timeout", True)
    assert r["completion_tokens"] > 0


def test_the_sdk_raises_it(short_stack: Stack) -> None:
    with openai.OpenAI(base_url=short_stack.base_url, api_key=ADMIN_KEY, max_retries=0) as client:
        stream = client.chat.completions.create(**BODY)  # type: ignore[call-overload]
        with pytest.raises(openai.APIError, match="stream limit"):
            for _ in stream:
                pass


@pytest.fixture(scope="module")
def idle_stack(upstream_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("idle")
    config = stack_config(upstream_port, tmp, workers=1, stream_idle_timeout_s=2)
    config["models"].append({"id": "slow-chunks-1500", "provider": "dev"})
    s = start_stack(config, upstream_port, tmp)
    try:
        yield s
    finally:
        stop(s.proc)


def test_a_silent_stream_is_ended_before_envoys_idle_timeout(idle_stack: Stack) -> None:
    # 1.5 s between chunks: over the worker's 1 s silence limit (Envoy's idle timeout minus a second).
    body = {**BODY, "model": "slow-chunks-1500"}
    reply = request(f"{idle_stack.base_url}/chat/completions", body)
    events = reply.events()
    err = json.loads(events[-1])["error"] if reply.status == 200 else reply.json()["error"]
    assert err["type"] == "timeout_error" and "sent nothing for 1s" in err["message"]
    r = record_for(Path(idle_stack.log), reply.headers["x-request-id"])
    assert (r["status"], r["error_code"]) == (504, "timeout")
