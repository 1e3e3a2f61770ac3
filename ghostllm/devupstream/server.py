"""Entry points: ``serve`` (embeddable coroutine) and ``run`` (blocking, for the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import uvloop

from ghostllm.devupstream.app import App
from ghostllm.devupstream.protocol import Connection


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    chunk_delay: float = 0.0,
    ready: asyncio.Future[int] | None = None,
) -> None:
    """Serve until cancelled; ``ready`` gets the bound port once the socket is listening."""
    loop = asyncio.get_running_loop()
    app = App(chunk_delay)
    try:
        server = await loop.create_server(
            lambda: Connection(app.handle, app.connections), host, port, reuse_address=True, backlog=1024
        )
    except BaseException as exc:
        if ready is not None and not ready.done():
            if isinstance(exc, Exception):
                ready.set_exception(exc)
            else:
                ready.cancel()
        raise
    try:
        if ready is not None and not ready.done():
            ready.set_result(server.sockets[0].getsockname()[1])
        await asyncio.Future()
    finally:
        server.close()
        # Hanging and streaming connections would otherwise outlive the server.
        for conn in list(app.connections):
            conn.abort()
        await server.wait_closed()


def run(host: str = "127.0.0.1", port: int = 11435, *, chunk_delay: float = 0.0) -> None:
    """Serve on uvloop until SIGINT/SIGTERM; raises OSError if the address cannot be bound."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_main(host, port, chunk_delay))


async def _main(host: str, port: int, chunk_delay: float) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[int] = loop.create_future()
    task = asyncio.create_task(serve(host, port, chunk_delay=chunk_delay, ready=ready))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        bound = await ready
    except asyncio.CancelledError:
        # Signalled before the socket was listening: nothing to report.
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return
    except OSError:
        await asyncio.gather(task, return_exceptions=True)  # retrieves the same error from the task
        raise
    shown = f"[{host}]" if ":" in host else host
    print(f"ghostllm dev-upstream (development only) listening on http://{shown}:{bound}/v1", flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await task
