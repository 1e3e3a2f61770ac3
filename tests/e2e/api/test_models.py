"""GET /v1/models and /v1/models/{model}."""

from __future__ import annotations

import openai
import pytest

from tests.support.http import request
from tests.support.openapi import validate
from tests.support.procs import Stack


def test_list(client: openai.OpenAI, stack: Stack) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[:3] == ["dev-echo", "dev-embed", "gpt-test"]
    reply = request(stack.base_url + "/models")
    body = reply.json()
    validate("ListModelsResponse", body)
    first = body["data"][0]
    # The seed API's extra fields, as JSON numbers and booleans.
    assert first["provider"] == "dev"
    assert first["context_length"] == 8192
    assert first["pricing"] == {"input_per_1k": 0.0015, "output_per_1k": 0.002, "input_per_1m": 1.5, "output_per_1m": 2}
    assert first["capabilities"]["streaming"] is True and first["capabilities"]["vision"] is True
    assert isinstance(first["created"], int)
    assert "grpc-status" not in reply.headers


def test_retrieve(client: openai.OpenAI, stack: Stack) -> None:
    model = client.models.retrieve("dev-embed")
    assert model.id == "dev-embed" and model.object == "model"
    validate("Model", request(stack.base_url + "/models/dev-embed").json())


def test_retrieve_unknown(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("nope")
    assert exc.value.code == "model_not_found"
