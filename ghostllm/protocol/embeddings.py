"""Embeddings: typed request to OpenAI JSON, and OpenAI JSON to the typed reply."""

from __future__ import annotations

import base64
import struct
from typing import Any

from ghostllm.errors import InvalidRequest, ProviderError
from ghostllm.protocol.common import is_text_or_tokens, require_model
from ghostllm.protocol.values import value_to_py
from ghostllm.v1 import embeddings_pb2

ENCODINGS = ("float", "base64")


def embedding_request_to_openai(req: embeddings_pb2.EmbeddingRequest) -> dict[str, Any]:
    require_model(req.model)
    data = value_to_py(req.input) if req.HasField("input") else None
    if not is_text_or_tokens(data):
        raise InvalidRequest(
            "input must be a non-empty string, list of strings, list of token ids or list of token id lists",
            param="input",
        )
    body: dict[str, Any] = {"model": req.model, "input": data}
    if req.encoding_format:
        if req.encoding_format not in ENCODINGS:
            raise InvalidRequest("encoding_format must be 'float' or 'base64'", param="encoding_format")
        body["encoding_format"] = req.encoding_format
    if req.HasField("dimensions"):
        if req.dimensions < 1:
            raise InvalidRequest("dimensions must be at least 1", param="dimensions")
        body["dimensions"] = req.dimensions
    if req.user:
        body["user"] = req.user
    return body


def _floats(vector: Any) -> list[float]:
    if isinstance(vector, list):
        return vector
    if isinstance(vector, str):
        raw = base64.b64decode(vector)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    raise ProviderError("provider returned an embedding that is neither a list nor base64")


def embedding_response_to_proto(d: dict[str, Any]) -> embeddings_pb2.EmbeddingResponse:
    usage = d.get("usage") or {}
    out = embeddings_pb2.EmbeddingResponse(
        object=d.get("object") or "list",
        model=d.get("model") or "",
        usage=embeddings_pb2.EmbeddingUsage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            total_tokens=int(usage.get("total_tokens") or 0),
        ),
    )
    for item in d.get("data") or ():
        out.data.add(
            index=item.get("index") or 0,
            object=item.get("object") or "embedding",
            embedding=_floats(item.get("embedding")),
        )
    return out
