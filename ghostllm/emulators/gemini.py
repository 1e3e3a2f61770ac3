"""A loopback emulator of the Gemini API, v1beta (the contract in ghostllm.emulators).

Serves `models/{model}:generateContent`, `:streamGenerateContent` (`alt=sse`: `data:`
events separated by CRLF blank lines, as the real API frames them; without it, one
JSON array), `:countTokens`, `:embedContent`, `:batchEmbedContents`, and the model
listing (`GET /v1beta/models`, paged, and `/v1beta/models/{model}`), with Google's
error body (`{"error": {"code", "message", "status", "details"}}`).

It checks requests the way the real API does where an adapter could get them wrong:
a key in `x-goog-api-key` (or `?key=`; none is a 403, a key starting with "bad" the
400 API_KEY_INVALID Gemini gives a wrong key), only known fields (camelCase or
snake_case, as proto JSON takes both), user/model roles, one data field per part,
function responses naming a function, stop sequences at most 5. Gemini has no call
ids and sends each function call whole (never argument fragments), one event each.

`gemini-large` is a thinking model, like Gemini 3: it reports thoughtsTokenCount,
sends a thought summary when thinkingConfig.includeThoughts is set, signs its first
function call of a turn (`thoughtSignature`), and refuses a request whose current
turn carries one of its calls without that signature. Errors after a stream began
come as bare JSON lines, not an event, as Google sends them.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from typing import Any

import orjson
from aiohttp import web

from ghostllm.emulators import contract

Json = dict[str, Any]

MODELS = ("gemini-small", "gemini-large", "gemini-embedding")
THINKING_MODELS = frozenset(("gemini-large",))
EMBED_DIMENSIONS = 8
THINKING = "Let me think about that."
SIGNATURE_PREFIX = b"emulated-thought:"
PAGE_SIZE = 50
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip
MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential.",
    429: "You exceeded your current quota, please check your plan and billing details.",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}
# Top-level request fields, and generationConfig's (each also in snake_case).
REQUEST_FIELDS = frozenset(
    ("contents", "tools", "toolConfig", "safetySettings", "systemInstruction", "generationConfig", "cachedContent",
     "model", "labels")
)  # fmt: skip
CONFIG_FIELDS = frozenset(
    ("stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
     "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
     "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
     "thinkingConfig", "mediaResolution")
)  # fmt: skip
DATA_FIELDS = frozenset(
    ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult")
)
PART_FIELDS = DATA_FIELDS | {"thought", "thoughtSignature", "videoMetadata", "partMetadata", "mediaResolution"}
FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}$")
MODES = frozenset(("AUTO", "ANY", "NONE", "VALIDATED"))


class Rejected(Exception):
    def __init__(self, status: int, message: str, *details: Json, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = list(details)
        self.headers = headers or {}

    def body(self) -> Json:
        err: Json = {"code": self.status, "message": self.message, "status": STATUS.get(self.status, "UNKNOWN")}
        if self.details:
            err["details"] = self.details
        return {"error": err}


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _error(err: Rejected) -> web.Response:
    headers = {"content-type": "application/json; charset=UTF-8", **err.headers}
    return web.Response(body=orjson.dumps(err.body(), option=orjson.OPT_INDENT_2), status=err.status, headers=headers)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _fields(obj: Any, known: frozenset[str], where: str) -> Json:
    """`obj` with its keys in camelCase; an unknown key is refused as the real API does."""
    if not isinstance(obj, dict):
        raise Rejected(400, f"Invalid value at '{where}': expected an object")
    out = {}
    for key, value in obj.items():
        name = _camel(key)
        if name not in known:
            raise Rejected(
                400, f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field."
            )
        out[name] = value
    return out


def _check_key(request: web.Request) -> None:
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    if not key:
        raise Rejected(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key "
            "or other form of API consumer identity to call this API.",
        )
    if key.startswith("bad"):
        raise Rejected(
            400,
            "API key not valid. Please pass a valid API key.",
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
             "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
        )  # fmt: skip


def _scenario(model: str, method: str) -> None:
    status = contract.SCENARIOS.get(model)
    if status is None:
        return
    if status == 404:
        raise Rejected(
            404,
            f"models/{model} is not found for API version v1beta, or is not supported for {method}. Call "
            "ListModels to see the list of available models and their supported methods.",
        )
    if status == 429:
        raise Rejected(
            429,
            MESSAGES[429],
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                             "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{contract.RETRY_AFTER}s"},
            headers={"retry-after": contract.RETRY_AFTER},
        )  # fmt: skip
    raise Rejected(status, MESSAGES[status])


async def _begin(request: web.Request, model: str, method: str) -> Json:
    """The JSON body, once key, scenario and model are checked."""
    _check_key(request)
    _scenario(model, method)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise Rejected(400, "Invalid JSON payload received. Unexpected token.") from None
    if not isinstance(body, dict):
        raise Rejected(400, "Invalid JSON payload received. Expected an object.")
    if ("embed" in model) != (method in ("embedContent", "batchEmbedContents")):
        raise Rejected(
            404,
            f"models/{model} is not found for API version v1beta, or is not supported for {method}. Call "
            "ListModels to see the list of available models and their supported methods.",
        )
    return body


# ------------------------------------------------------------------ requests


def _base64(data: Any, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True) if isinstance(data, str) else b""
    except (binascii.Error, ValueError):
        raise Rejected(400, f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed") from None


def _part(raw: Any, where: str) -> Json:
    part = _fields(raw, frozenset(PART_FIELDS), where)
    data = [k for k in part if k in DATA_FIELDS]
    if len(data) != 1:
        raise Rejected(400, f"* {where}: a part must hold exactly one data field (text, inlineData, ...)")
    if "inlineData" in part:
        blob = _fields(part["inlineData"], frozenset(("mimeType", "data", "displayName")), f"{where}.inline_data")
        if not blob.get("mimeType"):
            raise Rejected(400, f"* {where}.inline_data.mime_type: missing mime type")
        _base64(blob.get("data"), f"{where}.inline_data.data")
        part["inlineData"] = blob
    if "fileData" in part:
        ref = _fields(part["fileData"], frozenset(("mimeType", "fileUri", "displayName")), f"{where}.file_data")
        if not ref.get("fileUri"):
            raise Rejected(400, f"* {where}.file_data.file_uri: missing file uri")
        part["fileData"] = ref
    if "functionCall" in part:
        fn = _fields(part["functionCall"], frozenset(("name", "args", "id")), f"{where}.function_call")
        if not isinstance(fn.get("name"), str) or not isinstance(fn.get("args", {}), dict):
            raise Rejected(400, f"* {where}.function_call: needs a name and args as an object")
        part["functionCall"] = fn
    if "functionResponse" in part:
        fr = _fields(part["functionResponse"], frozenset(("name", "response", "id", "parts", "willContinue",
                                                          "scheduling")), f"{where}.function_response")  # fmt: skip
        if not isinstance(fr.get("name"), str) or not fr["name"]:
            raise Rejected(400, f"* {where}.function_response.name: Name cannot be empty.")
        if not isinstance(fr.get("response"), dict):
            raise Rejected(400, f"* {where}.function_response.response: must be an object")
        part["functionResponse"] = fr
    if "text" in part and not isinstance(part["text"], str):
        raise Rejected(400, f"Invalid value at '{where}.text' (TYPE_STRING)")
    return part


def _content(raw: Any, where: str, *, system: bool = False) -> Json:
    content = _fields(raw, frozenset(("role", "parts")), where)
    role = content.get("role", "user")
    if not system and role not in ("user", "model", "function"):
        raise Rejected(400, f"* {where}.role: Please use a valid role: user, model.")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise Rejected(400, f"* {where}.parts: contents.parts must not be empty.")
    return {"role": role, "parts": [_part(p, f"{where}.parts[{i}]") for i, p in enumerate(parts)]}


def _signed(signature: Any, name: str) -> bool:
    try:
        return base64.b64decode(str(signature), validate=True) == SIGNATURE_PREFIX + name.encode()
    except (binascii.Error, ValueError):
        return False


def _check_signatures(contents: list[Json]) -> None:
    """A thinking model's calls in the current turn (since the last user text) must carry
    the signature it gave them."""
    start = 0
    for i, c in enumerate(contents):
        if c["role"] == "user" and any("text" in p for p in c["parts"]):
            start = i
    for pos, c in enumerate(contents[start:], start):
        calls = [(j, p) for j, p in enumerate(c["parts"]) if "functionCall" in p]
        if c["role"] != "model" or not calls:
            continue
        j, first = calls[0]
        name = first["functionCall"]["name"]
        if "thoughtSignature" not in first:
            raise Rejected(
                400,
                "Function call is missing a thought_signature in functionCall parts. This is required for tools "
                f"to work correctly. Additional data, function call `default_api:{name}` , position {pos + 1}. "
                "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
            )
        if not _signed(first["thoughtSignature"], name):
            raise Rejected(400, f"* contents[{pos}].parts[{j}].thought_signature: Corrupted thought signature.")


def _tools(raw: Any, ask: contract.Ask) -> None:
    if raw is None:
        return
    if not isinstance(raw, list):
        raise Rejected(400, "Invalid value at 'tools': expected a list")
    for i, tool in enumerate(raw):
        t = _fields(tool, frozenset(("functionDeclarations", "googleSearch", "codeExecution", "urlContext")),
                    f"tools[{i}]")  # fmt: skip
        for k, decl in enumerate(t.get("functionDeclarations") or []):
            where = f"tools[{i}].function_declarations[{k}]"
            d = _fields(decl, frozenset(("name", "description", "parameters", "parametersJsonSchema", "response",
                                         "responseJsonSchema", "behavior")), where)  # fmt: skip
            if not isinstance(d.get("name"), str) or not FUNCTION_NAME.match(d["name"]):
                raise Rejected(400, f"* GenerateContentRequest.{where}.name: Invalid function name.")
            if "parameters" in d and "parametersJsonSchema" in d:
                raise Rejected(400, f"* {where}: parameters and parameters_json_schema are mutually exclusive")
            ask.tools.append((d["name"], d.get("parametersJsonSchema", d.get("parameters"))))


def _tool_config(raw: Any, ask: contract.Ask) -> None:
    if raw is None:
        return
    config = _fields(raw, frozenset(("functionCallingConfig", "retrievalConfig")), "tool_config")
    fcc = _fields(config.get("functionCallingConfig", {}), frozenset(("mode", "allowedFunctionNames")),
                  "tool_config.function_calling_config")  # fmt: skip
    mode = fcc.get("mode", "AUTO")
    if mode not in MODES:
        raise Rejected(400, f"Invalid value at 'tool_config.function_calling_config.mode' ({mode})")
    allowed = fcc.get("allowedFunctionNames")
    if allowed and mode != "ANY":
        raise Rejected(400, "* allowed_function_names may be set only when the mode is ANY.")
    if mode == "NONE":
        ask.tool_choice = "none"
    elif mode == "ANY":
        ask.tool_choice = allowed[0] if isinstance(allowed, list) and len(allowed) == 1 else "required"


def _config(raw: Any, ask: contract.Ask) -> Json:
    config = _fields(raw if raw is not None else {}, CONFIG_FIELDS, "generation_config")
    stop = config.get("stopSequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 5:
            raise Rejected(400, "* GenerateContentRequest.generation_config.stop_sequences: at most 5 strings")
        ask.stop = stop
    limit = config.get("maxOutputTokens")
    if isinstance(limit, int):
        ask.max_tokens = limit
    mime = config.get("responseMimeType")
    if ("responseSchema" in config or "responseJsonSchema" in config) and mime != "application/json":
        raise Rejected(400, "* GenerateContentRequest.generation_config.response_mime_type: must be application/json "
                            "when a response schema is set")  # fmt: skip
    ask.json_mode = mime == "application/json"
    n = config.get("candidateCount", 1)
    if not isinstance(n, int) or not 1 <= n <= 8:
        raise Rejected(400, "* GenerateContentRequest.generation_config.candidate_count: must be 1 to 8")
    if "thinkingConfig" in config:
        config["thinkingConfig"] = _fields(config["thinkingConfig"],
                                           frozenset(("thinkingBudget", "includeThoughts", "thinkingLevel")),
                                           "generation_config.thinking_config")  # fmt: skip
    return config


def _ask(body: Json, model: str) -> tuple[contract.Ask, Json]:
    body = _fields(body, REQUEST_FIELDS, "")
    raw_contents = body.get("contents")
    if not isinstance(raw_contents, list) or not raw_contents:
        raise Rejected(400, "* GenerateContentRequest.contents: contents is not specified")
    contents = [_content(c, f"contents[{i}]") for i, c in enumerate(raw_contents)]
    ask = contract.Ask()
    if body.get("systemInstruction") is not None:
        system = _content(body["systemInstruction"], "system_instruction", system=True)
        ask.texts += [p["text"] for p in system["parts"] if "text" in p]
    for c in contents:
        ask.texts += [p["text"] for p in c["parts"] if "text" in p]
    last = contents[-1]["parts"]
    if "functionResponse" in last[-1]:
        ask.last_role = "tool"
        results = [p["functionResponse"]["response"] for p in last if "functionResponse" in p]
        ask.last_text = " ".join(_result_text(r) for r in results)
    else:
        # A user's words after tool results in the same turn are what the last turn says.
        tail = [p for p in last[_after_results(last) :] if "functionResponse" not in p]
        ask.last_text = " ".join(p["text"] for p in tail if "text" in p)
        ask.images = sum(1 for p in tail if _is_image(p))
    _tools(body.get("tools"), ask)
    _tool_config(body.get("toolConfig"), ask)
    config = _config(body.get("generationConfig"), ask)
    if model in THINKING_MODELS:
        _check_signatures(contents)
    return ask, config


def _after_results(parts: list[Json]) -> int:
    return max((i + 1 for i, p in enumerate(parts) if "functionResponse" in p), default=0)


def _result_text(response: Json) -> str:
    # {"output": ...} (or the SDK's {"result": ...}) holds the result; any other object is it.
    value = next(iter(response.values())) if response.keys() in ({"output"}, {"result"}) else response
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _is_image(part: Json) -> bool:
    media = part.get("inlineData") or part.get("fileData")
    return isinstance(media, dict) and str(media.get("mimeType", "image/")).startswith("image/")


# ------------------------------------------------------------------ answers


def _thinks(model: str, config: Json) -> bool:
    thinking = config.get("thinkingConfig") or {}
    return model in THINKING_MODELS and thinking.get("thinkingBudget") != 0


def _call_parts(a: contract.Answer, signed: bool) -> list[Json]:
    parts = []
    for i, call in enumerate(a.calls):
        part: Json = {"functionCall": {"name": call.name, "args": call.arguments}}
        if signed and i == 0:
            part["thoughtSignature"] = base64.b64encode(SIGNATURE_PREFIX + call.name.encode()).decode()
        parts.append(part)
    return parts


def _usage(a: contract.Answer, thinks: bool, n: int, *, final: bool = True) -> Json:
    usage: Json = {"promptTokenCount": a.prompt_tokens}
    total = a.prompt_tokens
    if final:
        usage["candidatesTokenCount"] = a.completion_tokens * n
        total += a.completion_tokens * n
    if thinks:
        usage["thoughtsTokenCount"] = contract.words(THINKING)
        total += contract.words(THINKING)
    usage["totalTokenCount"] = total
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": a.prompt_tokens}]
    return usage


def _finish(a: contract.Answer) -> str:
    return "MAX_TOKENS" if a.finish == "length" else "STOP"


def _response(model: str, candidates: list[Json], usage: Json, response_id: str) -> Json:
    return {"candidates": candidates, "usageMetadata": usage, "modelVersion": model, "responseId": response_id}


def _candidate(parts: list[Json], index: int, finish: str | None) -> Json:
    out: Json = {"content": {"parts": parts, "role": "model"}, "index": index}
    if finish:
        out["finishReason"] = finish
    return out


async def generate(request: web.Request, model: str) -> web.StreamResponse:
    try:
        body = await _begin(request, model, "generateContent")
        ask, config = _ask(body, model)
    except Rejected as err:
        return _error(err)
    if model == contract.STREAM_ERROR:
        return _error(Rejected(500, MESSAGES[500]))
    a = contract.answer(ask)
    n = config.get("candidateCount", 1)
    thinks = _thinks(model, config)
    parts: list[Json] = []
    if thinks and (config.get("thinkingConfig") or {}).get("includeThoughts"):
        parts.append({"text": THINKING, "thought": True})
    if a.text or not a.calls:
        parts.append({"text": a.text})
    parts += _call_parts(a, thinks)
    candidates = [_candidate(parts, i, _finish(a)) for i in range(n)]
    return web.json_response(
        _response(model, candidates, _usage(a, thinks, n), secrets.token_urlsafe(16)), dumps=_dumps
    )


def _events(model: str, a: contract.Answer, config: Json) -> list[Json]:
    n = config.get("candidateCount", 1)
    thinks = _thinks(model, config)
    rid = secrets.token_urlsafe(16)
    steps: list[list[Json]] = []
    if thinks and (config.get("thinkingConfig") or {}).get("includeThoughts"):
        steps.append([{"text": THINKING, "thought": True}])
    steps += [[{"text": piece}] for piece in contract.pieces(a.text)]
    # Each call whole, in its own event: Gemini never splits a call's arguments.
    steps += [[p] for p in _call_parts(a, thinks)]
    if not steps:
        steps.append([{"text": ""}])
    events = []
    for k, parts in enumerate(steps):
        last = k == len(steps) - 1
        candidates = [_candidate(parts, i, _finish(a) if last else None) for i in range(n)]
        events.append(_response(model, candidates, _usage(a, thinks, n, final=last), rid))
    return events


async def stream_generate(request: web.Request, model: str) -> web.StreamResponse:
    try:
        body = await _begin(request, model, "streamGenerateContent")
        ask, config = _ask(body, model)
    except Rejected as err:
        return _error(err)
    events = _events(model, contract.answer(ask), config)
    if request.query.get("alt") != "sse":
        # Without alt=sse Gemini streams one JSON array of the same responses.
        return web.Response(body=orjson.dumps(events), content_type="application/json", charset="UTF-8")
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    if model == contract.STREAM_ERROR:
        for event in events[:2]:
            await resp.write(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
        await resp.write(orjson.dumps(Rejected(500, MESSAGES[500]).body(), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        for event in events:
            await resp.write(b"data: " + orjson.dumps(event) + b"\r\n\r\n")
    await resp.write_eof()
    return resp


async def count_tokens(request: web.Request, model: str) -> web.Response:
    try:
        body = await _begin(request, model, "countTokens")
        request_body = body.get("generateContentRequest", body)
        ask, _ = _ask({k: v for k, v in request_body.items() if k != "model"}, model)
    except Rejected as err:
        return _error(err)
    total = sum(contract.words(t) for t in ask.texts)
    return web.json_response({"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]})


def _embed_request(raw: Any, where: str) -> list[float]:
    req = _fields(raw, frozenset(("model", "content", "taskType", "title", "outputDimensionality")), where)
    content = _content(req.get("content"), f"{where}.content", system=True)
    dims = req.get("outputDimensionality", EMBED_DIMENSIONS)
    if not isinstance(dims, int) or dims < 1:
        raise Rejected(400, f"* {where}.output_dimensionality: must be a positive integer")
    return contract.embedding(" ".join(p.get("text", "") for p in content["parts"]), dims)


async def embed(request: web.Request, model: str) -> web.Response:
    try:
        body = await _begin(request, model, "embedContent")
        values = _embed_request(body, "EmbedContentRequest")
    except Rejected as err:
        return _error(err)
    return web.json_response({"embedding": {"values": values}})


async def batch_embed(request: web.Request, model: str) -> web.Response:
    try:
        body = await _begin(request, model, "batchEmbedContents")
        requests = _fields(body, frozenset(("requests",)), "").get("requests")
        if not isinstance(requests, list) or not requests:
            raise Rejected(400, "* BatchEmbedContentsRequest.requests: requests is not specified")
        vectors = []
        for i, req in enumerate(requests):
            if isinstance(req, dict) and req.get("model") != f"models/{model}":
                raise Rejected(
                    400, f"* BatchEmbedContentsRequest.requests[{i}].model: the model of every request must be "
                         f"the batch's (models/{model})"
                )  # fmt: skip
            vectors.append(_embed_request(req, f"BatchEmbedContentsRequest.requests[{i}]"))
    except Rejected as err:
        return _error(err)
    return web.json_response({"embeddings": [{"values": v} for v in vectors]})


def _model(name: str) -> Json:
    embeds = "embed" in name
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name.replace("-", " ").title(),
        "description": f"Emulated {name}",
        "inputTokenLimit": 2048 if embeds else 1048576,
        "outputTokenLimit": 1 if embeds else 65536,
        "supportedGenerationMethods": ["embedContent", "batchEmbedContents"] if embeds else
        ["generateContent", "countTokens", "streamGenerateContent"],
        **({} if embeds else {"temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2,
                              "thinking": name in THINKING_MODELS}),
    }  # fmt: skip


async def list_models(request: web.Request) -> web.Response:
    try:
        _check_key(request)
        size = int(request.query.get("pageSize") or PAGE_SIZE)
        start = int(request.query.get("pageToken") or 0)
    except Rejected as err:
        return _error(err)
    except ValueError:
        return _error(Rejected(400, "Invalid value at 'page_size' (TYPE_INT32)"))
    size = max(1, min(size, 1000))
    page: Json = {"models": [_model(m) for m in MODELS[start : start + size]]}
    if start + size < len(MODELS):
        page["nextPageToken"] = str(start + size)
    return web.json_response(page, dumps=_dumps)


async def get_model(request: web.Request) -> web.Response:
    try:
        _check_key(request)
        name = request.match_info["name"]
        if name not in MODELS:
            raise Rejected(404, f"models/{name} is not found for API version v1beta.")
    except Rejected as err:
        return _error(err)
    return web.json_response(_model(name), dumps=_dumps)


async def action(request: web.Request) -> web.StreamResponse:
    """`models/{model}:{method}`: the colon is part of one path segment."""
    model, sep, method = request.match_info["target"].partition(":")
    handler = {
        "generateContent": generate,
        "streamGenerateContent": stream_generate,
        "countTokens": count_tokens,
        "embedContent": embed,
        "batchEmbedContents": batch_embed,
    }.get(method)
    if not sep or handler is None:
        return _error(Rejected(404, f"Method not found: {method or model}"))
    return await handler(request, model)


def make_app() -> web.Application:
    return contract.app(
        [
            web.get("/v1beta/models", list_models),
            web.get("/v1beta/models/{name:[^:/]+}", get_model),
            web.post("/v1beta/models/{target}", action),
        ]
    )


def run(host: str, port: int) -> None:
    contract.serve(make_app(), host, port)
