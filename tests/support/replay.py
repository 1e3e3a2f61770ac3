"""A loopback upstream that replays one recorded provider exchange at a time.

`ReplayServer` runs aiohttp.web in a thread of the test process. A test loads a case
(`load(status, headers, body)`); from then on every request the gateway sends (retries
included) gets exactly that status, those headers and those bytes, written in a few
pieces so the gateway's parsers see lines, events and UTF-8 characters split across
reads. Everything received is recorded (method, path with query, headers lower-cased,
JSON body). Model listings and health checks (GET .../models, /api/tags, /api/version,
POST /api/show) get a plausible answer of their own and never consume the case.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

# The case's headers are the provider's; these describe a connection we do not reproduce.
_HOP_BY_HOP = frozenset({"connection", "content-length", "transfer-encoding", "content-encoding", "keep-alive"})
# The answer is written in this many pieces (more for long bodies, each at most _MAX_PIECE).
_PIECES = 4
_MAX_PIECE = 4096


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    text: str

    def http_view(self) -> dict[str, Any]:
        return http_view(self.method, self.path, self.headers)


def http_view(method: str, path_qs: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """A request as the cases' upstream_http_must addresses it: method, path (no query),
    query (name -> value, decoded), headers (lower-cased names)."""
    path, _, query = path_qs.partition("?")
    return {
        "method": method,
        "path": path,
        "query": dict(parse_qsl(query, keep_blank_values=True)),
        "headers": {k.lower(): v for k, v in headers.items()},
    }


@dataclass(frozen=True)
class Canned:
    status: int
    headers: dict[str, str]
    body: bytes


def pieces(body: bytes, count: int = _PIECES) -> list[bytes]:
    """`body` cut one byte short of fixed fractions (deterministic; lands mid-line and mid-event)."""
    if len(body) <= 1:
        return [body]
    count = max(count, -(-len(body) // _MAX_PIECE))
    cuts = sorted({max(1, len(body) * i // count - 1) for i in range(1, count)} - {len(body)})
    bounds = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _tags(names: list[str]) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": n,
                "model": n,
                "modified_at": "2025-05-04T17:37:44.706015396-07:00",
                "size": 2019393189,
                "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "llama",
                    "families": ["llama"],
                    "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M",
                },
            }
            for n in names
        ]
    }


def _gemini_model(name: str) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name,
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 8192,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    }


def _openai_model(name: str) -> dict[str, Any]:
    # Both OpenAI's and Anthropic's listing fields: each SDK reads its own.
    return {
        "id": name,
        "object": "model",
        "created": 1700000000,
        "owned_by": "replay",
        "type": "model",
        "display_name": name,
        "created_at": "2025-01-01T00:00:00Z",
    }


def _listing(method: str, path: str, names: list[str]) -> dict[str, Any] | None:
    """The plausible answer to a listing or health request, or None if it is not one."""
    path = path.partition("?")[0]
    if method == "GET" and path.endswith("/api/tags"):
        return _tags(names)
    if method == "GET" and path.endswith("/api/version"):
        return {"version": "0.6.1"}
    if method == "POST" and path.endswith("/api/show"):
        return {
            "modelfile": "",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": _tags(names[:1])["models"][0]["details"],
            "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
            "capabilities": ["completion", "tools", "vision"],
        }
    if method != "GET":
        return None
    head, _, tail = path.rpartition("/models")
    if "/v1beta" in head or path.endswith("/v1beta/models"):
        if tail.startswith("/"):
            return _gemini_model(tail[1:])
        return {"models": [_gemini_model(n) for n in names]}
    if tail.startswith("/"):
        return _openai_model(tail[1:])
    data = [_openai_model(n) for n in names]
    return {"object": "list", "data": data, "has_more": False, "first_id": names[0], "last_id": names[-1]}


class ReplayServer:
    """One replay upstream on a free loopback port; use as a context manager."""

    def __init__(self, models: list[str]) -> None:
        self.models = models or ["replay-model"]
        self._lock = threading.Lock()
        self._canned: Canned | None = None
        self._listings: dict[str, Canned] = {}
        self._received: list[Received] = []
        self._aux: list[Received] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"replay-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests call ---------------------------------------------------------------

    def load(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Answer every following request with this, and start a fresh record."""
        kept = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        with self._lock:
            self._canned = Canned(status, kept, body)
            self._received = []

    def serve_listing(self, path_suffix: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Answer GET requests whose path ends in `path_suffix` with this (a recorded listing)."""
        kept = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        with self._lock:
            self._listings[path_suffix] = Canned(status, kept, body)

    def received(self) -> list[Received]:
        """The requests that got the loaded case, oldest first."""
        with self._lock:
            return list(self._received)

    def listing_requests(self) -> list[Received]:
        with self._lock:
            return list(self._aux)

    # -- serving ----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        text = raw.decode(errors="replace")
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        seen = Received(request.method, request.path_qs, {k.lower(): v for k, v in request.headers.items()}, body, text)
        path = request.path
        with self._lock:
            recorded = next((c for suffix, c in self._listings.items() if path.endswith(suffix)), None)
            listing = None if recorded is not None else _listing(request.method, path, self.models)
            if (recorded is not None and request.method == "GET") or listing is not None:
                self._aux.append(seen)
                canned = recorded or Canned(200, {"content-type": "application/json"}, json.dumps(listing).encode())
            else:
                self._received.append(seen)
                canned = self._canned or Canned(
                    599, {"content-type": "application/json"}, b'{"error": "replay: no case loaded"}'
                )
        return await self._write(request, canned)

    async def _write(self, request: web.Request, canned: Canned) -> web.StreamResponse:
        response = web.StreamResponse(status=canned.status, headers=canned.headers)
        content_type = canned.headers.get("content-type", canned.headers.get("Content-Type", ""))
        streaming = "event-stream" in content_type or "ndjson" in content_type
        if not streaming:
            response.content_length = len(canned.body)
        await response.prepare(request)
        try:
            for piece in pieces(canned.body):
                await response.write(piece)
                # A real turn of the loop between pieces, so they leave as separate reads.
                await asyncio.sleep(0.002)
            await response.write_eof()
        except ConnectionResetError:
            # The gateway stopped reading (it may, e.g. once an error body told it enough).
            pass
        return response


@contextlib.contextmanager
def replay_server(models: list[str]) -> Iterator[ReplayServer]:
    """A running replay upstream that lists `models`, stopped on leaving."""
    with ReplayServer(models) as server:
        yield server
