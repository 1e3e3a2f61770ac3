"""Tracing through the real stack: a gateway with `tracing.enabled` exports its spans over
OTLP/HTTP (protobuf) to a loopback receiver in this test, decoded with opentelemetry-proto.
A caller's traceparent makes our server span its child, in its trace; the upstream (a dev
upstream of this module's own) receives a traceparent in the same trace whose parent is the
attempt's span; the access log line carries the trace and span ids. With tracing off (the
session's stack) the caller's traceparent goes upstream unchanged and its ids are logged.
Neither spans nor log lines carry the prompt, the completion or the key."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from ghostllm.v1 import chat_pb2, chat_pb2_grpc, openai_pb2
from tests.e2e.api.test_access_log import record_for
from tests.support.auth import ADMIN_KEY, authorized
from tests.support.http import request, upstream_last_request
from tests.support.procs import Stack, Upstream, dev_upstream, free_port, running_stack, stack_config

SECRET = "the-prompt-must-never-be-traced"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
TRACESTATE = "congo=t61rcWkgMzE"


@dataclass
class Exported:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    service: str


def _value(v: AnyValue) -> Any:
    return getattr(v, v.WhichOneof("value") or "string_value")


class Receiver:
    """An OTLP/HTTP traces endpoint on loopback: every span it was sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[Exported] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["content-length"]))
                assert self.path == "/v1/traces" and self.headers["content-type"] == "application/x-protobuf"
                receiver.add(ExportTraceServiceRequest.FromString(data))
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, req: ExportTraceServiceRequest) -> None:
        with self.lock:
            for rs in req.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append(
                            Exported(
                                s.name,
                                s.kind,
                                s.trace_id.hex(),
                                s.span_id.hex(),
                                s.parent_span_id.hex(),
                                {a.key: _value(a.value) for a in s.attributes},
                                resource.get("service.name", ""),
                            )
                        )

    def trace(self, trace_id: str, count: int, timeout: float = 30.0) -> list[Exported]:
        """The spans of one trace, once `count` have arrived (polled: exports are batched)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [s for s in self.spans if s.trace_id == trace_id]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{len(found)} of {count} spans of trace {trace_id} arrived")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Traced:
    stack: Stack
    upstream: Upstream
    receiver: Receiver


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    tmp = tmp_path_factory.mktemp("traced")
    receiver = Receiver()
    try:
        with pytest.MonkeyPatch.context() as mp, dev_upstream(tmp) as upstream:
            # The batch processor's standard knob: export within 100 ms, not 5 s.
            mp.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
            config = stack_config(upstream.port, tmp)
            config["tracing"] = {
                "enabled": True,
                "endpoint": f"http://127.0.0.1:{receiver.port}",
                "service_name": "ghostllm-e2e",
            }
            with running_stack(config, upstream, tmp) as stack:
                yield Traced(stack, upstream, receiver)
    finally:
        receiver.close()


def parts(spans: list[Exported]) -> tuple[Exported, Exported, dict[str, Exported]]:
    """The server span, the (one) attempt span, and the others by name."""
    [server] = [s for s in spans if s.kind == ProtoSpan.SPAN_KIND_SERVER]
    [attempt] = [s for s in spans if s.kind == ProtoSpan.SPAN_KIND_CLIENT]
    return server, attempt, {s.name: s for s in spans if s.kind == ProtoSpan.SPAN_KIND_INTERNAL}


def upstream_traceparent(upstream_url: str) -> str:
    seen = upstream_last_request(upstream_url)
    assert seen["path"] == "/v1/chat/completions", seen["path"]
    value: str = seen["headers"]["traceparent"]
    return value


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "dev-echo", "messages": [{"role": "user", "content": SECRET}], **extra}


def assert_nothing_secret(spans: list[Exported], log: Path) -> None:
    for s in spans:
        assert SECRET not in repr(s.attributes) and ADMIN_KEY not in repr(s.attributes)
    lines = [line for line in log.read_text().splitlines() if line.startswith('{"request_id"')]
    assert lines and not any(SECRET in line or ADMIN_KEY in line for line in lines)


def test_rest_call_joins_the_callers_trace(traced: Traced) -> None:
    rid = str(uuid.uuid4())
    headers = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE, "x-request-id": rid}
    reply = request(traced.stack.base_url + "/chat/completions", chat(), headers=headers)
    assert reply.status == 200
    sent = upstream_traceparent(traced.upstream.url)
    spans = traced.receiver.trace(TRACE_ID, 3)
    server, attempt, internal = parts(spans)
    admit = internal["admit"]
    # "{operation} {model}": ours named after the client's model, the attempt after the upstream's.
    assert server.name == attempt.name == "chat dev-echo" and set(internal) == {"admit"}
    assert server.kind == ProtoSpan.SPAN_KIND_SERVER and server.parent_id == CALLER_SPAN
    assert admit.parent_id == attempt.parent_id == server.span_id
    assert server.service == "ghostllm-e2e"
    assert server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["gen_ai.request.model"] == "dev-echo"
    assert server.attributes["ghostllm.request_id"] == rid
    assert server.attributes["http.response.status_code"] == 200
    usage = reply.json()["usage"]
    assert attempt.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attempt.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.attributes["server.address"] == "127.0.0.1"
    assert attempt.attributes["server.port"] == traced.upstream.port
    # The upstream's parent is our attempt's span, in the caller's trace.
    assert sent == f"00-{TRACE_ID}-{attempt.span_id}-01"
    assert upstream_last_request(traced.upstream.url)["headers"]["tracestate"] == TRACESTATE
    r = record_for(traced.stack.log, rid)
    assert (r["trace_id"], r["span_id"]) == (TRACE_ID, server.span_id)
    assert_nothing_secret(spans, traced.stack.log)


def test_grpc_stream_without_a_traceparent_starts_a_trace(traced: Traced) -> None:
    rid = str(uuid.uuid4())
    with authorized(grpc.insecure_channel(f"127.0.0.1:{traced.stack.grpc_port}")) as channel:
        content = struct_pb2.Value(string_value=SECRET)
        req = chat_pb2.ChatCompletionRequest(
            model="dev-echo", messages=[openai_pb2.ChatMessage(role="user", content=content)]
        )
        chunks = list(
            chat_pb2_grpc.ChatServiceStub(channel).StreamChatCompletion(req, metadata=(("x-request-id", rid),))
        )
    assert chunks
    sent = upstream_traceparent(traced.upstream.url)
    trace_id = sent.split("-")[1]
    assert trace_id != TRACE_ID
    spans = traced.receiver.trace(trace_id, 4)
    server, attempt, internal = parts(spans)
    relay = internal["relay"]
    assert server.parent_id == "" and relay.parent_id == server.span_id == attempt.parent_id
    assert server.attributes["gen_ai.request.stream"] is True
    # Sampled; the SDK also sets W3C level 2's random-trace-id flag on a trace it started.
    assert sent.startswith(f"00-{trace_id}-{attempt.span_id}-") and int(sent[-2:], 16) & 1
    r = record_for(traced.stack.log, rid)
    assert (r["trace_id"], r["span_id"]) == (trace_id, server.span_id)
    assert_nothing_secret(spans, traced.stack.log)


def test_off_passes_the_callers_trace_context_on(stack: Stack) -> None:
    """The session's stack, tracing off: no span of ours, the caller's context as it came."""
    rid = str(uuid.uuid4())
    headers = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE, "x-request-id": rid}
    assert request(stack.base_url + "/chat/completions", chat(stream=True), headers=headers).status == 200
    seen = upstream_last_request(stack.upstream_url)["headers"]
    assert (seen["traceparent"], seen["tracestate"]) == (TRACEPARENT, TRACESTATE)
    r = record_for(stack.log, rid)
    assert (r["trace_id"], r["span_id"]) == (TRACE_ID, CALLER_SPAN)
    # An invalid one is neither passed on nor logged.
    rid = str(uuid.uuid4())
    headers = {"traceparent": "00-not-a-trace-01", "x-request-id": rid}
    assert request(stack.base_url + "/chat/completions", chat(), headers=headers).status == 200
    assert "traceparent" not in upstream_last_request(stack.upstream_url)["headers"]
    r = record_for(stack.log, rid)
    assert (r["trace_id"], r["span_id"]) == (None, None)
