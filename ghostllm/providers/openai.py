"""Adapter for OpenAI and every OpenAI-compatible server (vLLM, Groq, Together, Ollama's /v1, LM Studio).

The wire format already is ours, so requests and answers pass through with the
model name swapped; what this adapter adds is the pooled connection, timeouts,
and the mapping of upstream failures onto our error model (an upstream 401 is
OUR provider error, 502, not a 401 for the client; an upstream 429 passes
through with its retry-after).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NoReturn

import aiohttp
import orjson

from ghostllm.config import ProviderConfig
from ghostllm.errors import (
    GhostError,
    InvalidRequest,
    PayloadTooLarge,
    ProviderError,
    RateLimited,
    UpstreamTimeout,
)
from ghostllm.providers.base import Batch, Call, Json, Provider
from ghostllm.providers.sse import SSEDecoder


def _upstream_message(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:300].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return raw[:300].decode("utf-8", "replace")


def upstream_status_error(provider: str, status: int, raw: bytes, retry_after: str | None) -> GhostError:
    """Map an upstream HTTP error status onto the error the client gets."""
    msg = _upstream_message(raw)
    if status == 429:
        return RateLimited(f"provider {provider} is rate limiting: {msg}", retry_after=retry_after)
    if status in (400, 422):
        return InvalidRequest(f"provider {provider} rejected the request: {msg}", code="upstream_invalid_request")
    if status == 413:
        return PayloadTooLarge(f"provider {provider} rejected the request as too large: {msg}")
    if status in (408, 504):
        return UpstreamTimeout(f"provider {provider} timed out (upstream status {status}): {msg}")
    return ProviderError(f"provider {provider} failed with status {status}: {msg}")


def _headers(call: Call) -> dict[str, str] | None:
    return {"x-request-id": call.request_id} if call.request_id else None


class OpenAIProvider(Provider):
    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        self._base = config.base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        headers = {"content-type": "application/json", **config.headers}
        if config.api_key:
            headers["authorization"] = f"Bearer {config.api_key}"
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s, connect=config.connect_timeout_s)
        # A stream may legitimately run for a long time; what must not happen is silence.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=config.connect_timeout_s, sock_read=config.timeout_s
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

    async def _post_json(self, path: str, body: Json, call: Call) -> Json:
        try:
            async with self.session.post(
                self._base + path, data=orjson.dumps(body), timeout=self._timeout, headers=_headers(call)
            ) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise upstream_status_error(self.id, resp.status, raw, resp.headers.get("retry-after"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._fail(exc)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProviderError(f"provider {self.id} returned a body that is not JSON: {raw[:200]!r}") from None
        if not isinstance(data, dict):
            raise ProviderError(f"provider {self.id} returned unexpected JSON")
        return data

    async def _stream(self, path: str, body: Json, call: Call) -> AsyncIterator[Batch]:
        if self.config.stream_usage:
            body["stream_options"] = {"include_usage": True}
        decoder = SSEDecoder()
        try:
            async with self.session.post(
                self._base + path, data=orjson.dumps(body), timeout=self._stream_timeout, headers=_headers(call)
            ) as resp:
                if resp.status != 200:
                    raw = await resp.read()
                    raise upstream_status_error(self.id, resp.status, raw, resp.headers.get("retry-after"))
                async for data in resp.content.iter_any():
                    events = decoder.feed(data)
                    if events:
                        # The last batch ends with the DONE marker, so callers can
                        # write the terminator together with the final chunks.
                        yield events
                    if decoder.done:
                        return
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._fail(exc)
        if not decoder.done:
            raise ProviderError(f"provider {self.id} ended the stream before it was complete")

    async def health(self) -> bool:
        try:
            await self.list_models(limit_s=2.0)
        except GhostError:
            return False
        return True

    async def list_models(self, limit_s: float | None = None) -> list[str]:
        t = aiohttp.ClientTimeout(total=limit_s) if limit_s else self._timeout
        try:
            async with self.session.get(self._base + "/models", timeout=t) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise upstream_status_error(self.id, resp.status, raw, None)
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._fail(exc)
        try:
            data = orjson.loads(raw)
            return [str(m["id"]) for m in data["data"]]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ProviderError(f"provider {self.id} returned an invalid model list") from None

    async def chat(self, body: Json, call: Call) -> Json:
        return await self._post_json("/chat/completions", body, call)

    def stream_chat(self, body: Json, call: Call) -> AsyncIterator[Batch]:
        body["stream"] = True
        return self._stream("/chat/completions", body, call)

    async def completion(self, body: Json, call: Call) -> Json:
        return await self._post_json("/completions", body, call)

    def stream_completion(self, body: Json, call: Call) -> AsyncIterator[Batch]:
        body["stream"] = True
        return self._stream("/completions", body, call)

    async def embeddings(self, body: Json, call: Call) -> Json:
        return await self._post_json("/embeddings", body, call)
