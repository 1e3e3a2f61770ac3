"""Translator for the Gemini API (`generateContent`, `streamGenerateContent?alt=sse`,
`embedContent` / `batchEmbedContents`, under `{base_url}/v1beta`, key in `x-goog-api-key`).

Requests: OpenAI messages become `contents` (roles user/model; consecutive turns of one
role merged, as Gemini wants them alternating), system and developer messages the
`systemInstruction`, tool results `functionResponse` parts matched to their call by
function name (Gemini has no call ids), sampling options the `generationConfig`. A
feature Gemini cannot do is a 400 naming it, never dropped. Answers (whole and
streamed) are translated in `ghostllm.providers.gemini_stream`.
"""

from __future__ import annotations

import mimetypes
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from ghostllm.config import ModelConfig
from ghostllm.errors import (
    GhostError,
    InvalidRequest,
    ProviderError,
    RateLimited,
)
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Json, Reply
from ghostllm.providers.gemini_stream import SIGNATURE_MARK, GeminiStreamDecoder, chat_reply
from ghostllm.providers.openai import json_object, upstream_message, upstream_status_error
from ghostllm.providers.translator import StreamDecoder, Translator, UpstreamRequest, encode_body

API = "/v1beta"
# OpenAI's reasoning_effort as a Gemini thinking budget (tokens): the values Google's own
# OpenAI-compatible endpoint documents for the same mapping.
THINKING_BUDGETS = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
# OpenAI request fields Gemini has no equivalent for: refused, never dropped.
UNSUPPORTED = {
    "logit_bias": "logit_bias",
    "prediction": "predicted outputs (prediction)",
    "audio": "audio output",
    "web_search_options": "web search (web_search_options)",
    "functions": "legacy functions (use tools)",
    "function_call": "legacy function_call (use tool_choice)",
}
AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}


def _unsupported(provider: str, feature: str, param: str) -> InvalidRequest:
    return InvalidRequest(
        f"{feature} is not supported by provider {provider} (gemini)", param=param, code="unsupported_feature"
    )


def model_path(model: str) -> str:
    """The model's resource name: `models/x`, or a tuned model's own `tunedModels/x`."""
    return model if "/" in model else f"models/{quote(model, safe='-_.')}"


# ----------------------------------------------------------------------- content parts


def _data_url(url: str, param: str) -> Json:
    head, sep, data = url.partition(",")
    mime, _, encoding = head[5:].partition(";")
    if not sep or encoding != "base64" or not mime:
        raise InvalidRequest("a data URL must be base64 with a media type (data:<type>;base64,...)", param=param)
    return {"inlineData": {"mimeType": mime, "data": data}}


def _media(url: str, param: str) -> Json:
    """An image (or file) URL as a part: data URLs inline, http(s) URLs fetched by Gemini itself."""
    if url.startswith("data:"):
        return _data_url(url, param)
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https", "gs"):
        raise InvalidRequest("an image URL must be http(s) or a base64 data URL", param=param)
    # Gemini reads public URLs (and Files API or gs:// URIs) named by fileData.
    ref: Json = {"fileUri": url}
    mime, _ = mimetypes.guess_type(urlsplit(url).path)
    if mime:
        ref["mimeType"] = mime
    return {"fileData": ref}


def _user_parts(provider: str, content: Any, where: str) -> list[Json]:
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[Json] = []
    for j, part in enumerate(content or ()):
        kind = part.get("type")
        param = f"{where}[{j}]"
        if kind == "text":
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_media(part["image_url"]["url"], f"{param}.image_url.url"))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            mime = AUDIO_TYPES.get(str(audio.get("format")))
            if mime is None or not isinstance(audio.get("data"), str):
                raise InvalidRequest("input_audio needs base64 data and a format of wav or mp3", param=param)
            parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        elif kind == "file":
            file = part.get("file") or {}
            if not isinstance(file.get("file_data"), str):
                raise _unsupported(provider, "OpenAI file ids (file.file_id)", f"{param}.file")
            parts.append(_data_url(file["file_data"], f"{param}.file.file_data"))
        else:  # refusal: an assistant's, not something a user sends
            raise _unsupported(provider, f"'{kind}' content parts in this role", param)
    return parts


def _text_only(provider: str, content: Any, where: str, what: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content or ()):
        if part.get("type") == "text":
            texts.append(part["text"])
        elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise _unsupported(provider, f"'{part.get('type')}' parts in {what}", f"{where}[{j}]")
    return "".join(texts)


def _split_id(call_id: str) -> tuple[str, str | None]:
    """Our tool-call id, and the thought signature it carries (see gemini_stream)."""
    base, mark, signature = call_id.partition(SIGNATURE_MARK)
    return base, (signature if mark and signature else None)


def _model_parts(provider: str, msg: Json, i: int) -> list[Json]:
    parts: list[Json] = []
    content = msg.get("content")
    if content:
        text = _text_only(provider, content, f"messages[{i}].content", "assistant messages")
        if text:
            parts.append({"text": text})
    for k, call in enumerate(msg.get("tool_calls") or ()):
        where = f"messages[{i}].tool_calls[{k}]"
        fn = call.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequest("a tool call needs function.name", param=f"{where}.function.name")
        raw = fn.get("arguments") or "{}"
        try:
            args = orjson.loads(raw) if isinstance(raw, str) else None
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            raise InvalidRequest(
                "tool call arguments must be a JSON object (as text)", param=f"{where}.function.arguments"
            )
        part: Json = {"functionCall": {"name": fn["name"], "args": args}}
        _, signature = _split_id(str(call.get("id") or ""))
        if signature:
            # Thinking models need their signature back on the call they made.
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _tool_response(provider: str, msg: Json, i: int, names: Mapping[str, str]) -> Json:
    call_id = msg["tool_call_id"]
    name = names.get(call_id) or names.get(_split_id(call_id)[0])
    if name is None:
        raise InvalidRequest(
            f"tool_call_id '{call_id[:100]}' matches no tool call of an earlier assistant message "
            f"(provider {provider} (gemini) names tool results by their function)",
            param=f"messages[{i}].tool_call_id",
        )
    text = _text_only(provider, msg.get("content"), f"messages[{i}].content", "tool messages")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text
    # Gemini's documented shape: an object as the function's output, or {"output": ...}.
    response = value if isinstance(value, dict) else {"output": value}
    return {"functionResponse": {"name": name, "response": response}}


def _contents(provider: str, messages: list[Json]) -> tuple[list[Json], list[Json]]:
    """(systemInstruction parts, contents) of an OpenAI message list."""
    system: list[Json] = []
    contents: list[Json] = []
    names: dict[str, str] = {}
    for msg in messages:
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") or {}
            if isinstance(call.get("id"), str) and isinstance(fn.get("name"), str):
                names[call["id"]] = fn["name"]
                names.setdefault(_split_id(call["id"])[0], fn["name"])
    for i, msg in enumerate(messages):
        role = msg["role"]
        if role in ("system", "developer"):
            text = _text_only(provider, msg.get("content"), f"messages[{i}].content", "system messages")
            system.append({"text": text})
            continue
        if role == "user":
            turn, parts = "user", _user_parts(provider, msg.get("content"), f"messages[{i}].content")
        elif role == "assistant":
            turn, parts = "model", _model_parts(provider, msg, i)
        elif role == "tool":
            turn, parts = "user", [_tool_response(provider, msg, i, names)]
        else:
            raise _unsupported(provider, "legacy 'function' messages (use tool messages)", f"messages[{i}].role")
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    return system, contents


# ----------------------------------------------------------------------- tools and config


def _tools(tools: list[Json]) -> list[Json]:
    declarations = []
    for tool in tools:
        fn = tool["function"]
        decl: Json = {"name": fn["name"]}
        if fn.get("description"):
            decl["description"] = fn["description"]
        if fn.get("parameters") is not None:
            # The JSON Schema as the client wrote it: Gemini takes JSON Schema here as is.
            decl["parametersJsonSchema"] = fn["parameters"]
        declarations.append(decl)
    return [{"functionDeclarations": declarations}]


def _tool_config(choice: Any) -> Json:
    if choice == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    return {"functionCallingConfig": {"mode": "AUTO"}}


def _response_format(fmt: Json, config: Json) -> None:
    kind = fmt.get("type")
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise InvalidRequest("response_format json_schema needs json_schema.schema", param="response_format")
        config["responseMimeType"] = "application/json"
        # Gemini's JSON Schema field (responseSchema is its older OpenAPI subset).
        config["responseJsonSchema"] = spec["schema"]


def _generation_config(body: Json) -> Json:
    config: Json = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("n", "candidateCount"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else stop
    if body.get("logprobs"):
        config["responseLogprobs"] = True
        if body.get("top_logprobs") is not None:
            config["logprobs"] = body["top_logprobs"]
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        _response_format(fmt, config)
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in THINKING_BUDGETS:
            raise InvalidRequest(
                f"reasoning_effort must be one of {', '.join(THINKING_BUDGETS)}", param="reasoning_effort"
            )
        config["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGETS[effort]}
    return config


def chat_body(provider: str, body: Json) -> Json:
    for name, feature in UNSUPPORTED.items():
        if body.get(name) is not None:
            raise _unsupported(provider, feature, name)
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise _unsupported(provider, "output modalities other than text", "modalities")
    tools = body.get("tools") or []
    if tools and body.get("parallel_tool_calls") is False:
        # Gemini may always answer with several calls at once; it has no switch to stop it.
        raise _unsupported(provider, "parallel_tool_calls false", "parallel_tool_calls")
    system, contents = _contents(provider, body["messages"])
    if not contents:
        raise InvalidRequest(
            f"provider {provider} (gemini) needs at least one user or assistant message", param="messages"
        )
    out: Json = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    if tools:
        out["tools"] = _tools(tools)
    choice = body.get("tool_choice")
    if tools and choice is not None:
        out["toolConfig"] = _tool_config(choice)
    elif choice not in (None, "none", "auto"):
        raise InvalidRequest("tool_choice names a tool but no tools were given", param="tool_choice")
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    return out


def embed_body(provider: str, body: Json, model: str) -> tuple[str, Json]:
    """(method, body): one input through embedContent, a list through batchEmbedContents."""
    inputs = body.get("input")
    if not isinstance(inputs, str) and not (isinstance(inputs, list) and all(isinstance(x, str) for x in inputs)):
        raise _unsupported(provider, "token-id embedding input (send text)", "input")
    extra: Json = {}
    if body.get("dimensions") is not None:
        extra["outputDimensionality"] = body["dimensions"]
    if isinstance(inputs, str):
        return "embedContent", {"content": {"parts": [{"text": inputs}]}, **extra}
    name = model_path(model)
    requests = [{"model": name, "content": {"parts": [{"text": text}]}, **extra} for text in inputs]
    return "batchEmbedContents", {"requests": requests}


# ----------------------------------------------------------------------- answers


def embeddings_reply(provider: str, data: Json) -> Reply:
    items = data.get("embeddings")
    if items is None and isinstance(data.get("embedding"), dict):
        items = [data["embedding"]]
    if not isinstance(items, list) or not all(isinstance(x, dict) and isinstance(x.get("values"), list) for x in items):
        raise ProviderError(f"provider {provider} returned a malformed answer: no embeddings")
    meta = data.get("usageMetadata")
    tokens = meta.get("promptTokenCount") if isinstance(meta, dict) else None
    usage = Usage(tokens, 0, tokens) if isinstance(tokens, int) else None
    out = [{"object": "embedding", "index": i, "embedding": x["values"]} for i, x in enumerate(items)]
    n = tokens if isinstance(tokens, int) else 0
    return Reply({"object": "list", "data": out, "usage": {"prompt_tokens": n, "total_tokens": n}}, usage)


def _detail(raw: bytes, kind: str) -> list[Json]:
    """The error details of one @type (google.rpc.ErrorInfo, RetryInfo, ...)."""
    try:
        data = orjson.loads(raw)
        details = data["error"]["details"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return []
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, dict) and d.get("@type") == f"type.googleapis.com/google.rpc.{kind}"]


def _retry_after(raw: bytes, headers: Mapping[str, str]) -> str | None:
    if headers.get("retry-after"):
        return headers["retry-after"]
    for info in _detail(raw, "RetryInfo"):
        delay = info.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(max(1, round(float(delay[:-1]) + 0.499)))
            except ValueError:
                return None
    return None


class GeminiTranslator(Translator):
    def headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"x-goog-api-key": key} if key else {}

    def request(
        self, endpoint: Endpoint, body: Json, model: str, *, stream: bool, entry: ModelConfig | None = None
    ) -> UpstreamRequest:
        name = model_path(model)
        if endpoint is Endpoint.CHAT:
            out = chat_body(self.id, body)
            path = f"{API}/{name}:streamGenerateContent?alt=sse" if stream else f"{API}/{name}:generateContent"
        elif endpoint is Endpoint.EMBEDDINGS:
            method, out = embed_body(self.id, body, model)
            path = f"{API}/{name}:{method}"
        else:
            raise _unsupported(self.id, "the legacy completions endpoint (use chat completions)", "prompt")
        return UpstreamRequest(path, encode_body(out, body))

    def reply(self, endpoint: Endpoint, raw: bytes) -> Reply:
        data = json_object(self.id, raw)
        if endpoint is Endpoint.EMBEDDINGS:
            # Floats: the provider packs them as base64 when the request asked (providers/http.py).
            return embeddings_reply(self.id, data)
        return chat_reply(self.id, data, secrets.token_hex(6))

    def stream_decoder(self, endpoint: Endpoint) -> StreamDecoder:
        return GeminiStreamDecoder(self.id, secrets.token_hex(6))

    def error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> GhostError:
        msg = upstream_message(raw)
        if status == 400 and any(d.get("reason") == "API_KEY_INVALID" for d in _detail(raw, "ErrorInfo")):
            # Gemini answers a bad key with 400: the fault is our credential, not the client's request.
            return ProviderError(f"provider {self.id} rejected the gateway's credentials: {msg}")
        if status == 429:
            return RateLimited(f"provider {self.id} is rate limiting: {msg}", retry_after=_retry_after(raw, headers))
        return upstream_status_error(self.id, status, raw, headers)

    def models_path(self) -> str:
        # The API's largest page: every model in one answer.
        return f"{API}/models?pageSize=1000"

    def models(self, raw: bytes) -> list[str]:
        try:
            data = orjson.loads(raw)
            return [str(m["name"]).removeprefix("models/") for m in data.get("models") or ()]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ProviderError(f"provider {self.id} returned an invalid model list") from None
