"""POST /v1/completions (legacy text completions)."""

from __future__ import annotations

import json

import openai
import pytest

from tests.support.http import request
from tests.support.openapi import validate
from tests.support.procs import Stack


def test_non_streaming(client: openai.OpenAI, stack: Stack) -> None:
    result = client.completions.create(model="dev-echo", prompt="Say hi", max_tokens=50)
    assert result.object == "text_completion" and result.model == "dev-echo"
    assert result.choices[0].text
    validate(
        "CreateCompletionResponse",
        request(stack.base_url + "/completions", {"model": "dev-echo", "prompt": "x"}).json(),
    )


def test_streaming(client: openai.OpenAI, stack: Stack) -> None:
    full = client.completions.create(model="dev-echo", prompt="Say hi")
    text = "".join(
        c.choices[0].text
        for c in client.completions.create(model="dev-echo", prompt="Say hi", stream=True)
        if c.choices
    )
    assert text == full.choices[0].text
    reply = request(stack.base_url + "/completions", {"model": "dev-echo", "prompt": "x", "stream": True})
    assert reply.headers["content-type"] == "text/event-stream"
    events = reply.events()
    assert events[-1] == "[DONE]"
    for e in events[:-1]:
        chunk = json.loads(e)
        # The spec reuses the final-response schema for stream chunks, whose
        # finish_reason is null until the end (as OpenAI itself sends).
        if chunk["choices"] and chunk["choices"][0]["finish_reason"] is None:
            chunk["choices"][0]["finish_reason"] = "stop"
        validate("CreateCompletionResponse", chunk)


def test_bad_prompt(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="dev-echo", prompt=[])
    assert exc.value.body["param"] == "prompt"
