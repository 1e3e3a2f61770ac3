"""W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` and
`tracestate` headers, read from callers and written to upstreams.

traceparent is `version-trace_id-parent_id-flags` in lowercase hex (00-<32>-<16>-<2>); one we
cannot use is ignored, as the spec says, rather than passed on.
"""

from __future__ import annotations

import re

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# What the spec asks every vendor to pass on; a longer tracestate is dropped, not cut mid-entry.
MAX_TRACESTATE_CHARS = 512
MAX_TRACESTATE_MEMBERS = 32
SAMPLED = 0x01
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\s]*)?")
# One tracestate list-member: key (simple, or tenant@system) = value.
_MEMBER = re.compile(
    r"[a-z0-9][a-z0-9_\-*/]{0,240}(?:@[a-z][a-z0-9_\-*/]{0,13})?"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def valid_traceparent(value: str) -> str:
    """`value` when it is a traceparent we can use, else "": version 00 exactly, or a later
    version (whose extra fields are kept for whoever understands them); never ff, never all-zero ids."""
    m = _TRACEPARENT.fullmatch(value)
    if m is None:
        return ""
    version, trace_id, span_id, _, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return ""
    return value


def valid_tracestate(value: str) -> str:
    """`value` when it is a tracestate we may pass on, else "" (the spec's rule for one that is not
    well formed: drop it whole)."""
    if len(value) > MAX_TRACESTATE_CHARS:
        return ""
    members = [m for m in (part.strip(" \t") for part in value.split(",")) if m]
    if len(members) > MAX_TRACESTATE_MEMBERS or not all(_MEMBER.fullmatch(m) for m in members):
        return ""
    return value


def ids(traceparent: str) -> tuple[str, str]:
    """The trace id and parent (span) id of a valid traceparent."""
    return traceparent[3:35], traceparent[36:52]


def flags(traceparent: str) -> int:
    return int(traceparent[53:55], 16)


def traceparent(trace_id: int, span_id: int, trace_flags: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{trace_flags:02x}"
