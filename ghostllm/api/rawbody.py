"""The REST bridge's request, decoded without copying the body.

The transcoder hands the client's JSON over as a google.api.HttpBody. Decoding
that with protobuf copies the body twice (into the message, then out of it as
`bytes`); near the 32 MiB limit that is 60 MB per request. HttpBody's wire
form is simple (1: content_type, 2: data, 3: extensions), so the bridge reads
`data` as a view into the received bytes instead.
"""

from __future__ import annotations

from dataclasses import dataclass

_LENGTH_DELIMITED = 2


@dataclass(frozen=True, slots=True)
class RawHttpBody:
    content_type: str
    data: memoryview


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def decode_http_body(message: bytes) -> RawHttpBody:
    """google.api.HttpBody from its wire bytes; `data` is a view, not a copy."""
    buf = memoryview(message)
    content_type = ""
    data = buf[0:0]
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire != _LENGTH_DELIMITED:
            raise ValueError(f"unexpected wire type {wire} for HttpBody field {field}")
        size, pos = _varint(buf, pos)
        end = pos + size
        if end > len(buf):
            raise ValueError("truncated HttpBody")
        if field == 1:
            content_type = bytes(buf[pos:end]).decode()
        elif field == 2:
            data = buf[pos:end]
        pos = end
    return RawHttpBody(content_type, data)
