"""HTTP transport to an upstream: the pooled aiohttp session, timeouts, size limits,
and connection failures mapped onto our error model. Knows nothing of wire formats.

Timeouts are per deployment (`Timeouts`, resolved once when the catalogue is built and handed
down in each request's Call): connect; time to the first output (a non-streaming answer
whole, a stream's first bytes); silence between two reads of a stream (aiohttp's sock_read,
which it re-arms on every read anyway, so we add no timer per chunk); the whole answer. A
stream whose time to first output differs from its silence limit costs one timer more, until
its first bytes arrive. Every timeout is an UpstreamTimeout: retried or failed over before
any output, ended in-band after (the gateway's rule, not this module's).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn

import aiohttp

from ghostllm.config import DeploymentConfig, ProviderConfig
from ghostllm.errors import GhostError, ProviderError, UnusableAnswer, UpstreamTimeout
from ghostllm.providers.base import Call

# An upstream's error answer is read this far: enough for any message, never a reason to buffer.
ERROR_BODY_BYTES = 64 * 1024
# Build the client's error from an upstream status, body and headers.
ErrorMapper = Callable[[int, bytes, Mapping[str, str]], GhostError]


def _request_headers(call: Call) -> dict[str, str] | None:
    headers = {"x-request-id": call.request_id} if call.request_id else None
    if call.traceparent:
        # W3C trace context, so the upstream's own traces join the caller's (or ours).
        headers = headers or {}
        headers["traceparent"] = call.traceparent
        if call.tracestate:
            headers["tracestate"] = call.tracestate
    return headers


@dataclass(frozen=True, slots=True)
class Timeouts:
    """One deployment's limits on an upstream call, in seconds, and the aiohttp timeouts made
    from them once (a request builds none)."""

    connect_s: float
    # A non-streaming answer, whole: its time to first output (and its total, when less).
    answer_s: float
    # A stream: until its first bytes; between two reads after them; its whole length (None: unbounded).
    first_s: float
    idle_s: float
    stream_s: float | None
    answer: aiohttp.ClientTimeout
    stream: aiohttp.ClientTimeout
    # The stream's first-output timer, when sock_read (set to the longer of the two) does not
    # already bound the start; and whether sock_read drops to idle_s once the first bytes are in.
    first_timer_s: float | None
    tighten: bool


def _own(value: float | None, default: float) -> float:
    return default if value is None else value


def _capped(value: float, cap: float | None) -> float:
    return value if cap is None else min(value, cap)


# A deployment that sets none of its own limits.
_PROVIDERS_OWN = DeploymentConfig("")


def resolve_timeouts(
    p: ProviderConfig,
    d: DeploymentConfig | None = None,
    stream_total_s: float | None = None,
    stream_silence_s: float | None = None,
) -> Timeouts:
    """`d`'s limits over its provider `p`'s, then the server's stream bounds: a stream ends
    (with an error event) before Envoy's route timeout (`stream_total_s`) or its idle timeout
    (`stream_silence_s`: nothing at all sent to the client for that long) would cut it."""
    own = d or _PROVIDERS_OWN
    # The provider's timeout_s is a non-streaming answer's total and the default of the rest;
    # a deployment's is that too, and also bounds a stream's whole length.
    base = _own(own.timeout_s, p.timeout_s)
    connect = _own(own.connect_timeout_s, p.connect_timeout_s)
    ttft = _own(own.ttft_timeout_s, p.ttft_timeout_s or base)
    idle = _own(own.idle_timeout_s, p.idle_timeout_s or base)
    answer_s = min(ttft, base)
    stream_s = stream_total_s if own.timeout_s is None else _capped(own.timeout_s, stream_total_s)
    first_s, idle_s = _capped(ttft, stream_silence_s), _capped(idle, stream_silence_s)
    return Timeouts(
        connect_s=connect,
        answer_s=answer_s,
        first_s=first_s,
        idle_s=idle_s,
        stream_s=stream_s,
        answer=aiohttp.ClientTimeout(total=answer_s, connect=connect),
        stream=aiohttp.ClientTimeout(total=stream_s, connect=connect, sock_read=max(first_s, idle_s)),
        first_timer_s=first_s if first_s != idle_s else None,
        tighten=idle_s < first_s,
    )


def _read_silence(resp: aiohttp.ClientResponse, seconds: float) -> None:
    """Set sock_read of the connection `resp` is read from, counted from now (what aiohttp
    itself does to a connection it upgrades to a WebSocket)."""
    conn = resp.connection
    protocol = conn.protocol if conn is not None else None
    if protocol is not None:
        protocol.read_timeout = seconds
        protocol.start_timeout()


class HTTPTransport:
    def __init__(
        self,
        config: ProviderConfig,
        headers: Mapping[str, str],
        max_response_bytes: int,
        stream_total_s: float | None = None,
        stream_silence_s: float | None = None,
    ) -> None:
        self.config = config
        self.id = config.id
        self._base = config.base_url.rstrip("/")
        self._headers = {"content-type": "application/json", **headers, **config.headers}
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None
        # A stream may run long (up to the gateway's limit, so it ends with an error event
        # before Envoy's route timeout would cut it mid-air); what must not happen is silence.
        self.stream_total_s = stream_total_s
        self.stream_silence_s = stream_silence_s
        # The provider's own limits: for calls that name no deployment (health, model lists).
        self.timeouts = self.resolve(None)

    def resolve(self, d: DeploymentConfig | None) -> Timeouts:
        """A deployment's limits on this provider (None: the provider's own)."""
        return resolve_timeouts(self.config, d, self.stream_total_s, self.stream_silence_s)

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.config.max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                skip_auto_headers=("User-Agent",),
                # One session serves every tenant: cookies an upstream sets must not follow other callers.
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ProviderError(f"provider {self.id} is not started")
        return self._session

    def _fail(self, exc: BaseException, t: Timeouts | None = None) -> NoReturn:
        if isinstance(exc, GhostError):
            raise exc
        if isinstance(exc, aiohttp.ConnectionTimeoutError) and t is not None:
            raise self._connect_timeout(t) from exc
        if isinstance(exc, asyncio.TimeoutError):
            within = f" within {t.answer_s:g}s" if t is not None else " in time"
            raise UpstreamTimeout(f"provider {self.id} did not answer{within}") from exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise ProviderError(f"cannot connect to provider {self.id}: {exc.os_error}") from exc
        if isinstance(exc, aiohttp.ClientError):
            raise ProviderError(f"provider {self.id} connection failed: {exc or type(exc).__name__}") from exc
        raise exc

    def _too_large(self) -> ProviderError:
        return UnusableAnswer(f"provider {self.id} answered more than the {self.max_response_bytes}-byte limit")

    async def _read(self, resp: aiohttp.ClientResponse, limit: int) -> bytes:
        """The body, read no further than `limit` bytes (an answer over it is refused unread)."""
        length = resp.content_length
        if length is not None and length <= limit:
            return await resp.read()
        if length is not None:
            raise self._too_large()
        parts: list[bytes] = []
        size = 0
        async for data in resp.content.iter_any():
            size += len(data)
            if size > limit:
                raise self._too_large()
            parts.append(data)
        return b"".join(parts)

    async def _error(self, resp: aiohttp.ClientResponse, on_error: ErrorMapper) -> GhostError:
        # read(n) returns whatever one read brought: an error body that arrives in pieces
        # must still be read whole (up to the bound), or its message is cut.
        raw = bytearray()
        while len(raw) < ERROR_BODY_BYTES and (piece := await resp.content.read(ERROR_BODY_BYTES - len(raw))):
            raw += piece
        return on_error(resp.status, bytes(raw), resp.headers)

    async def post(self, path: str, body: bytes, call: Call, on_error: ErrorMapper) -> bytes:
        t = call.timeouts or self.timeouts
        try:
            async with self.session.post(
                self._base + path, data=body, timeout=t.answer, headers=_request_headers(call)
            ) as resp:
                if resp.status != 200:
                    call.upstream_status = resp.status
                    raise await self._error(resp, on_error)
                return await self._read(resp, self.max_response_bytes)
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._fail(exc, t)

    async def stream(self, path: str, body: bytes, call: Call, on_error: ErrorMapper) -> AsyncGenerator[bytes]:
        """The answer's bytes as each read returns them."""
        t = call.timeouts or self.timeouts
        began = False
        # Armed only until the first bytes, never across a yield (it cancels the task it runs in).
        first = asyncio.timeout(t.first_timer_s)
        try:
            async with (
                first,
                self.session.post(
                    self._base + path, data=body, timeout=t.stream, headers=_request_headers(call)
                ) as resp,
            ):
                if resp.status != 200:
                    call.upstream_status = resp.status
                    raise await self._error(resp, on_error)
                read = resp.content.readany
                data = await read()
                began = True
                first.reschedule(None)
                if t.tighten:
                    _read_silence(resp, t.idle_s)
                while data:
                    yield data
                    data = await read()
        except TimeoutError as exc:
            raise self._stream_timeout(exc, t, began, first.expired()) from exc
        except aiohttp.ClientError as exc:
            self._fail(exc, t)

    def _connect_timeout(self, t: Timeouts) -> UpstreamTimeout:
        return UpstreamTimeout(f"provider {self.id} did not accept a connection within {t.connect_s:g}s")

    def _stream_timeout(self, exc: TimeoutError, t: Timeouts, began: bool, first_expired: bool) -> UpstreamTimeout:
        """Which limit ended a stream: the gateway retries it only when nothing was relayed yet."""
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return self._connect_timeout(t)
        if first_expired or (isinstance(exc, aiohttp.SocketTimeoutError) and not began):
            return UpstreamTimeout(f"provider {self.id} did not start answering within {t.first_s:g}s")
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return UpstreamTimeout(f"provider {self.id} sent nothing for {t.idle_s:g}s")
        limit = f"the {t.stream_s:g}s stream limit" if t.stream_s else "its timeout"
        return UpstreamTimeout(f"provider {self.id}: the stream was ended at {limit}")

    async def get(self, path: str, on_error: ErrorMapper, limit_s: float | None = None) -> bytes:
        timeout = aiohttp.ClientTimeout(total=limit_s) if limit_s else self.timeouts.answer
        try:
            async with self.session.get(self._base + path, timeout=timeout) as resp:
                if resp.status != 200:
                    raise await self._error(resp, on_error)
                return await self._read(resp, self.max_response_bytes)
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._fail(exc)
