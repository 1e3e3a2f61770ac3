"""Envoy's side of the spine hardening: query strings, encodings, header sizes, slow
bodies, error labels, wrong methods, CORS, long strings without retries, native gRPC
limits. All through real Envoy; where a case needs a different Envoy setting (a short
receive timeout, CORS on), a second Envoy rendered by the same code is put in front of
the session stack's workers."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import openai
import orjson
import pytest

from ghostllm.config import parse_config
from ghostllm.server.envoy import MAX_REQUEST_HEADERS_KB, envoy_command, render_envoy_config
from ghostllm.v1 import chat_pb2, chat_pb2_grpc, openai_pb2
from tests.support.auth import ADMIN_KEY, AUTH, authorized
from tests.support.http import Reply, check_error, envoy_counter, upstream_stats
from tests.support.procs import Stack, free_port, start, stop, wait_port

HELLO = [{"role": "user", "content": "hi"}]
CHAT = {"model": "dev-echo", "messages": HELLO}
RETRIES = "cluster.workers.upstream_rq_retry"


def raw_http(port: int, data: bytes) -> Reply:
    """Send bytes as they are (no client library would send these) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return Reply(int(lines[0].split()[1]), headers, body)


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        sent = {**AUTH, **(headers or {})}
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def chat_body(**fields: Any) -> bytes:
    return orjson.dumps({**CHAT, **fields})


JSON = {"content-type": "application/json"}


class Watch:
    """Upstream calls, Envoy retries and worker pids around a block."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.calls = upstream_stats(stack.upstream_url)["requests"]
        self.retries = envoy_counter(stack.admin_url, RETRIES)
        self.pids = self._pids()

    def _pids(self) -> list[int]:
        return [self.stack.worker_pid(i) for i in range(int(self.stack.config["server"]["workers"]))]

    def upstream_calls(self) -> int:
        return int(upstream_stats(self.stack.upstream_url)["requests"]) - int(self.calls)

    def assert_no_retry_no_restart(self) -> None:
        assert envoy_counter(self.stack.admin_url, RETRIES) == self.retries
        assert self._pids() == self.pids


# Query strings and encodings


@pytest.mark.parametrize("path", ["/health?x=1", "/v1/models?foo=bar", "/v1/models/dev-echo?x=1&y"])
def test_unknown_query_parameters_are_ignored_on_get(stack: Stack, path: str) -> None:
    watch = Watch(stack)
    reply = call(stack.rest_port, "GET", path)
    assert reply.status == 200, reply.body
    assert reply.json()
    watch.assert_no_retry_no_restart()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_azure_style_api_version_is_ignored(stack: Stack, path: str) -> None:
    watch = Watch(stack)
    body = chat_body() if path.endswith("chat/completions") else orjson.dumps({"model": "dev-echo", "prompt": "hi"})
    reply = call(stack.rest_port, "POST", path + "?api-version=2024-06-01", body, JSON)
    assert reply.status == 200, reply.body
    assert watch.upstream_calls() == 1
    watch.assert_no_retry_no_restart()


def test_sdk_with_default_query(stack: Stack) -> None:
    watch = Watch(stack)
    with openai.OpenAI(
        base_url=stack.base_url, api_key="sk-test", max_retries=0, default_query={"api-version": "2024-06-01"}
    ) as client:
        reply = client.chat.completions.create(model="dev-echo", messages=[{"role": "user", "content": "azure"}])
        assert (reply.choices[0].message.content or "").endswith("azure")
        streamed = list(client.chat.completions.create(model="dev-echo", messages=HELLO, stream=True))
        assert streamed[-1].choices[0].finish_reason == "stop"
        client.embeddings.create(model="dev-embed", input="x")
        assert client.models.retrieve("dev-echo").id == "dev-echo"
    assert watch.upstream_calls() == 3
    watch.assert_no_retry_no_restart()


@pytest.mark.parametrize(
    "path", ["/v1/models/%ff", "/v1/models/%c3%28", "/v1/models?x=%ff", "/health?q=%ed%a0%80", "/v1/models/%f8%88"]
)
def test_invalid_utf8_in_path_or_query_is_400(stack: Stack, path: str) -> None:
    watch = Watch(stack)
    err = check_error(call(stack.rest_port, "GET", path), 400, code="invalid_encoding")
    assert err["type"] == "invalid_request_error"
    watch.assert_no_retry_no_restart()


def test_invalid_utf8_in_query_of_a_post_is_400(stack: Stack) -> None:
    watch = Watch(stack)
    check_error(
        call(stack.rest_port, "POST", "/v1/chat/completions?x=%80", chat_body(), JSON), 400, code="invalid_encoding"
    )
    assert watch.upstream_calls() == 0


def test_percent_encoded_utf8_still_works(stack: Stack) -> None:
    err = check_error(call(stack.rest_port, "GET", "/v1/models/caf%C3%A9"), 404, code="model_not_found")
    assert "café" in err["message"]


# Large headers


@pytest.mark.parametrize("kib", [9, 15, 32, MAX_REQUEST_HEADERS_KB - 2])
def test_large_authorization_header_reaches_the_worker(stack: Stack, kib: int) -> None:
    watch = Watch(stack)
    token = "Bearer " + "a" * (kib * 1024)
    reply = call(stack.rest_port, "POST", "/v1/chat/completions", chat_body(), {**JSON, "authorization": token})
    # The worker's own answer (not Envoy's 431): the header arrived whole and was judged.
    check_error(reply, 401, code="invalid_api_key")
    assert watch.upstream_calls() == 0
    watch.assert_no_retry_no_restart()


def test_large_metadata_over_native_grpc(stack: Stack) -> None:
    with authorized(grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")) as channel:
        list_models = channel.unary_unary(
            "/ghostllm.v1.ModelService/ListModels",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        # UNAUTHENTICATED from the worker, not a transport RESOURCE_EXHAUSTED: the metadata arrived whole.
        with pytest.raises(grpc.RpcError) as err:
            list_models(b"", metadata=(("authorization", "Bearer " + "b" * 40_000),), timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_headers_over_envoys_limit_are_431_without_echo(stack: Stack) -> None:
    secret = "s3cr3t" * (11 * 1024)  # 66 KiB
    reply = call(stack.rest_port, "POST", "/v1/chat/completions", chat_body(), {**JSON, "authorization": secret})
    err = check_error(reply, 431, code="request_headers_too_large")
    assert "s3cr3t" not in reply.body.decode()
    assert "authorization" not in err["message"].lower()
    with (
        openai.OpenAI(base_url=stack.base_url, api_key=secret, max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as exc,
    ):
        client.models.list()
    assert exc.value.status_code == 431
    assert "s3cr3t" not in str(exc.value)


# Error labels and methods


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"G(T /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", "malformed_request"),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n", "invalid_characters"),
        (b"GET /v1/mo\x01dels HTTP/1.1\r\nHost: x\r\n\r\n", "invalid_characters"),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", "malformed_request"),
        (b"GET /v1/models HTTP/1.1\r\n\r\n", "bad_request"),
    ],
)
def test_envoy_400s_say_what_was_wrong(stack: Stack, data: bytes, code: str) -> None:
    err = check_error(raw_http(stack.rest_port, data), 400, code=code)
    assert err["code"] != "invalid_json"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
def test_wrong_method_on_post_only_path_is_405(stack: Stack, path: str, method: str) -> None:
    watch = Watch(stack)
    reply = call(stack.rest_port, method, path)
    assert reply.status == 405, reply.body
    assert reply.headers["allow"] == "POST"
    if method != "HEAD":
        err = check_error(reply, 405, code="method_not_allowed")
        assert path in err["message"]
    assert watch.upstream_calls() == 0


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/dev-echo", "/health"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_wrong_method_on_get_only_path_is_405(stack: Stack, path: str, method: str) -> None:
    reply = call(stack.rest_port, method, path, b"{}", JSON)
    err = check_error(reply, 405, code="method_not_allowed")
    assert reply.headers["allow"] == "GET"
    assert method in err["message"]


def test_unknown_method_token_is_405(stack: Stack) -> None:
    reply = raw_http(stack.rest_port, b"BREW /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    check_error(reply, 405, code="method_not_allowed")
    assert reply.headers["allow"] == "GET"


def test_head_on_get_path_is_answered(stack: Stack) -> None:
    reply = call(stack.rest_port, "HEAD", "/v1/models")
    assert reply.status == 200 and reply.body == b""


def test_sdk_sees_405_as_an_api_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as exc:
        client.get("/chat/completions", cast_to=object)
    assert exc.value.status_code == 405
    assert exc.value.response.headers["allow"] == "POST"


def test_unknown_path_does_not_repeat_the_query(stack: Stack) -> None:
    reply = call(stack.rest_port, "GET", "/v1/nothing?api_key=sk-secret")
    err = check_error(reply, 404, code="not_found")
    assert "/v1/nothing" in err["message"] and "sk-secret" not in reply.body.decode()


def test_internal_unary_paths_stay_hidden(stack: Stack) -> None:
    watch = Watch(stack)
    reply = call(stack.rest_port, "POST", "/_ghostllm/unary/v1/chat/completions?x=1", chat_body(), JSON)
    check_error(reply, 404, code="not_found")
    assert watch.upstream_calls() == 0


# Long strings: a deterministic failure is never retried


def test_long_model_name_is_404_and_not_retried(client: openai.OpenAI, stack: Stack) -> None:
    watch = Watch(stack)
    model = "m" * 31_000
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model=model, messages=HELLO)
    assert exc.value.status_code == 404
    check_error(call(stack.rest_port, "POST", "/v1/chat/completions", chat_body(model=model), JSON), 404)
    err = check_error(
        call(stack.rest_port, "POST", "/v1/chat/completions", chat_body(model=model, stream=True), JSON), 404
    )
    assert err["code"] == "model_not_found"
    assert watch.upstream_calls() == 0
    watch.assert_no_retry_no_restart()


@pytest.mark.parametrize(
    "fields",
    [
        {"messages": [{"role": "r" * 31_000, "content": "hi"}]},
        {"tools": [{"type": "t" * 31_000, "function": {"name": "f"}}]},
    ],
)
def test_long_invalid_values_are_400_and_not_retried(stack: Stack, fields: dict[str, Any]) -> None:
    watch = Watch(stack)
    check_error(call(stack.rest_port, "POST", "/v1/chat/completions", chat_body(**fields), JSON), 400)
    assert watch.upstream_calls() == 0
    watch.assert_no_retry_no_restart()


def test_long_upstream_error_message_calls_the_provider_once(stack: Stack) -> None:
    # The development upstream repeats an unknown tool_choice name in its 400 message.
    watch = Watch(stack)
    body = chat_body(
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "g" * 31_000}},
    )
    err = check_error(call(stack.rest_port, "POST", "/v1/chat/completions", body, JSON), 400)
    assert "tool_choice" in err["message"]
    assert watch.upstream_calls() == 1
    watch.assert_no_retry_no_restart()


# Native gRPC limits


def _raw_method(channel: grpc.Channel, method: str) -> Callable[..., bytes]:
    return channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def test_grpc_message_over_the_limit_is_resource_exhausted(stack: Stack) -> None:
    watch = Watch(stack)
    big = chat_pb2.ChatCompletionRequest(model="dev-echo", messages=[openai_pb2.ChatMessage(role="user")])
    big.messages[0].content.string_value = "m" * (40 * 1024 * 1024)
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    with (
        authorized(grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}", options=options)) as channel,
        pytest.raises(grpc.RpcError) as exc,
    ):
        chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(big, timeout=60)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.value.details()
    assert watch.upstream_calls() == 0
    watch.assert_no_retry_no_restart()


@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x0a\x02\xff\xfe"], ids=["garbage", "bad-utf8"])
def test_grpc_undecodable_body_is_invalid_argument(stack: Stack, payload: bytes) -> None:
    watch = Watch(stack)
    with authorized(grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")) as channel:
        get_model = _raw_method(channel, "/ghostllm.v1.ModelService/GetModel")
        with pytest.raises(grpc.RpcError) as exc:
            get_model(payload, timeout=30)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    watch.assert_no_retry_no_restart()


# A second Envoy, rendered by the same code, in front of the session stack's workers


@dataclass
class SideEnvoy:
    rest_port: int
    admin_url: str


@contextlib.contextmanager
def side_envoy(stack: Stack, tmp: Path, hcm: dict[str, Any] | None = None, **server: Any) -> Iterator[SideEnvoy]:
    raw = json.loads(json.dumps(stack.config))
    rest, admin = free_port(), free_port()
    raw["server"].update(rest_port=rest, grpc_port=free_port(), admin_port=admin, run_dir=str(tmp), **server)
    config = parse_config(raw, env={})
    s = config.server
    doc = render_envoy_config(config, [s.worker_base_port + i for i in range(s.worker_count)])
    doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"].update(hcm or {})
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "side-envoy.json"
    path.write_bytes(orjson.dumps(doc))
    proc = start(envoy_command(config, path, tmp), tmp / "side-envoy.out")
    try:
        wait_port(rest, proc)
        side = SideEnvoy(rest, f"http://127.0.0.1:{admin}")
        deadline = time.monotonic() + 20
        while call(rest, "GET", "/v1/models").status != 200:  # until health checks pass
            assert time.monotonic() < deadline, "side Envoy found no healthy worker"
            time.sleep(0.1)
        yield side
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def short_timeouts(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SideEnvoy]:
    # The renderer's defaults (120 s for a request, 10 s for its headers) made short.
    hcm = {"request_timeout": "1s", "request_headers_timeout": "1s"}
    with side_envoy(stack, tmp_path_factory.mktemp("short-timeouts"), hcm) as side:
        yield side


def _trickle(port: int, head: bytes, body: bytes) -> Reply:
    """Send the head, then the body one byte at a time until Envoy answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        s.settimeout(0.25)
        received = b""
        for byte in body:
            with contextlib.suppress(OSError):
                s.sendall(bytes([byte]))
            try:
                received = s.recv(65536)
            except TimeoutError:
                continue
            break
        s.settimeout(30)
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                received += chunk
    head_part, _, payload = received.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Reply(int(lines[0].split()[1]), headers, payload)


def test_slow_body_is_cut_with_408(short_timeouts: SideEnvoy, stack: Stack) -> None:
    watch = Watch(stack)
    body = chat_body() + b" " * 200
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    check_error(_trickle(short_timeouts.rest_port, head, body), 408, code="request_timeout")
    assert watch.upstream_calls() == 0


def test_slow_headers_are_cut_with_408(short_timeouts: SideEnvoy) -> None:
    head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"
    check_error(_trickle(short_timeouts.rest_port, head, b"x-slow: " + b"z" * 200 + b"\r\n\r\n"), 408)


def test_receive_timeout_does_not_cut_a_long_stream(short_timeouts: SideEnvoy, stack: Stack) -> None:
    # 20+ chunks 100 ms apart: the stream outlives the 1 s request timeout.
    with openai.OpenAI(
        base_url=f"http://127.0.0.1:{short_timeouts.rest_port}/v1", api_key=ADMIN_KEY, max_retries=0
    ) as c:
        chunks = list(c.chat.completions.create(model="slow-chunks-100", messages=HELLO, stream=True))
    assert len(chunks) >= 20 and chunks[-1].choices[0].finish_reason == "stop"


# CORS


ORIGIN = "https://app.example"


def preflight(port: int, origin: str, path: str = "/v1/chat/completions") -> Reply:
    headers = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, x-stainless-os",
    }
    return call(port, "OPTIONS", path, headers=headers)


def test_cors_is_off_by_default(stack: Stack) -> None:
    reply = preflight(stack.rest_port, ORIGIN)
    assert reply.status == 405 and "access-control-allow-origin" not in reply.headers
    simple = call(stack.rest_port, "GET", "/v1/models", headers={"origin": ORIGIN})
    assert simple.status == 200 and "access-control-allow-origin" not in simple.headers


@pytest.fixture(scope="module")
def cors_envoy(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SideEnvoy]:
    cors = {"allow_origins": [ORIGIN, "http://localhost:5173"], "max_age_s": 600}
    with side_envoy(stack, tmp_path_factory.mktemp("cors"), cors=cors) as side:
        yield side


def test_cors_preflight_from_an_allowed_origin(cors_envoy: SideEnvoy, stack: Stack) -> None:
    watch = Watch(stack)
    reply = preflight(cors_envoy.rest_port, ORIGIN)
    assert reply.status == 200, reply.body
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in reply.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in reply.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-stainless-os"} <= allowed
    assert reply.headers["access-control-max-age"] == "600"
    assert watch.upstream_calls() == 0


def test_cors_preflight_from_another_origin_gets_no_grant(cors_envoy: SideEnvoy) -> None:
    reply = preflight(cors_envoy.rest_port, "https://evil.example")
    assert "access-control-allow-origin" not in reply.headers


def test_cors_simple_requests(cors_envoy: SideEnvoy, stack: Stack) -> None:
    watch = Watch(stack)
    allowed = call(cors_envoy.rest_port, "POST", "/v1/chat/completions", chat_body(), {**JSON, "origin": ORIGIN})
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in allowed.headers["access-control-expose-headers"]
    assert watch.upstream_calls() == 1
    other = call(cors_envoy.rest_port, "GET", "/v1/models", headers={"origin": "https://evil.example"})
    assert other.status == 200 and "access-control-allow-origin" not in other.headers
    # Errors carry the grant too, so a browser app can read them.
    err = call(cors_envoy.rest_port, "GET", "/v1/nothing", headers={"origin": ORIGIN})
    check_error(err, 404)
    assert err.headers["access-control-allow-origin"] == ORIGIN
