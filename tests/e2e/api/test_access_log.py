"""The access log: one JSON line per request (REST and gRPC, success, error and cancel),
whose request_id is the x-request-id the client got back, and never any prompt text."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import openai
from google.protobuf import struct_pb2

from ghostllm.v1 import chat_pb2, chat_pb2_grpc, openai_pb2
from tests.support.auth import AUTH, authorized
from tests.support.http import request
from tests.support.procs import Stack, stack_config, start_stack, stop

SECRET = "the-prompt-text-must-never-be-logged"
FIELDS = {
    "request_id", "started_at", "endpoint", "model", "provider", "upstream_model", "stream", "status", "error_code",
    "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens", "estimated",
    "latency_ms", "ttft_ms", "client_ip", "user_agent", "request_bytes", "api_key_id", "user_id", "team_id",
    "cost_nano_usd", "record_id", "deployment", "attempts", "deployments_tried", "upstream_ms", "trace_id", "span_id",
}  # fmt: skip


def records(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith('{"request_id"'):
            out.append(json.loads(line))
    return out


def record_for(log: Path, request_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The line for one request (written within a loop turn of its end; polled, not timed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in records(log) if r["request_id"] == request_id]
        if found:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {request_id}")


def test_rest_success_and_stream(stack: Stack) -> None:
    url = stack.base_url + "/chat/completions"
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": SECRET}]}
    reply = request(url, body, headers={"user-agent": "log-test/1"})
    assert reply.status == 200
    r = record_for(stack.log, reply.headers["x-request-id"])
    assert set(r) == FIELDS
    assert (r["endpoint"], r["model"], r["provider"], r["upstream_model"]) == (
        "chat.completions", "gpt-test", "dev", "dev-echo",
    )  # fmt: skip
    assert (r["status"], r["error_code"], r["stream"], r["estimated"]) == (200, None, False, False)
    usage = reply.json()["usage"]
    assert (r["prompt_tokens"], r["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert r["client_ip"] == "127.0.0.1" and r["user_agent"] == "log-test/1" and r["latency_ms"] > 0

    # A stream whose client asked no usage is still accounted (we always ask the upstream).
    rid = str(uuid.uuid4())
    reply = request(url, {**body, "stream": True}, headers={"x-request-id": rid})
    assert reply.status == 200 and "usage" not in reply.events()[-2]
    r = record_for(stack.log, rid)
    assert r["stream"] and r["total_tokens"] > 0 and not r["estimated"] and r["ttft_ms"] is not None
    assert SECRET not in stack.log.read_text()


def test_errors_are_logged_once(client: openai.OpenAI, stack: Stack) -> None:
    url = stack.base_url + "/chat/completions"
    for body, status, code in (
        ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found"),
        (b'{"model": "dev-echo",', 400, "invalid_json"),
        ({"model": "error-500", "messages": [{"role": "user", "content": "x"}]}, 502, "provider_error"),
    ):
        reply = request(url, body)
        assert reply.status == status
        r = record_for(stack.log, reply.headers["x-request-id"])
        assert (r["status"], r["error_code"], r["total_tokens"]) == (status, code, 0)


def test_grpc_calls_are_logged(stack: Stack) -> None:
    rid = str(uuid.uuid4())
    with authorized(grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")) as ch:
        stub = chat_pb2_grpc.ChatServiceStub(ch)
        msg = openai_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value="hi"))
        list(stub.StreamChatCompletion(chat_pb2.ChatCompletionRequest(model="dev-echo", messages=[msg]),
                                       metadata=(("x-request-id", rid),)))  # fmt: skip
    r = record_for(stack.log, rid)
    assert r["stream"] and r["status"] == 200 and r["total_tokens"] > 0


def test_cancelled_stream_counts_what_was_relayed(stack: Stack) -> None:
    rid = str(uuid.uuid4())
    conn = http.client.HTTPConnection("127.0.0.1", stack.rest_port, timeout=30)
    body = {"model": "slow-chunks-100", "stream": True, "messages": [{"role": "user", "content": "count to ten"}]}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json",
                                                                     "x-request-id": rid, **AUTH})  # fmt: skip
    resp = conn.getresponse()
    seen = b""
    while b'"content":"' not in seen or seen.count(b"data: ") < 3:
        seen += resp.read1(65536)
    conn.close()
    r = record_for(stack.log, rid)
    assert (r["status"], r["error_code"], r["estimated"]) == (499, "client_closed", True)
    assert r["completion_tokens"] > 0 and r["prompt_tokens"] > 0


def test_access_log_to_a_file(upstream_port: int, tmp_path: Path) -> None:
    log = tmp_path / "access.jsonl"
    s = start_stack(stack_config(upstream_port, tmp_path, workers=1, access_log=str(log)), upstream_port, tmp_path)
    try:
        ok = request(
            f"{s.base_url}/chat/completions", {"model": "dev-echo", "messages": [{"role": "user", "content": "x"}]}
        )
        bad = request(f"{s.base_url}/chat/completions", {"model": "nope", "messages": []})
        assert ok.status == 200 and bad.status == 400
        assert record_for(log, ok.headers["x-request-id"])["status"] == 200
        assert record_for(log, bad.headers["x-request-id"])["status"] == 400
        assert not records(s.log)  # nothing on stdout
    finally:
        stop(s.proc)


def test_model_listing_and_lookup_go_through_the_pipeline(stack: Stack) -> None:
    listing = request(f"{stack.base_url}/models")
    one = request(f"{stack.base_url}/models/gpt-test")
    missing = request(f"{stack.base_url}/models/nope")
    assert (listing.status, one.status, missing.status) == (200, 200, 404)
    assert record_for(stack.log, listing.headers["x-request-id"])["endpoint"] == "models"
    r = record_for(stack.log, one.headers["x-request-id"])
    assert (r["model"], r["provider"], r["upstream_model"], r["status"]) == ("gpt-test", "dev", "dev-echo", 200)
    assert record_for(stack.log, missing.headers["x-request-id"])["error_code"] == "model_not_found"
