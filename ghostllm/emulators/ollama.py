"""A loopback Ollama: `/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, `/api/version`.

Follows Ollama's documented API (docs/api.md): streaming unless `stream` is false, as
NDJSON (`application/x-ndjson`), one object per line, the last `done: true` with
done_reason and the counts; errors as `{"error": "..."}`, and mid-stream as such a
line. Ollama parses tool calls whole, so a streamed call arrives in one line (with its
arguments as an object), not in fragments. Stop sequences end with done_reason "stop"
(Ollama does not say which matched). `think: true` adds thinking text before the
answer (counted in eval_count, as Ollama counts it). It checks what real Ollama
rejects: tool call arguments that are not objects, images that are not raw base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from ghostllm.emulators import contract

MODELS = ("ollama-small", "ollama-large", "ollama-embed")
EMBED_DIMENSIONS = 8
THINKING = "Let me think about that."
ERRORS = {
    400: "invalid request: emulated error-400",
    401: "unauthorized",
    404: 'model "error-404" not found, try pulling it first',
    429: "you have reached your hourly usage limit, please retry later",
    500: "llama runner process has terminated: exit status 2",
    503: "server busy, please try again.  maximum pending requests exceeded",
}
STREAM_ERROR = "an error was encountered while running the model: unexpected EOF"


class Rejected(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _error(err: Rejected) -> web.Response:
    return web.json_response({"error": err.message}, status=err.status, headers=err.headers, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise Rejected(400, f"invalid character in request body: {exc}") from None
    if not isinstance(body, dict):
        raise Rejected(400, "json: cannot unmarshal into Go value of type api.ChatRequest")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Rejected(400, "model is required")
    status = contract.SCENARIOS.get(model)
    if status is not None:
        headers = {"retry-after": contract.RETRY_AFTER} if status == 429 else None
        raise Rejected(status, ERRORS[status], headers)
    return body


def _options(body: dict[str, Any], ask: contract.Ask) -> None:
    options = body.get("options")
    if options is None:
        return
    if not isinstance(options, dict):
        raise Rejected(400, "json: cannot unmarshal options into Go value of type map[string]interface {}")
    stop = options.get("stop")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise Rejected(400, 'option "stop" must be of an array of strings')
        ask.stop = stop
    predict = options.get("num_predict")
    if isinstance(predict, int) and predict >= 0:
        ask.max_tokens = predict


def _format(body: dict[str, Any], ask: contract.Ask) -> None:
    fmt = body.get("format")
    if fmt in (None, ""):
        return
    if fmt != "json" and not isinstance(fmt, dict):
        raise Rejected(400, f"invalid format: {str(fmt)[:50]!r}")
    ask.json_mode = True


def _images(images: Any) -> int:
    if images is None:
        return 0
    if not isinstance(images, list):
        raise Rejected(400, "json: cannot unmarshal images into Go struct field Message.messages.images")
    for image in images:
        try:
            base64.b64decode(image, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise Rejected(400, "illegal base64 data at input byte 4") from None
    return len(images)


def _check_tool_calls(calls: Any) -> None:
    if calls is None:
        return
    if not isinstance(calls, list):
        raise Rejected(400, "json: cannot unmarshal tool_calls into Go struct field Message.messages.tool_calls")
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise Rejected(400, "tool call needs function.name")
        if not isinstance(fn.get("arguments", {}), dict):
            raise Rejected(
                400,
                "json: cannot unmarshal string into Go struct field ToolCallFunction.messages.tool_calls.function"
                ".arguments of type api.ToolCallFunctionArguments",
            )


def _chat_ask(body: dict[str, Any]) -> contract.Ask:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise Rejected(400, "messages must be a list")
    ask = contract.Ask()
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise Rejected(400, "json: cannot unmarshal message: role is required")
        content = m.get("content") or ""
        if not isinstance(content, str):
            raise Rejected(
                400, "json: cannot unmarshal array into Go struct field Message.messages.content of type string"
            )
        _check_tool_calls(m.get("tool_calls"))
        images = _images(m.get("images"))
        ask.texts.append(content)
        ask.last_role, ask.last_text, ask.images = m["role"], content, images
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise Rejected(400, "json: cannot unmarshal tools into Go struct field ChatRequest.tools")
        for tool in tools:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise Rejected(400, "a tool needs function.name")
            ask.tools.append((fn["name"], fn.get("parameters")))
    _options(body, ask)
    _format(body, ask)
    return ask


def _metrics(a: contract.Answer, thinking: bool) -> dict[str, Any]:
    evals = a.completion_tokens + (contract.words(THINKING) if thinking else 0)
    return {
        "total_duration": 120_000_000,
        "load_duration": 2_000_000,
        "prompt_eval_count": a.prompt_tokens,
        "prompt_eval_duration": 20_000_000,
        "eval_count": evals,
        "eval_duration": 90_000_000,
    }


def _done_reason(a: contract.Answer) -> str:
    return "length" if a.finish == "length" else "stop"


def _calls(a: contract.Answer) -> list[dict[str, Any]]:
    return [{"function": {"name": c.name, "arguments": c.arguments}} for c in a.calls]


async def _stream(request: web.Request, lines: list[dict[str, Any]], error: str | None = None) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "application/x-ndjson"})
    await resp.prepare(request)
    for line in lines:
        await resp.write(orjson.dumps(line) + b"\n")
    if error is not None:
        await resp.write(orjson.dumps({"error": error}) + b"\n")
    await resp.write_eof()
    return resp


async def chat(request: web.Request) -> web.StreamResponse:
    try:
        body = await _body(request)
        ask = _chat_ask(body)
    except Rejected as err:
        return _error(err)
    model = body["model"]
    stream = body.get("stream", True) is not False
    if model == contract.STREAM_ERROR and not stream:
        return _error(Rejected(500, STREAM_ERROR))
    a = contract.answer(ask)
    thinking = bool(body.get("think"))
    if not stream:
        message: dict[str, Any] = {"role": "assistant", "content": a.text}
        if thinking:
            message["thinking"] = THINKING
        if a.calls:
            message["tool_calls"] = _calls(a)
        return web.json_response(
            {
                "model": model,
                "created_at": _now(),
                "message": message,
                "done_reason": _done_reason(a),
                "done": True,
                **_metrics(a, thinking),
            },
            dumps=_dumps,
        )
    lines: list[dict[str, Any]] = []

    def line(**msg: Any) -> None:
        lines.append(
            {
                "model": model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": "", **msg},
                "done": False,
            }
        )

    if thinking:
        for piece in contract.pieces(THINKING):
            line(thinking=piece)
    for piece in contract.pieces(a.text):
        line(content=piece)
    for call in _calls(a):
        line(tool_calls=[call])
    if model == contract.STREAM_ERROR:
        return await _stream(request, lines[:2], STREAM_ERROR)
    lines.append(
        {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done_reason": _done_reason(a),
            "done": True,
            **_metrics(a, thinking),
        }
    )
    return await _stream(request, lines)


async def generate(request: web.Request) -> web.StreamResponse:
    try:
        body = await _body(request)
        prompt = body.get("prompt") or ""
        if not isinstance(prompt, str):
            raise Rejected(
                400, "json: cannot unmarshal prompt into Go struct field GenerateRequest.prompt of type string"
            )
        system = body.get("system") or ""
        ask = contract.Ask(texts=[system, prompt], last_text=prompt, images=_images(body.get("images")))
        _options(body, ask)
        _format(body, ask)
    except Rejected as err:
        return _error(err)
    model = body["model"]
    stream = body.get("stream", True) is not False
    a = contract.answer(ask)
    final = {
        "model": model,
        "created_at": _now(),
        "response": "",
        "done": True,
        "done_reason": _done_reason(a),
        "context": [1, 2, 3],
        **_metrics(a, False),
    }
    if not stream:
        return web.json_response({**final, "response": a.text}, dumps=_dumps)
    lines: list[dict[str, Any]] = [
        {"model": model, "created_at": _now(), "response": piece, "done": False} for piece in contract.pieces(a.text)
    ]
    if model == contract.STREAM_ERROR:
        return await _stream(request, lines[:2], STREAM_ERROR)
    return await _stream(request, [*lines, final])


async def embed(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
            raise Rejected(400, "invalid input type")
        dims = body.get("dimensions") or EMBED_DIMENSIONS
        if not isinstance(dims, int) or dims < 1:
            raise Rejected(400, "dimensions must be a positive integer")
    except Rejected as err:
        return _error(err)
    return web.json_response(
        {
            "model": body["model"],
            "embeddings": [contract.embedding(text, dims) for text in inputs],
            "total_duration": 14_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": sum(contract.words(t) for t in inputs),
        },
        dumps=_dumps,
    )


def _model(name: str) -> dict[str, Any]:
    embed_model = "embed" in name
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-05-04T17:37:44.706015396-07:00",
        "size": 2019393189,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "bert" if embed_model else "llama",
            "families": ["bert" if embed_model else "llama"],
            "parameter_size": "137M" if embed_model else "3.2B",
            "quantization_level": "F16" if embed_model else "Q4_K_M",
        },
    }


async def tags(_: web.Request) -> web.Response:
    return web.json_response({"models": [_model(m) for m in MODELS]}, dumps=_dumps)


async def version(_: web.Request) -> web.Response:
    return web.json_response({"version": "0.12.6"})


async def root(_: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


def make_app() -> web.Application:
    return contract.app(
        [
            web.get("/", root),
            web.get("/api/version", version),
            web.get("/api/tags", tags),
            web.post("/api/chat", chat),
            web.post("/api/generate", generate),
            web.post("/api/embed", embed),
        ]
    )


def run(host: str, port: int) -> None:
    contract.serve(make_app(), host, port)
