"""TLS termination in Envoy with the development CA from `ghostllm certs`."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import openai
import pytest
from google.protobuf import struct_pb2

from ghostllm.certs import make_dev_certs
from ghostllm.v1 import chat_pb2, chat_pb2_grpc, openai_pb2
from tests.support.auth import ADMIN_KEY, authorized
from tests.support.procs import Stack, stack_config, start_stack, stop


@pytest.fixture(scope="module")
def tls_stack(upstream_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    tmp = tmp_path_factory.mktemp("tls")
    certs = make_dev_certs(tmp / "certs")
    config = stack_config(upstream_port, tmp, workers=1, tls={"cert_file": str(certs.cert), "key_file": str(certs.key)})
    s = start_stack(config, upstream_port, tmp)
    try:
        yield s, certs.ca_cert
    finally:
        stop(s.proc)


def test_openai_sdk_over_tls(tls_stack: tuple[Stack, Path]) -> None:
    stack, ca = tls_stack
    assert stack.base_url.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(ca))
    with openai.OpenAI(
        base_url=stack.base_url, api_key=ADMIN_KEY, max_retries=0, http_client=openai.DefaultHttpx2Client(verify=ctx)
    ) as client:
        reply = client.chat.completions.create(model="dev-echo", messages=[{"role": "user", "content": "secure"}])
        assert (reply.choices[0].message.content or "").endswith("secure")
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="dev-echo", messages=[{"role": "user", "content": "secure"}], stream=True
            )
            if c.choices
        )
        assert streamed == reply.choices[0].message.content


def test_alpn_offers_h2_and_http11(tls_stack: tuple[Stack, Path]) -> None:
    stack, ca = tls_stack
    for offered, expected in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.set_alpn_protocols(offered)
        with (
            socket.create_connection(("127.0.0.1", stack.rest_port)) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.selected_alpn_protocol() == expected


def test_untrusted_client_refused(tls_stack: tuple[Stack, Path]) -> None:
    stack, _ = tls_stack
    ctx = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", stack.rest_port)) as raw, pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(raw, server_hostname="localhost")


def test_grpc_over_tls(tls_stack: tuple[Stack, Path]) -> None:
    stack, ca = tls_stack
    creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    with authorized(grpc.secure_channel(f"localhost:{stack.grpc_port}", creds)) as channel:
        reply = chat_pb2_grpc.ChatServiceStub(channel).CreateChatCompletion(
            chat_pb2.ChatCompletionRequest(
                model="dev-echo",
                messages=[openai_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value="tls"))],
            )
        )
    assert reply.choices[0].message.content.endswith("tls")
