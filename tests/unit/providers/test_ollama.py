"""ghostllm.providers.ollama: Ollama's native wire format over recorded bytes, no sockets."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from ghostllm.config import ProviderConfig
from ghostllm.errors import InvalidRequest, ProviderError, RateLimited, ServiceUnavailable, UpstreamTimeout
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.ollama import OllamaTranslator
from ghostllm.providers.translator import StreamDecoder
from tests.support.tools import WEATHER

T = OllamaTranslator(ProviderConfig(id="local", type="ollama", base_url="http://x:11434"))
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def lines(*objs: Any) -> bytes:
    return b"".join(orjson.dumps(o) + b"\n" for o in objs)


def accumulate(chunks: list[Any]) -> dict[str, Any]:
    """Chunks folded into the answer they stand for, as the openai SDK folds them."""
    msg: dict[str, Any] = {"role": None, "content": None, "tool_calls": [], "reasoning_content": None}
    out: dict[str, Any] = {"message": msg, "finish_reason": None, "usage": None, "objects": set()}
    for c in chunks:
        out["objects"].add(c["object"])
        if c.get("usage") is not None:
            out["usage"] = c["usage"]
        for choice in c["choices"]:
            delta = choice["delta"]
            msg["role"] = delta.get("role") or msg["role"]
            for key in ("content", "reasoning_content"):
                if delta.get(key) is not None:
                    msg[key] = (msg[key] or "") + delta[key]
            for tc in delta.get("tool_calls") or ():
                calls = msg["tool_calls"]
                if tc["index"] == len(calls):
                    calls.append(
                        {"id": tc.get("id"), "type": tc.get("type"), "function": {"name": "", "arguments": ""}}
                    )
                call = calls[tc["index"]]
                call["function"]["name"] += tc["function"].get("name") or ""
                call["function"]["arguments"] += tc["function"].get("arguments") or ""
            out["finish_reason"] = choice.get("finish_reason") or out["finish_reason"]
    return out


def decode(data: bytes, cut: int | None = None, endpoint: Endpoint = Endpoint.CHAT) -> tuple[list[Any], StreamDecoder]:
    d = T.stream_decoder(endpoint)
    chunks = d.feed(data) if cut is None else d.feed(data[:cut]) + d.feed(data[cut:])
    return chunks, d


def without_ids(chunks: list[Any]) -> list[Any]:
    """Ids and `created` are made per response (by our clock: two decoders may start in
    different seconds); comparisons across decoders leave them out."""
    out = copy.deepcopy(chunks)
    for c in out:
        c.pop("id")
        assert isinstance(c.pop("created"), int)
        for choice in c["choices"]:
            for tc in choice.get("delta", {}).get("tool_calls") or ():
                tc.pop("id")
    return out


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "public", "messages": [{"role": "user", "content": "hi"}], **kw}


def sent(b: dict[str, Any], *, stream: bool = False, endpoint: Endpoint = Endpoint.CHAT) -> Any:
    req = T.request(endpoint, b, "llama3.2", stream=stream)
    return req.path, orjson.loads(req.body)


# ---------------------------------------------------------------- requests

REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "roles: developer is a system turn; multi-part text joined; stream explicit",
        body(
            messages=[
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "ok", "reasoning_content": "hmm"},
                {"role": "user", "content": "c"},
            ]
        ),
        {
            "model": "llama3.2",
            "stream": False,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "a\nb"},
                {"role": "assistant", "content": "ok", "thinking": "hmm"},
                {"role": "user", "content": "c"},
            ],
        },
    ),
    (
        "a base64 image goes in the message's images, raw",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
                    ],
                }
            ]
        ),
        {"messages": [{"role": "user", "content": "what is this?", "images": [PNG]}]},
    ),
    (
        "tool round trip: arguments as an object, the result named after its call",
        body(
            tools=[WEATHER],
            messages=[
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        },
                        {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
                    ],
                },
                {"role": "tool", "tool_call_id": "c2", "content": "noon"},
                {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sunny"}]},
                {"role": "tool", "tool_call_id": "unknown", "content": "?"},
            ],
        ),
        {
            "tools": [WEATHER],
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
                        {"function": {"name": "get_time", "arguments": {}}},
                    ],
                },
                {"role": "tool", "content": "noon", "tool_name": "get_time"},
                {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
                {"role": "tool", "content": "?"},
            ],
        },
    ),
    (
        "sampling options, stop as a list, max_completion_tokens over max_tokens",
        body(
            temperature=0,
            top_p=0.5,
            seed=7,
            stop="END",
            max_tokens=5,
            max_completion_tokens=9,
            frequency_penalty=0.1,
            presence_penalty=0.2,
            user="u1",
            stream_options={"include_usage": True},
        ),
        {
            "options": {
                "temperature": 0,
                "top_p": 0.5,
                "seed": 7,
                "stop": ["END"],
                "num_predict": 9,
                "frequency_penalty": 0.1,
                "presence_penalty": 0.2,
            }
        },
    ),
    ("json_object is format json", body(response_format={"type": "json_object"}), {"format": "json"}),
    (
        "json_schema is the schema itself",
        body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}),
        {"format": {"type": "object"}},
    ),
    ("tool_choice none: no tools offered", body(tools=[WEATHER], tool_choice="none"), {"tools": "absent"}),
    ("tool_choice auto: tools as sent", body(tools=[WEATHER], tool_choice="auto"), {"tools": [WEATHER]}),
    ("reasoning_effort is think", body(reasoning_effort="high"), {"think": "high"}),
    ("reasoning_effort none is think false", body(reasoning_effort="none"), {"think": False}),
    (
        "Ollama's own fields go up as sent, typed options over native ones",
        body(think=True, keep_alive="5m", options={"num_ctx": 4096, "temperature": 1}, temperature=0.3),
        {"think": True, "keep_alive": "5m", "options": {"num_ctx": 4096, "temperature": 0.3}},
    ),
    ("logprobs", body(logprobs=True, top_logprobs=3), {"logprobs": True, "top_logprobs": 3}),
]


@pytest.mark.parametrize(("name", "openai", "expected"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_requests(name: str, openai: dict[str, Any], expected: dict[str, Any]) -> None:
    before = copy.deepcopy(openai)
    path, out = sent(openai)
    assert path == "/api/chat"
    for key, value in expected.items():
        if value == "absent":
            assert key not in out
        else:
            assert out[key] == value, key
    assert openai == before
    for key in ("max_tokens", "temperature", "response_format", "tool_choice", "user", "stream_options", "seed"):
        assert key not in out


def test_stream_is_always_explicit() -> None:
    assert sent(body(), stream=True)[1]["stream"] is True
    assert sent(body(stream=True), stream=False)[1]["stream"] is False


UNSUPPORTED: list[tuple[dict[str, Any], str]] = [
    (body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]),
     "messages[0].content[0].image_url.url"),
    (body(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]),
     "messages[0].content[0]"),
    (body(messages=[{"role": "user", "content": [{"type": "file", "file": {}}]}]), "messages[0].content[0]"),
    (body(messages=[{"role": "function", "name": "f", "content": "x"}]), "messages[0].role"),
    (body(n=2), "n"),
    (body(tools=[WEATHER], tool_choice="required"), "tool_choice"),
    (body(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}), "tool_choice"),
    (body(tools=[WEATHER], parallel_tool_calls=False), "parallel_tool_calls"),
    (body(logit_bias={"1": 5}), "logit_bias"),
    (body(audio={"voice": "x"}), "audio"),
    (body(modalities=["text", "audio"]), "modalities"),
    (body(prediction={"type": "content", "content": "x"}), "prediction"),
    (body(functions=[{"name": "f"}]), "functions"),
    (body(store=True), "store"),
    (body(reasoning_effort="xhigh"), "reasoning_effort"),
]  # fmt: skip


@pytest.mark.parametrize(("openai", "param"), UNSUPPORTED, ids=[u[1] + str(i) for i, u in enumerate(UNSUPPORTED)])
def test_what_ollama_cannot_do_is_a_400_naming_it_and_the_provider(openai: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        sent(openai)
    assert exc.value.param == param
    assert "not supported by provider local (ollama)" in exc.value.message


@pytest.mark.parametrize(
    "openai",
    [
        body(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                             "function": {"name": "f", "arguments": "[1]"}}]}]),
        body(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                             "function": {"name": "f", "arguments": "{oops"}}]}]),
        body(messages=[{"role": "user", "content": [{"type": "image_url",
                                                     "image_url": {"url": "data:image/png,abc"}}]}]),
        body(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
    ],
)  # fmt: skip
def test_malformed_requests_are_400s(openai: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        sent(openai)


def test_embeddings_request() -> None:
    path, out = sent({"model": "e", "input": ["a", "b"], "dimensions": 4, "encoding_format": "float"},
                     endpoint=Endpoint.EMBEDDINGS)  # fmt: skip
    assert (path, out) == ("/api/embed", {"model": "llama3.2", "input": ["a", "b"], "dimensions": 4})
    with pytest.raises(InvalidRequest, match="token id input"):
        sent({"model": "e", "input": [1, 2]}, endpoint=Endpoint.EMBEDDINGS)


def test_completions_request_is_generate() -> None:
    path, out = sent({"model": "m", "prompt": ["Once"], "max_tokens": 3, "suffix": "end", "stop": ["\n"]},
                     endpoint=Endpoint.COMPLETIONS)  # fmt: skip
    assert path == "/api/generate"
    assert out == {"model": "llama3.2", "prompt": "Once", "stream": False, "suffix": "end",
                   "options": {"stop": ["\n"], "num_predict": 3}}  # fmt: skip
    bad_prompts: list[dict[str, Any]] = [{"prompt": ["a", "b"]}, {"prompt": [1, 2]}, {"prompt": "a", "echo": True},
                   {"prompt": "a", "best_of": 2}, {"prompt": "a", "logprobs": 1}]  # fmt: skip
    for bad in bad_prompts:
        with pytest.raises(InvalidRequest):
            sent({"model": "m", **bad}, endpoint=Endpoint.COMPLETIONS)


# ---------------------------------------------------------------- whole answers

DOCS_TOOL_REPLY = {
    "model": "llama3.2", "created_at": "2025-07-07T20:32:53.844124Z",
    "message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}},
        {"id": "call_own", "function": {"index": 1, "name": "get_time", "arguments": {}}},
    ]},
    "done_reason": "stop", "done": True, "prompt_eval_count": 169, "eval_count": 18,
}  # fmt: skip

REPLIES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "text; no done_reason (older servers) is stop",
        {"model": "llama3.2", "message": {"role": "assistant", "content": "Hello!"}, "done": True,
         "prompt_eval_count": 26, "eval_count": 298},
        {"content": "Hello!", "finish_reason": "stop", "usage": (26, 298, 324)},
    ),
    (
        "tool calls: arguments as JSON strings, ids made or kept, finish tool_calls though done_reason is stop",
        DOCS_TOOL_REPLY,
        {"content": None, "finish_reason": "tool_calls", "usage": (169, 18, 187),
         "calls": [("get_weather", {"city": "Tokyo"}), ("get_time", {})], "ids": [None, "call_own"]},
    ),
    (
        "length",
        {"model": "m", "created_at": "0001-01-01T00:00:00Z", "message": {"role": "", "content": "partial"},
         "done": True, "done_reason": "length"},
        {"content": "partial", "finish_reason": "length", "usage": (0, 0, 0)},
    ),
    (
        "thinking is reasoning_content, never content",
        {"model": "m", "message": {"role": "assistant", "content": "42", "thinking": "Let me see."}, "done": True,
         "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 9},
        {"content": "42", "reasoning": "Let me see.", "finish_reason": "stop", "usage": (3, 9, 12)},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "upstream", "expected"), REPLIES, ids=[r[0] for r in REPLIES])
def test_replies(name: str, upstream: dict[str, Any], expected: dict[str, Any]) -> None:
    reply = T.reply(Endpoint.CHAT, orjson.dumps(upstream))
    data = reply.data
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    choice = data["choices"][0]
    msg = choice["message"]
    assert msg["role"] == "assistant"
    assert msg["content"] == expected["content"]
    assert choice["finish_reason"] == expected["finish_reason"]
    assert msg.get("reasoning_content") == expected.get("reasoning")
    p, c, t = expected["usage"]
    assert reply.usage == Usage(p, c, t)
    assert data["usage"] == {"prompt_tokens": p, "completion_tokens": c, "total_tokens": t}
    calls = msg.get("tool_calls") or []
    assert [(tc["function"]["name"], orjson.loads(tc["function"]["arguments"])) for tc in calls] == expected.get(
        "calls", []
    )
    for tc, own in zip(calls, expected.get("ids", []), strict=True):
        assert tc["type"] == "function" and "index" not in tc
        assert tc["id"] == own if own else tc["id"].startswith("call_")


def test_reply_logprobs_are_openai_shaped() -> None:
    lp = [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": [{"token": "Hi", "logprob": -0.1}]}]
    upstream = {"model": "m", "message": {"role": "assistant", "content": "Hi"}, "done": True, "logprobs": lp}
    assert T.reply(Endpoint.CHAT, orjson.dumps(upstream)).data["choices"][0]["logprobs"] == {
        "content": lp,
        "refusal": None,
    }


@pytest.mark.parametrize(
    "raw",
    [b"<html>", b"[]", b'{"error": "boom"}', b'{"message": "x"}', b'{"message": {"content": 5}}',
     b'{"message": {"tool_calls": [{"function": {"arguments": {}}}]}}',
     b'{"message": {"tool_calls": [{"function": {"name": "f", "arguments": 5}}]}}'],
)  # fmt: skip
def test_unusable_replies_are_provider_errors(raw: bytes) -> None:
    with pytest.raises(ProviderError):
        T.reply(Endpoint.CHAT, raw)


def test_embeddings_and_generate_replies() -> None:
    emb = T.reply(Endpoint.EMBEDDINGS, orjson.dumps({"model": "e", "embeddings": [[0.1, 0.2], [0.3, 0.4]],
                                                      "prompt_eval_count": 4}))  # fmt: skip
    assert emb.data["object"] == "list"
    assert [d["embedding"] for d in emb.data["data"]] == [[0.1, 0.2], [0.3, 0.4]]
    assert [d["index"] for d in emb.data["data"]] == [0, 1]
    assert emb.usage == Usage(4, 0, 4) and emb.data["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    with pytest.raises(ProviderError):
        T.reply(Endpoint.EMBEDDINGS, b'{"embeddings": "x"}')
    gen = T.reply(Endpoint.COMPLETIONS, orjson.dumps({"model": "m", "response": "Once upon", "done": True,
                                                       "done_reason": "length", "prompt_eval_count": 1,
                                                       "eval_count": 2}))  # fmt: skip
    assert gen.data["object"] == "text_completion"
    assert gen.data["choices"][0]["text"] == "Once upon" and gen.data["choices"][0]["finish_reason"] == "length"
    assert gen.usage == Usage(1, 2, 3)


# ---------------------------------------------------------------- streams

# Thinking, text, a tool call mid-stream, another in the final line (Ollama sends both ways).
STREAM = lines(
    {"model": "qwen3", "created_at": "t", "message": {"role": "assistant", "content": "", "thinking": "Hmm,"},
     "done": False},
    {"model": "qwen3", "created_at": "t", "message": {"role": "assistant", "content": "", "thinking": " ok."},
     "done": False},
    {"model": "qwen3", "created_at": "t", "message": {"role": "assistant", "content": "Let me "}, "done": False},
    {"model": "qwen3", "created_at": "t", "message": {"role": "assistant", "content": "check."}, "done": False},
    {"model": "qwen3", "created_at": "t", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}]}, "done": False},
    {"model": "qwen3", "created_at": "t", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_time", "arguments": {"tz": "JST"}}}]},
     "done_reason": "stop", "done": True, "prompt_eval_count": 12, "eval_count": 30},
)  # fmt: skip


def test_stream_decodes_thinking_text_tool_calls_finish_and_usage() -> None:
    chunks, d = decode(STREAM)
    assert d.done and d.usage == Usage(12, 30, 42)
    acc = accumulate(chunks)
    assert acc["objects"] == {"chat.completion.chunk"}
    assert acc["message"]["role"] == "assistant"
    assert acc["message"]["content"] == "Let me check."
    assert acc["message"]["reasoning_content"] == "Hmm, ok."
    calls = acc["message"]["tool_calls"]
    assert [(c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Tokyo"}),
        ("get_time", {"tz": "JST"}),
    ]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert len({c["id"] for c in calls}) == 2
    assert acc["finish_reason"] == "tool_calls"
    assert acc["usage"] == {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}
    # The usage chunk comes last, with no choices, as OpenAI sends it.
    assert chunks[-1]["choices"] == [] and chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert len({c["id"] for c in chunks}) == 1


def test_stream_split_at_every_byte_offset_decodes_the_same() -> None:
    whole, _ = decode(STREAM)
    for cut in range(len(STREAM) + 1):
        chunks, d = decode(STREAM, cut)
        assert without_ids(chunks) == without_ids(whole), cut
        assert d.done


def test_stream_byte_by_byte() -> None:
    d = T.stream_decoder(Endpoint.CHAT)
    chunks: list[Any] = []
    for i in range(len(STREAM)):
        chunks += d.feed(STREAM[i : i + 1])
    assert without_ids(chunks) == without_ids(decode(STREAM)[0])


def test_first_chunk_carries_the_role_even_when_empty() -> None:
    data = lines(
        {"model": "m", "message": {"role": "assistant", "content": ""}, "done": False},
        {"model": "m", "message": {"role": "assistant", "content": "Hi"}, "done": False},
        {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "length"},
    )
    chunks, _ = decode(data)
    assert [c["choices"][0]["delta"] for c in chunks[:3]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {},
    ]
    assert chunks[2]["choices"][0]["finish_reason"] == "length"


def test_a_single_final_line_with_content() -> None:
    data = lines({"model": "m", "message": {"role": "", "content": "partial"}, "done": True, "done_reason": "length"})
    acc = accumulate(decode(data)[0])
    assert acc["message"] == {"role": "assistant", "content": "partial", "tool_calls": [], "reasoning_content": None}
    assert acc["finish_reason"] == "length"


def test_an_error_line_mid_stream_fails_after_what_came_before() -> None:
    data = lines({"model": "m", "message": {"role": "assistant", "content": "Hel"}, "done": False}) + lines(
        {"error": "an error was encountered while running the model: unexpected EOF"}
    )
    # In one read: the text is returned first, the error raised on the next read or at the end.
    d = T.stream_decoder(Endpoint.CHAT)
    chunks = d.feed(data)
    assert chunks[0]["choices"][0]["delta"]["content"] == "Hel"
    with pytest.raises(ProviderError, match="unexpected EOF"):
        d.end()
    d = T.stream_decoder(Endpoint.CHAT)
    d.feed(data)
    with pytest.raises(ProviderError, match="unexpected EOF"):
        d.feed(b"")
    # Alone in its read: raised at once.
    with pytest.raises(ProviderError, match="failed mid-stream: unexpected"):
        T.stream_decoder(Endpoint.CHAT).feed(lines({"error": "unexpected"}))


@pytest.mark.parametrize("line", [b"42\n", b"not json\n", b'{"message": "x", "done": false}\n'])
def test_bad_stream_lines_are_provider_errors(line: bytes) -> None:
    with pytest.raises(ProviderError):
        T.stream_decoder(Endpoint.CHAT).feed(line)


def test_generate_stream_is_text_completion_chunks() -> None:
    data = lines(
        {"model": "m", "response": "Once ", "done": False},
        {"model": "m", "response": "upon", "done": False},
        {"model": "m", "response": "", "done": True, "done_reason": "stop", "prompt_eval_count": 2, "eval_count": 2},
    )
    chunks, d = decode(data, endpoint=Endpoint.COMPLETIONS)
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert "".join(ch["text"] for c in chunks for ch in c["choices"]) == "Once upon"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["total_tokens"] == 4
    assert d.done and d.usage == Usage(2, 2, 4)


def test_lines_after_done_are_ignored() -> None:
    data = lines({"model": "m", "message": {"content": "a"}, "done": True}) + b"garbage\n"
    chunks, d = decode(data)
    assert d.done and chunks[-1]["choices"] == []


# ---------------------------------------------------------------- errors and listing


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, InvalidRequest), (401, ProviderError), (404, ProviderError), (429, RateLimited), (500, ProviderError),
     (503, ServiceUnavailable), (504, UpstreamTimeout)],
)  # fmt: skip
def test_error_statuses_keep_ollamas_message(status: int, kind: type[Exception]) -> None:
    err = T.error(status, b'{"error": "model \\"x\\" not found, try pulling it first"}', {"retry-after": "7"})
    assert type(err) is kind
    assert 'model "x" not found' in err.message and "local" in err.message
    if status in (429, 503):
        assert err.retry_after == "7"


def test_headers_bearer_only_with_a_key() -> None:
    assert T.headers() == {}


def test_models_from_tags() -> None:
    tags = {"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest"}, {"name": "qwen3:8b"}]}
    assert T.models_path() == "/api/tags"
    assert T.models(orjson.dumps(tags)) == ["llama3.2:latest", "qwen3:8b"]
    with pytest.raises(ProviderError):
        T.models(b'{"data": []}')
