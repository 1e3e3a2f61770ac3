"""ghostllm.api.rawbody: HttpBody decoded as protobuf would, without copying the body."""

from __future__ import annotations

import pytest
from google.api.httpbody_pb2 import HttpBody
from google.protobuf import any_pb2

from ghostllm.api.rawbody import decode_http_body


@pytest.mark.parametrize("data", [b"", b'{"model": "m"}', b"x" * 300, bytes(range(256)) * 1000])
def test_same_as_protobuf(data: bytes) -> None:
    message = HttpBody(content_type="application/json", data=data)
    message.extensions.add().CopyFrom(any_pb2.Any(type_url="t", value=b"v"))
    raw = decode_http_body(message.SerializeToString())
    assert raw.content_type == "application/json" and raw.data == data
    assert isinstance(raw.data, memoryview)


TRUNCATED = [b"\x12\x05ab", b"\x12", b"\x08\x01", b"\x12" + b"\xff" * 10 + b"\x01"]


@pytest.mark.parametrize("wire", TRUNCATED)
def test_malformed(wire: bytes) -> None:
    with pytest.raises(ValueError):
        decode_http_body(wire)
