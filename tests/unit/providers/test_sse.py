"""ghostllm.providers.sse: event framing across arbitrary read boundaries."""

from __future__ import annotations

import pytest

from ghostllm.errors import ProviderError
from ghostllm.providers.sse import DONE, SSEDecoder

STREAM = (
    b": keep-alive\n\n"
    b'data: {"a": 1}\n\n'
    b'event: message\r\ndata: {"b": 2}\r\n\r\n'
    b'data: {"c":\ndata: 3}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(STREAM)])
def test_any_split(size: int) -> None:
    decoder = SSEDecoder()
    out: list[object] = []
    for i in range(0, len(STREAM), size):
        out += decoder.feed(STREAM[i : i + size])
    assert out == [{"a": 1}, {"b": 2}, {"c": 3}, DONE]
    assert decoder.done


def test_garbage_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="invalid stream event"):
        SSEDecoder().feed(b"data: not json\n\n")
