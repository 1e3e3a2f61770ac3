"""W3C trace context: which traceparents are used (the rest are ignored, never passed on), the
ids read from them, the one we write, and the tracestate bound."""

from __future__ import annotations

import pytest

from ghostllm.providers.base import Call
from ghostllm.providers.transport import _request_headers
from ghostllm.tracing import w3c

GOOD = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_valid_traceparent_is_kept_as_sent() -> None:
    assert w3c.valid_traceparent(GOOD) == GOOD
    assert w3c.ids(GOOD) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert w3c.flags(GOOD) & w3c.SAMPLED
    # A later version may add fields: kept whole for whoever understands them.
    future = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-what-comes-next"
    assert w3c.valid_traceparent(future) == future
    assert w3c.ids(future) == w3c.ids(GOOD)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        GOOD.upper(),  # hex is lowercase
        GOOD + "-extra",  # version 00 has exactly four fields
        "ff" + GOOD[2:],  # version ff is invalid
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero parent id
        "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",  # a digit short
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
        "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
        " " + GOOD,
        "0x-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        GOOD + "\n",
    ],
)
def test_an_invalid_traceparent_is_ignored(value: str) -> None:
    assert w3c.valid_traceparent(value) == ""


def test_the_traceparent_we_write() -> None:
    written = w3c.traceparent(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 1)
    assert written == GOOD and w3c.valid_traceparent(written) == written
    assert w3c.traceparent(1, 2, 0) == "00-00000000000000000000000000000001-0000000000000002-00"


def test_tracestate_is_passed_on_when_well_formed_and_within_its_limit() -> None:
    for state in ("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", "vendor@tenant=x y, ,k=v", ""):
        assert w3c.valid_tracestate(state) == state
    for bad in ("a=" + "b" * w3c.MAX_TRACESTATE_CHARS, "Upper=x", "k=", "k=v=w,", "no-equals", "k=v\x7f",
                ",".join(f"k{i}=v" for i in range(w3c.MAX_TRACESTATE_MEMBERS + 1))):  # fmt: skip
        assert w3c.valid_tracestate(bad) == "", bad


def test_the_upstream_request_carries_the_trace_context_it_was_given() -> None:
    assert _request_headers(Call()) is None
    assert _request_headers(Call(request_id="r")) == {"x-request-id": "r"}
    assert _request_headers(Call(traceparent=GOOD)) == {"traceparent": GOOD}
    headers = _request_headers(Call(request_id="r", traceparent=GOOD, tracestate="k=v"))
    assert headers == {"x-request-id": "r", "traceparent": GOOD, "tracestate": "k=v"}
