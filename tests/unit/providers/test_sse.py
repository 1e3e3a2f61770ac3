"""ghostllm.providers.sse: event framing across arbitrary read boundaries."""

from __future__ import annotations

import pytest

from ghostllm.errors import ProviderError
from ghostllm.providers.sse import SSEFramer

STREAM = (
    b": keep-alive\n\n"
    b'data: {"a": 1}\n\n'
    b'event: message\r\ndata: {"b": 2}\r\n\r\n'
    b'data: {"c":\ndata: 3}\n\n'
    b"data: [DONE]\n\n"
)


def test_every_split_offset() -> None:
    whole = SSEFramer().feed(STREAM)
    assert whole == [b'{"a": 1}', b'{"b": 2}', b'{"c":\n3}', b"[DONE]"]
    for cut in range(len(STREAM) + 1):
        framer = SSEFramer()
        assert framer.feed(STREAM[:cut]) + framer.feed(STREAM[cut:]) == whole, cut


def test_byte_by_byte() -> None:
    framer = SSEFramer()
    out: list[bytes] = []
    for i in range(len(STREAM)):
        out += framer.feed(STREAM[i : i + 1])
    assert out == SSEFramer().feed(STREAM)


def test_an_event_that_never_ends_is_bounded() -> None:
    framer = SSEFramer(max_event_bytes=100)
    with pytest.raises(ProviderError, match="larger than"):
        framer.feed(b"data: " + b"x" * 200)
