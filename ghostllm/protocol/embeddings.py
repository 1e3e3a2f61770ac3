"""Embeddings: typed request to OpenAI JSON, and OpenAI JSON to the typed reply."""

from __future__ import annotations

import base64
import struct
from typing import Any

from ghostllm.errors import InvalidRequest, ProviderError
from ghostllm.protocol.common import Json, check_model, check_range, check_type, is_text_or_tokens, merge_extra
from ghostllm.protocol.values import value_to_py
from ghostllm.v1 import embeddings_pb2

ENCODINGS = ("float", "base64")


def check_embedding_request(body: Json) -> Json:
    """Validate an OpenAI embeddings request body; returns it unchanged."""
    check_model(body)
    if not is_text_or_tokens(body.get("input")):
        raise InvalidRequest(
            "input must be a non-empty string, list of strings, list of token ids or list of token id lists",
            param="input",
        )
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ENCODINGS:
        raise InvalidRequest("encoding_format must be 'float' or 'base64'", param="encoding_format")
    check_range(body, "dimensions", 1, 2**31 - 1, integer=True)
    check_type(body, "user", str, "a string")
    return body


def embedding_request_from_proto(req: embeddings_pb2.EmbeddingRequest) -> Json:
    """The OpenAI JSON of a typed request; vectors come back as floats whatever it says
    (the typed reply holds floats), so encoding_format is checked but asked as float."""
    body: Json = {"model": req.model, "input": value_to_py(req.input) if req.HasField("input") else None}
    if req.encoding_format:
        body["encoding_format"] = req.encoding_format
    if req.HasField("dimensions"):
        body["dimensions"] = req.dimensions
    if req.user:
        body["user"] = req.user
    return merge_extra(body, req)


def _floats(vector: Any) -> list[float]:
    if isinstance(vector, list):
        return vector
    if isinstance(vector, str):
        raw = base64.b64decode(vector)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    raise ProviderError("provider returned an embedding that is neither a list nor base64")


def as_base64(reply: Json) -> Json:
    """`reply` with every vector that came back as floats packed as OpenAI's base64 (float32,
    little-endian): what a client that asked encoding_format "base64" expects from an
    upstream (Gemini, Ollama) that only answers floats. A vector already base64 is kept."""
    for item in reply.get("data") or ():
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, list):
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return reply


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
