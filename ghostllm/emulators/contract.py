"""The emulators' behaviour contract (the package docstring states it), over a neutral
view of a request, plus what every emulator serves the same way: the request record
(`/_emulator/requests`, `/_emulator/reset`) and the serve loop. Each provider's module
turns its wire format into an `Ask` and an `Answer` back into its wire format."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import signal
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# Scenario models: the HTTP status each one answers with.
SCENARIOS = {"error-400": 400, "error-401": 401, "error-404": 404, "error-429": 429, "error-500": 500, "error-503": 503}
STREAM_ERROR = "stream-error"
RETRY_AFTER = "7"
_PIECE = re.compile(r"\s*\S+\s*")


@dataclass
class Ask:
    """What the contract needs to know of a request, whatever its wire format."""

    # Every input text, system included (prompt tokens are their words).
    texts: list[str] = field(default_factory=list)
    # The role of the last turn: "user", or "tool" for a tool result.
    last_role: str = "user"
    last_text: str = ""
    images: int = 0
    # Offered tools: (name, JSON schema of the parameters).
    tools: list[tuple[str, Any]] = field(default_factory=list)
    # "auto", "none", "required", or the name of the tool that must be called.
    tool_choice: str = "auto"
    parallel: bool = True
    json_mode: bool = False
    stop: list[str] = field(default_factory=list)
    max_tokens: int | None = None


@dataclass
class Call:
    name: str
    arguments: dict[str, str]


@dataclass
class Answer:
    text: str
    calls: list[Call]
    # "stop", "length", "stop_sequence" or "tool_calls": each module says it its way.
    finish: str
    stop_sequence: str | None
    prompt_tokens: int
    completion_tokens: int


def words(text: str) -> int:
    return len(text.split())


def pieces(text: str) -> list[str]:
    """The text in streaming order, one piece per word (whitespace kept, so they join back to it)."""
    return _PIECE.findall(text) or ([text] if text else [])


def fragments(text: str) -> list[str]:
    """A tool call's arguments JSON in two pieces at least, as real streams split them."""
    if len(text) < 2:
        return [text, ""]
    half = len(text) // 2
    return [text[:half], text[half:]]


def _arguments(schema: Any) -> dict[str, str]:
    required = schema.get("required") if isinstance(schema, dict) else None
    return {str(name): "x" for name in required} if isinstance(required, list) else {}


def _calls(ask: Ask) -> list[Call]:
    if not ask.tools or ask.tool_choice == "none" or ask.last_role != "user":
        return []
    if ask.tool_choice not in ("auto", "required"):
        chosen = [t for t in ask.tools if t[0] == ask.tool_choice] or ask.tools[:1]
    elif ask.parallel and re.search(r"\bparallel\b", ask.last_text, re.IGNORECASE):
        chosen = ask.tools
    else:
        chosen = ask.tools[:1]
    return [Call(name, _arguments(schema)) for name, schema in chosen]


def _text(ask: Ask) -> str:
    if ask.last_role == "tool":
        return f"Tool said: {ask.last_text}"
    text = f"You said: {ask.last_text}"
    if ask.images:
        text += f" [{ask.images} image{'s' if ask.images > 1 else ''}]"
    return text


def answer(ask: Ask) -> Answer:
    prompt = sum(words(t) for t in ask.texts)
    calls = _calls(ask)
    if calls:
        return Answer("", calls, "tool_calls", None, prompt, sum(len(c.arguments) for c in calls))
    text = _text(ask)
    if ask.json_mode:
        # Hand-built so it reads like a model's output (and stays one piece per word).
        text = '{"answer": "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"}'
    finish, matched = "stop", None
    cuts = [(text.find(s), s) for s in ask.stop if s and s in text]
    if cuts:
        at, matched = min(cuts)
        text, finish = text[:at], "stop_sequence"
    if ask.max_tokens is not None and 0 <= ask.max_tokens < words(text):
        text = "".join(pieces(text)[: ask.max_tokens]).rstrip()
        finish, matched = "length", None
    return Answer(text, [], finish, matched, prompt, words(text))


def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector that depends only on the text (the same input always embeds the same)."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = (seed * (dimensions * 4 // len(seed) + 1))[: dimensions * 4]
    values = [(b / 255.0) - 0.5 for b in raw[::4]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def packed(vector: list[float]) -> bytes:
    return struct.pack(f"<{len(vector)}f", *vector)


class Recorder:
    """Every request received (but its own), for tests to check what an adapter sent.
    `on_reset`: what else a reset forgets (an emulator's own state, such as a prompt cache)."""

    def __init__(self, on_reset: Callable[[], None] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.on_reset = on_reset

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/_emulator/"):
            body: Any = None
            if request.can_read_body:
                raw = await request.read()
                with contextlib.suppress(ValueError):
                    body = await request.json()
                if body is None and raw:
                    body = raw.decode("utf-8", "replace")
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path_qs,
                    "headers": {k.lower(): v for k, v in request.headers.items()},
                    "body": body,
                }
            )
        return await handler(request)

    async def list(self, _: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def reset(self, _: web.Request) -> web.Response:
        self.requests.clear()
        if self.on_reset is not None:
            self.on_reset()
        return web.json_response({"ok": True})


def app(routes: list[web.RouteDef], on_reset: Callable[[], None] | None = None) -> web.Application:
    recorder = Recorder(on_reset)
    application = web.Application(middlewares=[recorder.middleware], client_max_size=64 * 1024 * 1024)
    application.add_routes(
        [*routes, web.get("/_emulator/requests", recorder.list), web.post("/_emulator/reset", recorder.reset)]
    )
    return application


def serve(application: web.Application, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""

    async def main() -> None:
        runner = web.AppRunner(application, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
