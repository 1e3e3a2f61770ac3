"""HTTP transport to an upstream: the pooled aiohttp session, timeouts, size limits,
and connection failures mapped onto our error model. Knows nothing of wire formats."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import NoReturn

import aiohttp

from ghostllm.config import ProviderConfig
from ghostllm.errors import GhostError, ProviderError, UnusableAnswer, UpstreamTimeout
from ghostllm.providers.base import Call

# An upstream's error answer is read this far: enough for any message, never a reason to buffer.
ERROR_BODY_BYTES = 64 * 1024
# Build the client's error from an upstream status, body and headers.
ErrorMapper = Callable[[int, bytes, Mapping[str, str]], GhostError]


def _request_headers(call: Call) -> dict[str, str] | None:
    return {"x-request-id": call.request_id} if call.request_id else None


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
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s, connect=config.connect_timeout_s)
        # A stream may run long (up to the gateway's limit, so it ends with an error event
        # before Envoy's route timeout would cut it mid-air); what must not happen is silence.
        self.stream_total_s = stream_total_s
        self.stream_silence_s = stream_silence_s or config.timeout_s
        self._stream_timeout = aiohttp.ClientTimeout(
            total=stream_total_s, connect=config.connect_timeout_s, sock_read=self.stream_silence_s
        )

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

    def _fail(self, exc: BaseException) -> NoReturn:
        if isinstance(exc, GhostError):
            raise exc
        if isinstance(exc, asyncio.TimeoutError):
            raise UpstreamTimeout(f"provider {self.id} did not answer in time") from exc
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
        try:
            async with self.session.post(
                self._base + path, data=body, timeout=self._timeout, headers=_request_headers(call)
            ) as resp:
                if resp.status != 200:
                    raise await self._error(resp, on_error)
                return await self._read(resp, self.max_response_bytes)
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._fail(exc)

    async def stream(self, path: str, body: bytes, call: Call, on_error: ErrorMapper) -> AsyncGenerator[bytes]:
        """The answer's bytes as each read returns them."""
        try:
            async with self.session.post(
                self._base + path, data=body, timeout=self._stream_timeout, headers=_request_headers(call)
            ) as resp:
                if resp.status != 200:
                    raise await self._error(resp, on_error)
                async for data in resp.content.iter_any():
                    yield data
        except aiohttp.ServerTimeoutError as exc:
            raise UpstreamTimeout(f"provider {self.id} sent nothing for {self.stream_silence_s:g}s") from exc
        except TimeoutError as exc:
            limit = f"the {self.stream_total_s:g}s stream limit" if self.stream_total_s else "its timeout"
            raise UpstreamTimeout(f"provider {self.id}: the stream was ended at {limit}") from exc
        except aiohttp.ClientError as exc:
            self._fail(exc)

    async def get(self, path: str, on_error: ErrorMapper, limit_s: float | None = None) -> bytes:
        timeout = aiohttp.ClientTimeout(total=limit_s) if limit_s else self._timeout
        try:
            async with self.session.get(self._base + path, timeout=timeout) as resp:
                if resp.status != 200:
                    raise await self._error(resp, on_error)
                return await self._read(resp, self.max_response_bytes)
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._fail(exc)
