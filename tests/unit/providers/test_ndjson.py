"""ghostllm.providers.ndjson: line framing across arbitrary read boundaries."""

from __future__ import annotations

import pytest

from ghostllm.errors import ProviderError
from ghostllm.providers.ndjson import NDJSONFramer

STREAM = b'{"a": 1}\n{"b": "x\\ny"}\r\n\n  \n{"c": 3}\n{"unfinished": '
LINES = [b'{"a": 1}', b'{"b": "x\\ny"}', b'{"c": 3}']


def test_every_split_offset() -> None:
    assert NDJSONFramer().feed(STREAM) == LINES
    for cut in range(len(STREAM) + 1):
        framer = NDJSONFramer()
        assert framer.feed(STREAM[:cut]) + framer.feed(STREAM[cut:]) == LINES, cut


def test_byte_by_byte_then_the_rest_of_the_line() -> None:
    framer = NDJSONFramer()
    out: list[bytes] = []
    for i in range(len(STREAM)):
        out += framer.feed(STREAM[i : i + 1])
    assert out == LINES
    assert framer.feed(b"4}\n") == [b'{"unfinished": 4}']


def test_a_line_that_never_ends_is_bounded() -> None:
    framer = NDJSONFramer(max_line_bytes=100)
    framer.feed(b"x" * 60)
    with pytest.raises(ProviderError, match="longer than"):
        framer.feed(b"x" * 60)
    with pytest.raises(ProviderError, match="longer than"):
        NDJSONFramer(max_line_bytes=100).feed(b"{}\n" + b"x" * 200)
