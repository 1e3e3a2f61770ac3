"""ghostllm.api.boundary: errors become statuses in one place, with bounded trailers."""

from __future__ import annotations

import json

from ghostllm.api.boundary import (
    MAX_MESSAGE_CHARS,
    Undecodable,
    _undecodable,
    as_ghost_error,
    bounded,
    undecodable_safe,
)
from ghostllm.errors import InternalError, InvalidRequest, ModelNotFound
from ghostllm.v1 import chat_pb2


def test_long_errors_are_cut_for_trailers() -> None:
    err = bounded(ModelNotFound("m" * 31_000))
    assert len(err.message) <= MAX_MESSAGE_CHARS + 3
    body = json.loads(err.to_json())["error"]
    assert body["code"] == "model_not_found" and body["type"] == "invalid_request_error"
    assert len(err.to_json()) < 2_000


def test_unexpected_exceptions_are_500_without_details() -> None:
    err = as_ghost_error(RuntimeError("secret internals"))
    assert isinstance(err, InternalError) and "secret" not in err.message and err.http_status == 500


def test_undecodable_requests_are_invalid_argument() -> None:
    decode = undecodable_safe(chat_pb2.ChatCompletionRequest.FromString)
    assert isinstance(decode(b"\xff\xff\xff"), Undecodable)
    ok = decode(chat_pb2.ChatCompletionRequest(model="m").SerializeToString())
    assert isinstance(ok, chat_pb2.ChatCompletionRequest) and _undecodable(ok) is None
    err = _undecodable(decode(b"\x0a\x02\xc3\x28"))  # invalid UTF-8 in a string field
    assert isinstance(err, InvalidRequest) and err.code == "invalid_message"
