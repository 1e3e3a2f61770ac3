"""A pipelined Redis connection for the limiter's script calls: calls are written as they
come, in order, and replies are matched to them in order (RESP2, parsed by hiredis, the C
parser redis-py itself uses).

Why not redis-py's pipeline here: for a call that is one EVALSHA of a dozen small arguments,
redis-py's Python layers (the pipeline object, the pool, a task and a timeout per batch, a
timeout per reply read) cost the worker about 0.25 ms per request, several times everything
else the limits add; this connection writes from the caller's own tick and resolves
futures straight from `data_received`, so a batch costs one write and one wake-up. redis-py
stays the client for everything else (the auth cache, change announcements) and reads the
URL here (`redis.connection.parse_url`), so both understand the same `redis.url`.

Each call gets `timeout_s` from when it was written; a reply that is late fails every call
still waiting and closes the connection (later replies could no longer be matched), and so
does a lost connection. The owner reconnects on its next call. One timer watches the
oldest call and is left to lapse rather than cancelled when replies catch up: arming and
cancelling one per round trip was a measurable part of a check's cost.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import hiredis

Arg = bytes | str | int
# Called once with the reply (a hiredis.ReplyError for an error reply) or, when the call was
# lost (late reply, lost connection), with the exception saying why.
OnReply = Callable[[Any], None]


class RespError(Exception):
    """The connection failed: closed, late, or refused at the handshake."""


def bulk(a: Arg) -> bytes:
    """One argument as a RESP bulk string."""
    b = a.encode() if isinstance(a, str) else b"%d" % a if isinstance(a, int) else a
    return b"$%d\r\n%s\r\n" % (len(b), b)


def pack(args: Sequence[Arg]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join(map(bulk, args))


# Written just before a command whose reply nobody reads: Redis sends none (nor for this).
NO_REPLY = pack(["CLIENT", "REPLY", "SKIP"])


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect, from a redis:// rediss:// or unix:// URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    verify: bool = True

    @classmethod
    def of_url(cls, url: str) -> Endpoint:
        from redis.connection import parse_url

        kw: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        tls = url.startswith("rediss://")
        return cls(
            host=str(kw.get("host", "127.0.0.1")),
            port=int(kw.get("port", 6379)),
            path=str(kw.get("path", "")),
            db=int(kw.get("db", 0) or 0),
            username=kw.get("username"),
            password=kw.get("password"),
            tls=tls,
            verify=str(kw.get("ssl_cert_reqs", "required")).lower() not in ("none", "optional"),
        )

    def handshake(self) -> list[list[Arg]]:
        out: list[list[Arg]] = []
        if self.password is not None:
            out.append(["AUTH", self.username, self.password] if self.username else ["AUTH", self.password])
        if self.db:
            out.append(["SELECT", self.db])
        return out


class RespConnection(asyncio.Protocol):
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        # (when written, what to call with its reply), oldest first.
        self._waiting: collections.deque[tuple[float, OnReply]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        # Resolved once nothing is waiting (see `drain`).
        self._drained: asyncio.Future[None] | None = None
        self.closed = False

    @classmethod
    async def open(cls, endpoint: Endpoint, timeout_s: float, connect_timeout_s: float) -> RespConnection:
        loop = asyncio.get_running_loop()
        conn = cls(timeout_s)
        context: ssl.SSLContext | None = None
        if endpoint.tls:
            context = ssl.create_default_context()
            if not endpoint.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        async with asyncio.timeout(connect_timeout_s):
            if endpoint.path:
                await loop.create_unix_connection(lambda: conn, endpoint.path, ssl=context)
            else:
                await loop.create_connection(lambda: conn, endpoint.host, endpoint.port, ssl=context)
            try:
                for command in endpoint.handshake():
                    reply = await conn.call(command)
                    if isinstance(reply, Exception):
                        raise RespError(f"Redis refused {command[0]!s}: {reply}")
            except BaseException:
                conn.close()
                raise
        return conn

    # ------------------------------------------------------------------ calls

    def send(self, commands: Sequence[tuple[bytes, OnReply | None]]) -> None:
        """Write every command (packed) at once; each one's callback gets its reply. A command
        without a callback must be one Redis does not answer (after NO_REPLY)."""
        if self._transport is None or self.closed:
            raise RespError("the connection is closed")
        now = self._loop.time()
        waiting = self._waiting
        for _, on_reply in commands:
            if on_reply is not None:
                waiting.append((now, on_reply))
        if waiting and self._timer is None:
            self._timer = self._loop.call_at(now + self.timeout_s, self._expire)
        self._transport.write(b"".join([data for data, _ in commands]))

    async def call(self, args: Sequence[Arg]) -> Any:
        future: asyncio.Future[Any] = self._loop.create_future()

        def done(reply: Any) -> None:
            if not future.done():
                future.set_result(reply)

        self.send([(pack(args), done)])
        reply = await future
        if isinstance(reply, RespError):
            raise reply
        return reply

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its interface.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while (reply := reader.gets()) is not False:
            if not waiting:
                self._fail(RespError("Redis sent a reply nobody asked for"))
                return
            waiting.popleft()[1](reply)
        if not waiting and self._drained is not None:
            self._drained.set_result(None)
            self._drained = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RespError(f"the connection was lost ({exc or 'closed by Redis'})"))

    # ------------------------------------------------------------------ failure

    def _expire(self) -> None:
        self._timer = None
        if not self._waiting:
            return  # the next send arms it again
        due = self._waiting[0][0] + self.timeout_s
        if self._loop.time() >= due:
            self._fail(RespError(f"no reply within {self.timeout_s:g}s"))
        else:
            self._timer = self._loop.call_at(due, self._expire)

    def _fail(self, err: RespError) -> None:
        self.close()
        waiting, self._waiting = self._waiting, collections.deque()
        for _, on_reply in waiting:
            on_reply(err)
        if self._drained is not None:
            self._drained.set_result(None)
            self._drained = None

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()

    async def drain(self) -> None:
        """Until every call written has its reply (or the connection failed: each call's
        deadline bounds the wait)."""
        if not self._waiting or self.closed:
            return
        if self._drained is None:
            self._drained = self._loop.create_future()
        await asyncio.shield(self._drained)
