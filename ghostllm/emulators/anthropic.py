"""A loopback emulator of Anthropic's Messages API (the contract in ghostllm.emulators).

Serves `POST /v1/messages` (JSON or the documented event stream), `GET /v1/models`
(and `/v1/models/{id}`) in Anthropic's shapes, checking requests the way the real API
does where an adapter could get them wrong: the x-api-key and anthropic-version
headers, max_tokens required, only known top-level fields, user/assistant roles, a
tool_result answering a tool_use of the previous turn, a thinking budget below
max_tokens. Prompt caching is emulated too: the request prefix up to the last
`cache_control` marker is written to the cache the first time and read after.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ghostllm.emulators import contract

Json = dict[str, Any]

MODELS = ("anthropic-small", "anthropic-large")
# Scenario models: status, error type, message.
ERRORS = {
    "error-400": (400, "invalid_request_error", "messages: emulated invalid request"),
    "error-401": (401, "authentication_error", "invalid x-api-key"),
    "error-404": (404, "not_found_error", "model: error-404"),
    "error-429": (429, "rate_limit_error", "Number of request tokens has exceeded your rate limit"),
    "error-500": (500, "api_error", "Internal server error"),
    "error-503": (503, "api_error", "Service unavailable"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
}
TOP_LEVEL = frozenset(
    (
        "model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature", "top_p", "top_k",
        "tools", "tool_choice", "metadata", "thinking", "output_config", "service_tier",
    )
)  # fmt: skip
BLOCK_TYPES = frozenset(("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"))
TOOL_CHOICES = frozenset(("auto", "any", "tool", "none"))


class Invalid(Exception):
    """A request the real API refuses with invalid_request_error (400)."""


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(18).replace("-", "a").replace("_", "b")


def _blocks(content: Any) -> list[Json]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _block_text(block: Json) -> str:
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_result":
        return " ".join(_block_text(b) for b in _blocks(block.get("content") or ""))
    return ""


# ------------------------------------------------------------------ checks


def _check(body: Any) -> None:
    if not isinstance(body, dict):
        raise Invalid("body: Input should be an object")
    for name in body:
        if name not in TOP_LEVEL:
            raise Invalid(f"{name}: Extra inputs are not permitted")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise Invalid("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise Invalid("max_tokens: Input should be a positive integer")
    if not isinstance(body.get("model"), str):
        raise Invalid("model: Field required")
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        raise Invalid("temperature: Input should be less than or equal to 1")
    system = body.get("system")
    if not isinstance(system, str | None) and (
        not isinstance(system, list) or any(b.get("type") != "text" for b in system)
    ):
        raise Invalid("system: Input should be a valid string or a list of text blocks")
    _check_messages(body.get("messages"))
    _check_tools(body)
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            raise Invalid("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
        if budget >= max_tokens:
            raise Invalid("`max_tokens` must be greater than `thinking.budget_tokens`")
    fmt = (body.get("output_config") or {}).get("format")
    if fmt is not None and (fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict)):
        raise Invalid("output_config.format: a json_schema format needs a schema")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages: at least one message is required")
    previous_tools: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = m.get("content")
        if not isinstance(content, str | list):
            raise Invalid(f"messages.{i}.content: Input should be a valid string or list")
        tools_here: set[str] = set()
        for j, block in enumerate(_blocks(content)):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in BLOCK_TYPES:
                raise Invalid(f"messages.{i}.content.{j}.type: unknown content block type {kind!r}")
            if kind == "text" and not block.get("text"):
                raise Invalid(f"messages.{i}.content.{j}: text content blocks must be non-empty")
            if kind == "image" and (block.get("source") or {}).get("type") not in ("base64", "url"):
                raise Invalid(f"messages.{i}.content.{j}.source: an image needs a base64 or url source")
            if kind == "tool_use":
                if m["role"] != "assistant" or not isinstance(block.get("input"), dict):
                    raise Invalid(f"messages.{i}.content.{j}: tool_use blocks need an object input, from the assistant")
                tools_here.add(str(block.get("id")))
            if kind == "tool_result" and block.get("tool_use_id") not in previous_tools:
                raise Invalid(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding `tool_use` "
                    "block in the previous message."
                )
        previous_tools = tools_here


def _check_tools(body: Json) -> None:
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
            raise Invalid(f"tools.{i}: a tool needs a name and an input_schema")
        for name in tool:
            if name not in ("name", "description", "input_schema", "cache_control", "strict", "type"):
                raise Invalid(f"tools.{i}.{name}: Extra inputs are not permitted")
    choice = body.get("tool_choice")
    if choice is not None and choice.get("type") not in TOOL_CHOICES:
        raise Invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")


# ------------------------------------------------------------------ the answer


@dataclass
class Answer:
    blocks: list[Json] = field(default_factory=list)
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    input_tokens: int = 0
    cache_read: int = 0
    cache_written: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0


def _last_user(messages: list[Json]) -> list[Json]:
    return next((_blocks(m["content"]) for m in reversed(messages) if m["role"] == "user"), [])


def _tool_calls(body: Json, text: str) -> list[Json]:
    tools = body["tools"]
    choice = body.get("tool_choice") or {"type": "auto"}
    if choice["type"] == "tool":
        chosen = [t for t in tools if t["name"] == choice.get("name")][:1] or tools[:1]
    elif "parallel" in text.split() and not choice.get("disable_parallel_tool_use"):
        chosen = tools
    else:
        chosen = tools[:1]
    out = []
    for tool in chosen:
        required = tool["input_schema"].get("required") or []
        call = {"type": "tool_use", "id": _new_id("toolu_"), "name": tool["name"]}
        out.append({**call, "input": dict.fromkeys(required, "x")})
    return out


class Cache:
    """Prompt prefixes seen so far (up to their last cache_control marker)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def split(self, body: Json) -> tuple[int, bool]:
        """Words in the cached prefix, and whether it was in the cache already."""
        parts: list[Any] = [body.get("tools") or []]
        words = 0
        cached_words = 0
        key = ""
        system = body.get("system")
        blocks = _blocks(system) if system else []
        for m in body["messages"]:
            blocks += _blocks(m["content"])
        for block in blocks:
            parts.append(block)
            words += contract.words(_block_text(block))
            if "cache_control" in block:
                cached_words = words
                key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        if not cached_words:
            return 0, False
        hit = key in self.seen
        self.seen.add(key)
        return cached_words, hit


def answer(body: Json, cache: Cache) -> Answer:
    messages = body["messages"]
    last = _last_user(messages)
    user_text = " ".join(b["text"] for b in last if b.get("type") == "text")
    images = sum(1 for b in last if b.get("type") == "image")
    system = body.get("system")
    words = sum(contract.words(_block_text(b)) for b in _blocks(system)) if system else 0
    words += sum(contract.words(_block_text(b)) for m in messages for b in _blocks(m["content"]))
    cached, hit = cache.split(body)
    out = Answer(input_tokens=words - cached, cache_read=cached if hit else 0, cache_written=0 if hit else cached)
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        thought = f"Thinking about: {user_text}"
        out.blocks.append({"type": "thinking", "thinking": thought, "signature": _new_id("sig_")})
        out.thinking_tokens = contract.words(thought)
        out.output_tokens += out.thinking_tokens
    results = [b for b in last if b.get("type") == "tool_result"]
    choice = (body.get("tool_choice") or {}).get("type")
    if body.get("tools") and not results and choice != "none":
        calls = _tool_calls(body, user_text)
        out.blocks += calls
        out.output_tokens += sum(len(c["input"]) for c in calls)
        out.stop_reason = "tool_use"
        return out
    if results:
        text = "Tool said: " + " ".join(_block_text(b) for b in results)
    else:
        text = f"You said: {user_text}" + (f" [{images} image(s)]" if images else "")
    if (body.get("output_config") or {}).get("format"):
        text = json.dumps({"answer": text})
    hits = [(text.find(s), s) for s in body.get("stop_sequences") or () if s and s in text]
    if hits:
        at, seq = min(hits)
        text, out.stop_reason, out.stop_sequence = text[:at], "stop_sequence", seq
    words_out = list(re.finditer(r"\S+", text))
    if len(words_out) > body["max_tokens"]:
        text, out.stop_reason = text[: words_out[body["max_tokens"] - 1].end()], "max_tokens"
        out.stop_sequence = None
    if text:
        out.blocks.append({"type": "text", "text": text})
    out.output_tokens += contract.words(text)
    return out


def _usage(a: Answer, output_tokens: int) -> Json:
    out: Json = {
        "input_tokens": a.input_tokens,
        "cache_creation_input_tokens": a.cache_written,
        "cache_read_input_tokens": a.cache_read,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    if a.thinking_tokens and output_tokens == a.output_tokens:
        out["output_tokens_details"] = {"thinking_tokens": a.thinking_tokens}
    return out


def message(body: Json, a: Answer) -> Json:
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": a.blocks,
        "stop_reason": a.stop_reason,
        "stop_sequence": a.stop_sequence,
        "usage": _usage(a, a.output_tokens),
    }


# ------------------------------------------------------------------ streams


def _event(kind: str, data: Json) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _pieces(text: str) -> list[str]:
    """One piece per word, the spaces kept, so the pieces add up to the text."""
    words = text.split(" ")
    return [p for p in (w if i == 0 else " " + w for i, w in enumerate(words)) if p]


def _block_events(index: int, block: Json) -> list[bytes]:
    kind = block["type"]
    start = {"type": "content_block_start", "index": index}
    out: list[bytes] = []

    def delta(d: Json) -> None:
        out.append(_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}))

    if kind == "text":
        out.append(_event("content_block_start", {**start, "content_block": {"type": "text", "text": ""}}))
        for piece in _pieces(block["text"]):
            delta({"type": "text_delta", "text": piece})
    elif kind == "thinking":
        thinking = {"type": "thinking", "thinking": "", "signature": ""}
        out.append(_event("content_block_start", {**start, "content_block": thinking}))
        for piece in _pieces(block["thinking"]):
            delta({"type": "thinking_delta", "thinking": piece})
        delta({"type": "signature_delta", "signature": block["signature"]})
    else:
        tool: Json = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        out.append(_event("content_block_start", {**start, "content_block": tool}))
        args = json.dumps(block["input"], separators=(",", ":"))
        half = max(1, len(args) // 2)
        for piece in ("", args[:half], args[half:]):
            delta({"type": "input_json_delta", "partial_json": piece})
    out.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def stream_events(body: Json, a: Answer, *, fail: bool = False) -> list[bytes]:
    msg = {**message(body, a), "content": [], "stop_reason": None, "stop_sequence": None}
    msg["usage"] = _usage(a, 1)
    out = [_event("message_start", {"type": "message_start", "message": msg})]
    for i, block in enumerate(a.blocks):
        out += _block_events(i, block)
        if i == 0:
            # The API pings once its first block has started.
            out.insert(2, _event("ping", {"type": "ping"}))
    if fail:
        # Started (a first delta out), then failed: what the API sends when it is overloaded mid-answer.
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return [*out[:4], _event("error", error)]
    delta = {"type": "message_delta", "delta": {"stop_reason": a.stop_reason, "stop_sequence": a.stop_sequence}}
    delta["usage"] = {k: v for k, v in _usage(a, a.output_tokens).items() if k != "service_tier"}
    out.append(_event("message_delta", delta))
    out.append(_event("message_stop", {"type": "message_stop"}))
    return out


# ------------------------------------------------------------------ HTTP


def _error(status: int, kind: str, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": msg}, "request_id": _new_id("req_")}
    return web.json_response(body, status=status, headers=headers)


CACHE = web.AppKey("cache", Cache)


async def _body(request: web.Request) -> Any:
    # The body as it came (contract.Recorder has recorded it): JSON, or its text for _check to refuse.
    raw = await request.read()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def _auth_error(request: web.Request) -> web.Response | None:
    # The API takes its key as x-api-key or (what the newest SDKs send) a bearer token.
    bearer = request.headers.get("authorization", "").startswith("Bearer ")
    if not request.headers.get("x-api-key") and not bearer:
        return _error(401, "authentication_error", "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return _error(400, "invalid_request_error", "anthropic-version: header is required")
    return None


async def messages(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    refused = _auth_error(request)
    if refused is not None:
        return refused
    model = body.get("model") if isinstance(body, dict) else None
    if model in ERRORS:
        status, kind, msg = ERRORS[model]
        return _error(status, kind, msg, {"retry-after": contract.RETRY_AFTER} if status == 429 else None)
    try:
        _check(body)
    except Invalid as exc:
        return _error(400, "invalid_request_error", str(exc))
    a = answer(body, request.app[CACHE])
    headers = {"request-id": _new_id("req_")}
    if not body.get("stream"):
        return web.json_response(message(body, a), headers=headers)
    resp = web.StreamResponse(headers={**headers, "content-type": "text/event-stream; charset=utf-8"})
    resp.headers["cache-control"] = "no-cache"
    await resp.prepare(request)
    for event in stream_events(body, a, fail=model == "stream-error"):
        await resp.write(event)
    await resp.write_eof()
    return resp


def _model(name: str) -> Json:
    return {
        "type": "model",
        "id": name,
        "display_name": name.replace("-", " ").title(),
        "created_at": "2025-01-01T00:00:00Z",
        "capabilities": None,
        "max_input_tokens": 200000,
        "max_tokens": 64000,
        "lifecycle": "active",
    }


async def list_models(request: web.Request) -> web.Response:
    refused = _auth_error(request)
    if refused is not None:
        return refused
    data = [_model(m) for m in MODELS]
    return web.json_response({"data": data, "first_id": MODELS[0], "last_id": MODELS[-1], "has_more": False})


async def get_model(request: web.Request) -> web.Response:
    refused = _auth_error(request)
    if refused is not None:
        return refused
    name = request.match_info["name"]
    if name not in MODELS:
        return _error(404, "not_found_error", f"model: {name}")
    return web.json_response(_model(name))


def make_app() -> web.Application:
    cache = Cache()
    # A reset forgets the cached prefixes too: a test after it sees a cold cache.
    app = contract.app(
        [
            web.post("/v1/messages", messages),
            web.get("/v1/models", list_models),
            web.get("/v1/models/{name}", get_model),
        ],
        on_reset=cache.seen.clear,
    )
    app[CACHE] = cache
    return app


def run(host: str, port: int) -> None:
    contract.serve(make_app(), host, port)
