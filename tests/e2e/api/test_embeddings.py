"""POST /v1/embeddings: the SDK's default base64 encoding and plain floats."""

from __future__ import annotations

import openai
import pytest

from tests.support.http import request
from tests.support.openapi import validate
from tests.support.procs import Stack


def test_default_base64(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="dev-embed", input=["a", "b"])
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) == 8 and isinstance(d.embedding[0], float) for d in result.data)
    assert result.model == "dev-embed"
    assert result.usage.prompt_tokens > 0


def test_float_and_dimensions(client: openai.OpenAI, stack: Stack) -> None:
    floats = client.embeddings.create(model="dev-embed", input="hello", encoding_format="float", dimensions=4)
    b64 = client.embeddings.create(model="dev-embed", input="hello", dimensions=4)
    assert floats.data[0].embedding == pytest.approx(b64.data[0].embedding, rel=1e-6)
    reply = request(
        stack.base_url + "/embeddings", {"model": "dev-embed", "input": [[1, 2, 3]], "encoding_format": "float"}
    )
    validate("CreateEmbeddingResponse", reply.json())


def test_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model="dev-embed", input=[])
    assert bad.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="dev-embed", input="x", encoding_format="hex")
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")
