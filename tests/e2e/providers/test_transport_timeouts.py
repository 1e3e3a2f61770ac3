"""The HTTP transport's per-deployment timeouts over real loopback HTTP (an aiohttp server in
this process): which limit ends which silence, and the error each gives. A stream's first
bytes are bounded by its time to first output even when that is longer than its idle limit
(sock_read holds the longer one until then), and its idle limit applies from its first bytes
on; a whole answer is bounded by its time to first output; a deployment's timeout_s bounds a
stream's whole length. The limits are short and every silence far longer than the limit it
must trip (or far shorter than the one it must not): no timing assertions."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Mapping

import pytest
from aiohttp import web

from ghostllm.config import DeploymentConfig, ProviderConfig
from ghostllm.errors import GhostError, ProviderError, UpstreamTimeout
from ghostllm.providers.base import Call
from ghostllm.providers.transport import HTTPTransport
from tests.support.procs import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# How long the server stays silent where a limit must trip: far over any limit below.
LONG_S = 5.0


def on_error(status: int, raw: bytes, headers: Mapping[str, str]) -> GhostError:
    return ProviderError(f"status {status}")


async def events(
    request: web.Request, *, before_s: float = 0.0, gap_s: float = 0.0, count: int = 5, then_s: float = 0.0
) -> web.StreamResponse:
    """Silence for `before_s`, the head and `count` events `gap_s` apart, silence for `then_s`, the end."""
    await asyncio.sleep(before_s)
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for i in range(count):
        if i:
            await asyncio.sleep(gap_s)
        await resp.write(b'data: {"n": %d}\n\n' % i)
    await asyncio.sleep(then_s)
    await resp.write_eof()
    return resp


async def answer_after(request: web.Request, seconds: float) -> web.Response:
    await asyncio.sleep(seconds)
    return web.json_response({"ok": True})


async def read_stream(transport: HTTPTransport, call: Call) -> bytes:
    got = b""
    async for data in transport.stream("/x", b"{}", call, on_error):
        got += data
    return got


async def serving(
    handler: Handler, limits: DeploymentConfig, go: Callable[[HTTPTransport, Call], Awaitable[bytes]]
) -> bytes:
    app = web.Application()
    app.router.add_post("/x", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = ProviderConfig("up", base_url=f"http://127.0.0.1:{port}", connect_timeout_s=2.0, timeout_s=LONG_S * 4)
    transport = HTTPTransport(config, {}, 1024 * 1024, stream_total_s=LONG_S * 4)
    await transport.start()
    try:
        return await go(transport, Call(request_id="t", timeouts=transport.resolve(limits)))
    finally:
        await transport.close()
        await runner.cleanup()


def run(handler: Handler, limits: DeploymentConfig, *, stream: bool = True) -> bytes:
    async def go(transport: HTTPTransport, call: Call) -> bytes:
        if stream:
            return await read_stream(transport, call)
        return await transport.post("/x", b"{}", call, on_error)

    return asyncio.run(serving(handler, limits, go))


def test_a_silent_start_is_the_first_output_limits() -> None:
    # sock_read is the idle limit here, longer than the silence: only the first-output timer ends it.
    limits = DeploymentConfig("up", ttft_timeout_s=0.3, idle_timeout_s=LONG_S * 2)
    with pytest.raises(UpstreamTimeout, match=re.escape("did not start answering within 0.3s")):
        run(functools.partial(events, before_s=LONG_S), limits)


def test_a_slow_start_within_the_first_output_limit_is_not_an_idle_timeout() -> None:
    """1 s of silence before the head: five times the idle limit, a fifth of the first-output one."""
    limits = DeploymentConfig("up", ttft_timeout_s=LONG_S, idle_timeout_s=0.2)
    assert run(functools.partial(events, before_s=1.0, gap_s=0.02), limits).count(b"data: ") == 5


def test_after_the_first_bytes_the_idle_limit_applies() -> None:
    # Were sock_read left at the first-output limit, the stream would end normally after its silence.
    limits = DeploymentConfig("up", ttft_timeout_s=LONG_S * 4, idle_timeout_s=0.3)
    with pytest.raises(UpstreamTimeout, match=re.escape("sent nothing for 0.3s")):
        run(functools.partial(events, count=2, then_s=LONG_S), limits)


def test_a_deployments_total_bounds_a_stream() -> None:
    limits = DeploymentConfig("up", timeout_s=1.0, idle_timeout_s=LONG_S)
    with pytest.raises(UpstreamTimeout, match=re.escape("the 1s stream limit")):
        run(functools.partial(events, gap_s=0.1, count=100), limits)


def test_a_whole_answer_is_bounded_by_its_first_output_limit() -> None:
    limits = DeploymentConfig("up", ttft_timeout_s=0.3)
    with pytest.raises(UpstreamTimeout, match=re.escape("did not answer within 0.3s")):
        run(functools.partial(answer_after, seconds=LONG_S), limits, stream=False)
    assert run(functools.partial(answer_after, seconds=0.0), limits, stream=False) == b'{"ok": true}'
