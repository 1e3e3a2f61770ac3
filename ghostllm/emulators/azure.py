"""A loopback Azure OpenAI resource: `/openai/deployments/{deployment}/chat/completions`,
`/completions` and `/embeddings`, and `/openai/models`, each needing the `api-version`
query (without it Azure answers 404 "Resource not found") and a key in `api-key` (or an
Entra ID bearer token), else 401.

Answers are OpenAI's wire format with Azure's additions: content filter results on the
prompt and on each choice, and a stream opened by a chunk with no choices, empty id and
object and the prompt filter results only. Usage comes in streams when
stream_options.include_usage asks (a last chunk with no choices). The deployment name is
the model the request names; answers carry the underlying model's name.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import orjson
from aiohttp import web

from ghostllm.emulators import contract

MODELS = {
    "azure-small": "gpt-4o-mini-2024-07-18",
    "azure-large": "gpt-4o-2024-08-06",
    "azure-embed": "text-embedding-3-small",
}
EMBED_DIMENSIONS = 8
FINISH = {"stop": "stop", "stop_sequence": "stop", "length": "length", "tool_calls": "tool_calls"}
_SAFE = {"filtered": False, "severity": "safe"}
FILTERS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
PROMPT_FILTERS = [{"prompt_index": 0, "content_filter_results": FILTERS}]
ERRORS: dict[int, dict[str, Any]] = {
    400: {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
        "Please modify your prompt and retry.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {**FILTERS, "violence": {"filtered": True, "severity": "high"}},
        },
    },
    401: {
        "code": "401",
        "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
        "key for an active subscription and use a correct regional API endpoint for your resource.",
    },
    404: {
        "code": "DeploymentNotFound",
        "message": "The API deployment for this resource does not exist. If you created the deployment within the "
        "last 5 minutes, please wait a moment and try again.",
    },
    429: {
        "code": "429",
        "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have "
        "exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 7 seconds.",
    },
    500: {
        "code": "InternalServerError",
        "message": "The server had an error processing your request. Sorry about that! You can retry your request.",
    },
    503: {
        "code": "ServiceUnavailable",
        "message": "The service is temporarily unable to process your request. Please try again later.",
    },
}
STREAM_ERROR = {"message": "The server had an error while processing your request.", "type": "server_error"}


class Rejected(Exception):
    def __init__(self, status: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(error.get("message"))
        self.status = status
        self.error = error
        self.headers = headers or {}


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def _reject(err: Rejected) -> web.Response:
    return _json({"error": err.error}, err.status, err.headers)


def _check_access(request: web.Request) -> None:
    if not request.query.get("api-version"):
        raise Rejected(404, {"code": "404", "message": "Resource not found"})
    bearer = request.headers.get("authorization", "").startswith("Bearer ")
    if not request.headers.get("api-key") and not bearer:
        raise Rejected(401, ERRORS[401])


async def _body(request: web.Request) -> tuple[str, dict[str, Any]]:
    _check_access(request)
    deployment = request.match_info["deployment"]
    status = contract.SCENARIOS.get(deployment)
    if status is not None:
        headers = {"retry-after": contract.RETRY_AFTER, "retry-after-ms": "7000"} if status == 429 else None
        raise Rejected(status, ERRORS[status], headers)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise Rejected(400, _invalid("We could not parse the JSON body of your request.", None)) from None
    if not isinstance(body, dict):
        raise Rejected(400, _invalid("The request body must be a JSON object.", None))
    return deployment, body


def _invalid(message: str, param: str | None) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "param": param, "code": None}


def _text(content: Any) -> tuple[str, int]:
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise Rejected(400, _invalid("Invalid type for 'content'.", "messages"))
    texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    images = sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
    return "\n".join(texts), images


def _stop(stop: Any) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)]


def _chat_ask(body: dict[str, Any]) -> contract.Ask:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Rejected(400, _invalid("'messages' is a required property", "messages"))
    ask = contract.Ask()
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise Rejected(400, _invalid("Each message needs a role.", "messages"))
        text, images = _text(m.get("content"))
        for call in m.get("tool_calls") or ():
            if not isinstance(((call or {}).get("function") or {}).get("arguments"), str):
                raise Rejected(400, _invalid("Invalid type for tool call arguments: expected a string.", "messages"))
        ask.texts.append(text)
        ask.last_role, ask.last_text, ask.images = m["role"], text, images
    for tool in body.get("tools") or ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise Rejected(400, _invalid("Missing required parameter: 'tools[0].function.name'.", "tools"))
        ask.tools.append((fn["name"], fn.get("parameters")))
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        ask.tool_choice = str((choice.get("function") or {}).get("name"))
    elif isinstance(choice, str):
        ask.tool_choice = choice
    ask.parallel = body.get("parallel_tool_calls") is not False
    fmt = body.get("response_format")
    ask.json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
    ask.stop = _stop(body.get("stop"))
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    ask.max_tokens = limit if isinstance(limit, int) else None
    return ask


def _usage(a: contract.Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "total_tokens": a.prompt_tokens + a.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _calls(a: contract.Answer) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{secrets.token_urlsafe(18).replace('-', 'a').replace('_', 'b')[:24]}",
            "type": "function",
            "function": {"name": c.name, "arguments": orjson.dumps(c.arguments).decode()},
        }
        for c in a.calls
    ]


class _Sse:
    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8"})

    async def start(self) -> None:
        await self.resp.prepare(self.request)

    async def send(self, data: Any) -> None:
        await self.resp.write(b"data: " + orjson.dumps(data) + b"\n\n")

    async def end(self, done: bool = True) -> web.StreamResponse:
        if done:
            await self.resp.write(b"data: [DONE]\n\n")
        await self.resp.write_eof()
        return self.resp


def _wants_usage(body: dict[str, Any]) -> bool:
    so = body.get("stream_options")
    return isinstance(so, dict) and so.get("include_usage") is True


async def chat(request: web.Request) -> web.StreamResponse:
    try:
        deployment, body = await _body(request)
        ask = _chat_ask(body)
    except Rejected as err:
        return _reject(err)
    model = MODELS.get(deployment, deployment)
    a = contract.answer(ask)
    cid, created = f"chatcmpl-{secrets.token_hex(14)}", int(time.time())
    calls = _calls(a)
    finish = FINISH[a.finish]
    if body.get("stream") is not True:
        if deployment == contract.STREAM_ERROR:
            return _reject(Rejected(500, ERRORS[500]))
        message: dict[str, Any] = {"role": "assistant", "content": a.text if not calls else None, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        return _json(
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_azure_emulator",
                "prompt_filter_results": PROMPT_FILTERS,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": finish,
                        "logprobs": None,
                        "content_filter_results": {} if calls else FILTERS,
                    }
                ],
                "usage": _usage(a),
            }
        )
    include_usage = _wants_usage(body)
    sse = _Sse(request)
    await sse.start()
    await sse.send(
        {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": PROMPT_FILTERS}
    )

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, filters: Any = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_azure_emulator",
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": finish_reason,
                    "logprobs": None,
                    "content_filter_results": filters if filters is not None else {},
                }
            ],
        }
        if include_usage:
            out["usage"] = None
        return out

    # As OpenAI opens a stream: content "" before text, null before tool calls.
    await sse.send(chunk({"role": "assistant", "content": None if calls else "", "refusal": None}))
    for n, piece in enumerate(contract.pieces(a.text)):
        if deployment == contract.STREAM_ERROR and n == 2:
            await sse.send({"error": STREAM_ERROR})
            return await sse.end(done=False)
        await sse.send(chunk({"content": piece}, filters=FILTERS))
    for i, call in enumerate(calls):
        fn = call["function"]
        head = {"index": i, "id": call["id"], "type": "function", "function": {"name": fn["name"], "arguments": ""}}
        await sse.send(chunk({"tool_calls": [head]}))
        for part in contract.fragments(fn["arguments"]):
            await sse.send(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
    if deployment == contract.STREAM_ERROR:
        await sse.send({"error": STREAM_ERROR})
        return await sse.end(done=False)
    await sse.send(chunk({}, finish))
    if include_usage:
        await sse.send(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_azure_emulator",
                "choices": [],
                "usage": _usage(a),
            }
        )
    return await sse.end()


async def completions(request: web.Request) -> web.StreamResponse:
    try:
        deployment, body = await _body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise Rejected(400, _invalid("'prompt' must be a string.", "prompt"))
        limit = body.get("max_tokens")
        ask = contract.Ask(
            texts=[prompt],
            last_text=prompt,
            stop=_stop(body.get("stop")),
            max_tokens=limit if isinstance(limit, int) else None,
        )
    except Rejected as err:
        return _reject(err)
    model = MODELS.get(deployment, deployment)
    a = contract.answer(ask)
    cid, created = f"cmpl-{secrets.token_hex(14)}", int(time.time())

    def choice(text: str, finish: str | None) -> dict[str, Any]:
        return {"text": text, "index": 0, "finish_reason": finish, "logprobs": None, "content_filter_results": FILTERS}

    base = {"id": cid, "object": "text_completion", "created": created, "model": model}
    if body.get("stream") is not True:
        return _json({**base, "choices": [choice(a.text, FINISH[a.finish])], "usage": _usage(a)})
    sse = _Sse(request)
    await sse.start()
    for piece in contract.pieces(a.text):
        await sse.send({**base, "choices": [choice(piece, None)]})
    await sse.send({**base, "choices": [choice("", FINISH[a.finish])]})
    if _wants_usage(body):
        await sse.send({**base, "choices": [], "usage": _usage(a)})
    return await sse.end()


async def embeddings(request: web.Request) -> web.Response:
    try:
        deployment, body = await _body(request)
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise Rejected(400, _invalid("'input' is a required property", "input"))
        dims = body.get("dimensions") or EMBED_DIMENSIONS
    except Rejected as err:
        return _reject(err)
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for i, item in enumerate(inputs):
        vector = contract.embedding(item if isinstance(item, str) else str(item), dims)
        value: Any = base64.b64encode(contract.packed(vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(contract.words(x) if isinstance(x, str) else len(x) for x in inputs)
    return _json(
        {
            "object": "list",
            "data": data,
            "model": MODELS.get(deployment, deployment),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _model(name: str) -> dict[str, Any]:
    embed = "embed" in name
    return {
        "id": name,
        "object": "model",
        "status": "succeeded",
        "created_at": 1721260800,
        "updated_at": 1721260800,
        "capabilities": {
            "chat_completion": not embed,
            "completion": not embed,
            "embeddings": embed,
            "fine_tune": False,
            "inference": True,
            "scale_types": ["standard"],
        },
        "lifecycle_status": "generally-available",
        "deprecation": {"inference": 1792800000},
    }


async def models(request: web.Request) -> web.Response:
    try:
        _check_access(request)
    except Rejected as err:
        return _reject(err)
    return _json({"object": "list", "data": [_model(m) for m in MODELS]})


def make_app() -> web.Application:
    prefix = "/openai/deployments/{deployment}"
    return contract.app(
        [
            web.post(f"{prefix}/chat/completions", chat),
            web.post(f"{prefix}/completions", completions),
            web.post(f"{prefix}/embeddings", embeddings),
            web.get("/openai/models", models),
        ]
    )


def run(host: str, port: int) -> None:
    contract.serve(make_app(), host, port)
