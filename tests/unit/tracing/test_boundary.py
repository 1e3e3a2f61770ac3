"""The boundary's part: the caller's trace context read once per call (an invalid one dropped),
and the overhead value every answer carries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast

from ghostllm.api.boundary import OVERHEAD_HEADER, Context, overhead_header, request_context
from ghostllm.gateway.context import RequestContext

GOOD = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class GrpcContext:
    """What request_context reads of grpc.aio's ServicerContext."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.metadata = tuple(metadata)

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1234"

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return None


def context(*metadata: tuple[str, str]) -> RequestContext:
    return request_context(cast(Context, GrpcContext(metadata)))


def test_the_callers_trace_context() -> None:
    rc = context(("traceparent", GOOD), ("tracestate", "k=v"), ("x-request-id", "r"))
    assert (rc.traceparent, rc.tracestate, rc.request_id) == (GOOD, "k=v", "r")
    rc = context(("traceparent", "nonsense"), ("tracestate", "k=v"))
    assert (rc.traceparent, rc.tracestate) == ("", "")  # a tracestate means nothing alone
    rc = context(("user-agent", "ua"))
    assert (rc.traceparent, rc.tracestate) == ("", "")


def test_the_overhead_is_the_time_not_spent_waiting_on_upstreams() -> None:
    rc = RequestContext(started=time.monotonic() - 0.5, upstream_s=0.4)
    name, value = overhead_header(rc)
    assert name == OVERHEAD_HEADER == "x-ghostllm-overhead-ms"
    assert len(value.split(".")[1]) == 3 and float(value) >= 100.0
    # Never negative, whatever the clocks did.
    assert overhead_header(RequestContext(started=time.monotonic(), upstream_s=5.0))[1] == "0.000"
