"""Every error a REST client can see: OpenAI-shaped body, right status, nothing lost."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.support.http import Reply, check_error, request
from tests.support.openapi import validate
from tests.support.procs import Stack

HELLO = [{"role": "user", "content": "hi"}]


def post(stack: Stack, body: bytes | dict[str, Any], path: str = "/chat/completions") -> Reply:
    return request(stack.base_url + path, body)


def test_malformed_json(stack: Stack) -> None:
    check_error(post(stack, b'{"model": "dev-echo",'), 400, "invalid_request_error")


def test_wrong_type(stack: Stack) -> None:
    err = check_error(post(stack, {"model": "dev-echo", "messages": HELLO, "temperature": "hot"}), 400)
    assert "temperature" in err["message"]


def test_out_of_range(stack: Stack) -> None:
    err = check_error(post(stack, {"model": "dev-echo", "messages": HELLO, "temperature": 5}), 400)
    assert err["param"] == "temperature"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO}, "model"),
        ({"model": "dev-embed", "messages": HELLO}, "model"),  # an embeddings-only model
        ({"model": "dev-echo", "messages": []}, "messages"),
        ({"model": "dev-echo", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "dev-echo", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"model": "dev-echo", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "dev-echo", "messages": HELLO, "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"model": "dev-echo", "messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages[0].content[0]",
        ),
    ],
)
def test_invalid_request(stack: Stack, body: dict[str, Any], param: str) -> None:
    err = check_error(post(stack, body), 400, "invalid_request_error")
    assert err["param"] == param


def test_unknown_model(client: openai.OpenAI, stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert exc.value.status_code == 404
    check_error(
        post(stack, {"model": "no-such-model", "messages": HELLO}), 404, "invalid_request_error", "model_not_found"
    )


def test_unknown_path(stack: Stack) -> None:
    check_error(request(stack.base_url + "/nothing/here"), 404)


def test_oversize_body_is_413(stack: Stack) -> None:
    big = "a" * (33 * 1024 * 1024)
    reply = post(stack, {"model": "dev-echo", "messages": [{"role": "user", "content": big}]})
    check_error(reply, 413, "invalid_request_error", "request_too_large")


@pytest.mark.parametrize(
    ("model", "status", "exc_type"),
    [
        ("error-500", 502, openai.InternalServerError),
        ("error-503", 503, openai.InternalServerError),
        ("error-401", 502, openai.InternalServerError),  # the upstream's credentials, not the client's
        ("error-400", 400, openai.BadRequestError),
        ("error-429", 429, openai.RateLimitError),
        ("reset", 502, openai.InternalServerError),
        ("unreachable", 502, openai.InternalServerError),
        ("too-slow", 504, openai.InternalServerError),
        ("garbage-sse", 502, openai.InternalServerError),
    ],
)
def test_upstream_failures(
    client: openai.OpenAI, stack: Stack, model: str, status: int, exc_type: type[Exception]
) -> None:
    with pytest.raises(exc_type) as exc:
        client.chat.completions.create(model=model, messages=HELLO)
    assert getattr(exc.value, "status_code", None) == status
    for stream in (False, True):
        check_error(post(stack, {"model": model, "messages": HELLO, "stream": stream}), status)


def test_upstream_401_is_provider_error(stack: Stack) -> None:
    check_error(post(stack, {"model": "error-401", "messages": HELLO}), 502, "provider_error")


def test_rate_limit_passes_retry_after(stack: Stack) -> None:
    reply = post(stack, {"model": "error-429", "messages": HELLO})
    check_error(reply, 429, "rate_limit_error")
    assert reply.headers["retry-after"] == "7"


def test_timeout_is_504(stack: Stack) -> None:
    check_error(post(stack, {"model": "hangs", "messages": HELLO}), 504, "timeout_error")


def test_stream_cut_midway_ends_with_error_event(client: openai.OpenAI, stack: Stack) -> None:
    reply = post(stack, {"model": "cut-stream", "messages": HELLO, "stream": True})
    assert reply.status == 200
    events = reply.events()
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    validate("ErrorResponse", last)
    assert last["error"]["type"] == "provider_error"
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="cut-stream", messages=HELLO, stream=True):
            pass


def test_non_ascii_in_error_message(stack: Stack) -> None:
    err = check_error(post(stack, {"model": "modèle-ü 模型", "messages": HELLO}), 404, code="model_not_found")
    assert "modèle-ü 模型" in err["message"]
