"""ghostllm.providers.gemini: OpenAI requests to the Gemini API and its answers back, over
recorded-shape bytes, no sockets (the shared real exchanges are in test_gemini_cases.py)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from ghostllm.config import ProviderConfig
from ghostllm.errors import (
    GhostError,
    InvalidRequest,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
    UpstreamTimeout,
)
from ghostllm.protocol.chat import check_chat_request
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.base import Json
from ghostllm.providers.gemini import GeminiTranslator
from ghostllm.providers.gemini_stream import GeminiStreamDecoder
from tests.fidelity.answer import accumulate

T = GeminiTranslator(ProviderConfig(id="gem", type="gemini", base_url="http://x", stored_api_key="AIza-test"))
USER = [{"role": "user", "content": "hi"}]
TOOL: Json = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL2: Json = {"type": "function", "function": {"name": "get_time"}}


def sent(body: Json, *, stream: bool = False, model: str = "gemini-2.0-flash") -> Json:
    out: Json = orjson.loads(T.request(Endpoint.CHAT, check_chat_request(body), model, stream=stream).body)
    return out


def chat(**fields: Any) -> Json:
    return sent({"model": "m", "messages": USER, **fields})


def refused(body: Json, endpoint: Endpoint = Endpoint.CHAT) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as exc:
        T.request(endpoint, body, "gemini-2.0-flash", stream=False)
    return exc.value


# ------------------------------------------------------------------ requests


def test_headers_and_paths() -> None:
    assert T.headers() == {"x-goog-api-key": "AIza-test"}
    body = {"model": "m", "messages": USER}
    assert T.request(Endpoint.CHAT, body, "gemini-2.0-flash", stream=False).path == (
        "/v1beta/models/gemini-2.0-flash:generateContent"
    )
    assert T.request(Endpoint.CHAT, body, "gemini-2.0-flash", stream=True).path == (
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    )
    # A tuned model is named by its own resource path.
    assert T.request(Endpoint.CHAT, body, "tunedModels/mine", stream=False).path == (
        "/v1beta/tunedModels/mine:generateContent"
    )
    assert T.models_path() == "/v1beta/models?pageSize=1000"


def test_plain_request_has_only_gemini_fields() -> None:
    out = sent({"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True},
                "user": "u1", "store": False, "metadata": {"a": "b"}}, stream=True)  # fmt: skip
    assert out == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    out = sent({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
        {"role": "user", "content": "hi"},
    ]})  # fmt: skip
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use French."}]}
    assert out["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_turns_alternate_and_same_role_messages_merge() -> None:
    out = sent({"model": "m", "messages": [
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"},
    ]})  # fmt: skip
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}]},
        {"role": "user", "parts": [{"text": "d"}]},
    ]


def test_media_parts() -> None:
    content = [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpeg?size=2", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
    ]
    parts = sent({"model": "m", "messages": [{"role": "user", "content": content}]})["contents"][0]["parts"]
    assert parts == [
        {"text": "what?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"fileUri": "https://example.com/cat.jpeg?size=2", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "https://example.com/render"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}},
        {"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}},
        {"type": "input_audio", "input_audio": {"data": "x", "format": "flac"}},
        {"type": "file", "file": {"file_id": "file-abc"}},
    ],
)
def test_media_gemini_cannot_take_is_a_400(part: Json) -> None:
    err = refused({"model": "m", "messages": [{"role": "user", "content": [part]}]})
    assert err.param and err.param.startswith("messages[0].content[0]")


def test_images_in_a_system_message_are_a_400() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
    err = refused({"model": "m", "messages": [{"role": "system", "content": [image]}, *USER]})
    assert "gem" in err.message and "gemini" in err.message and err.param == "messages[0].content[0]"


def test_tool_round_trip_by_function_name_with_the_thought_signature_back() -> None:
    messages = [
        {"role": "user", "content": "weather in Paris and the time?"},
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "call_ab_0_0__sig__c2lnbmF0dXJl", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_ab_0_1", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_ab_0_0__sig__c2lnbmF0dXJl", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_ab_0_1", "content": [{"type": "text", "text": "noon"}]},
        {"role": "user", "content": "thanks"},
    ]  # fmt: skip
    out = sent({"model": "m", "messages": messages, "tools": [TOOL, TOOL2]})
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "weather in Paris and the time?"}]},
        {"role": "model", "parts": [
            {"text": "Looking."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmF0dXJl"},
            {"functionCall": {"name": "get_time", "args": {}}},
        ]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
            {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
            {"text": "thanks"},
        ]},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "tool", "tool_call_id": "call_nowhere", "content": "x"}], "messages[1].tool_call_id"),
        (
            [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                   "function": {"name": "f", "arguments": "{not json"}}]}],
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                   "function": {"name": "f", "arguments": "[1]"}}]}],
            "messages[1].tool_calls[0].function.arguments",
        ),
    ],
)  # fmt: skip
def test_tool_messages_gemini_cannot_place_are_a_400(messages: list[Json], param: str) -> None:
    assert refused({"model": "m", "messages": [*USER, *messages]}).param == param


def test_tools_are_function_declarations_with_the_json_schema_as_sent() -> None:
    out = chat(tools=[TOOL, TOOL2])
    assert out["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather for a city",
         "parametersJsonSchema": TOOL["function"]["parameters"]},
        {"name": "get_time"},
    ]}]  # fmt: skip
    assert "toolConfig" not in out


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "get_time"}}, {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
    ],
)
def test_tool_choice(choice: Any, config: Json) -> None:
    assert chat(tools=[TOOL, TOOL2], tool_choice=choice)["toolConfig"] == {"functionCallingConfig": config}


def test_tool_choice_without_tools() -> None:
    assert "toolConfig" not in chat(tool_choice="none")
    assert refused({"model": "m", "messages": USER, "tool_choice": "required"}).param == "tool_choice"


@pytest.mark.parametrize(
    ("fields", "config"),
    [
        ({"temperature": 0.2, "top_p": 0.9, "seed": 7, "n": 2}, {"temperature": 0.2, "topP": 0.9, "seed": 7,
                                                                  "candidateCount": 2}),
        ({"max_tokens": 5}, {"maxOutputTokens": 5}),
        ({"max_tokens": 5, "max_completion_tokens": 9}, {"maxOutputTokens": 9}),
        ({"stop": "END"}, {"stopSequences": ["END"]}),
        ({"stop": ["a", "b"]}, {"stopSequences": ["a", "b"]}),
        ({"presence_penalty": 0.5, "frequency_penalty": -0.5}, {"presencePenalty": 0.5, "frequencyPenalty": -0.5}),
        ({"response_format": {"type": "text"}}, None),
        ({"response_format": {"type": "json_object"}}, {"responseMimeType": "application/json"}),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": True,
                                                                        "schema": {"type": "object"}}}},
            {"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}},
        ),
        ({"reasoning_effort": "low"}, {"thinkingConfig": {"thinkingBudget": 1024}}),
        ({"reasoning_effort": "none"}, {"thinkingConfig": {"thinkingBudget": 0}}),
        ({"logprobs": True, "top_logprobs": 3}, {"responseLogprobs": True, "logprobs": 3}),
    ],
)  # fmt: skip
def test_generation_config(fields: Json, config: Json | None) -> None:
    assert chat(**fields).get("generationConfig") == config


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logit_bias": {"42": 1}}, "logit_bias"),
        ({"tools": [TOOL], "parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}}, "response_format"),
    ],
)
def test_features_gemini_lacks_are_a_400_naming_them(fields: Json, param: str) -> None:
    err = refused({"model": "m", "messages": USER, **fields})
    assert err.param == param and err.http_status == 400


def test_parallel_tool_calls_true_is_what_gemini_does() -> None:
    assert "tools" in chat(tools=[TOOL], parallel_tool_calls=True)


def test_legacy_completions_are_a_400() -> None:
    err = refused({"model": "m", "prompt": "x"}, Endpoint.COMPLETIONS)
    assert "completions" in err.message and "gemini" in err.message


def test_only_system_messages_are_a_400() -> None:
    assert refused({"model": "m", "messages": [{"role": "system", "content": "x"}]}).param == "messages"


def test_request_never_changes_the_callers_body() -> None:
    body = {"model": "m", "tools": [TOOL], "tool_choice": "required", "stop": "x", "messages": [
        {"role": "system", "content": "s"}, *USER,
        {"role": "assistant", "tool_calls": [{"id": "call_1__sig__AAA=", "type": "function",
                                              "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1__sig__AAA=", "content": "sunny"},
    ]}  # fmt: skip
    before = copy.deepcopy(body)
    T.request(Endpoint.CHAT, body, "g", stream=True)
    T.request(Endpoint.CHAT, body, "g", stream=False)
    assert body == before


def test_embeddings_one_input_or_a_batch() -> None:
    one = T.request(Endpoint.EMBEDDINGS, {"model": "m", "input": "hello", "dimensions": 8}, "text-embedding-004",
                    stream=False)  # fmt: skip
    assert one.path == "/v1beta/models/text-embedding-004:embedContent"
    assert orjson.loads(one.body) == {"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 8}
    batch = T.request(Endpoint.EMBEDDINGS, {"model": "m", "input": ["a", "b"]}, "text-embedding-004", stream=False)
    assert batch.path == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert orjson.loads(batch.body) == {"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}},
    ]}  # fmt: skip
    assert refused({"model": "m", "input": [1, 2, 3]}, Endpoint.EMBEDDINGS).param == "input"


# ------------------------------------------------------------------ whole answers


def answer(*candidates: Json, **top: Any) -> bytes:
    return orjson.dumps({"candidates": list(candidates), **top})


def text(t: str, **extra: Any) -> Json:
    return {"text": t, **extra}


def call(name: str, args: Json, **extra: Any) -> Json:
    return {"functionCall": {"name": name, "args": args}, **extra}


def cand(*parts: Json, finish: str | None = "STOP", index: int = 0, **extra: Any) -> Json:
    out: Json = {"content": {"role": "model", "parts": list(parts)}, "index": index, **extra}
    if finish:
        out["finishReason"] = finish
    return out


def reply(raw: bytes) -> Json:
    data: Json = T.reply(Endpoint.CHAT, raw).data
    return data


@pytest.mark.parametrize(
    ("candidate", "finish"),
    [
        (cand(text("hi")), "stop"),
        (cand(text("hi"), finish=None), "stop"),
        (cand(call("f", {})), "tool_calls"),
        (cand(text("cut"), finish="MAX_TOKENS"), "length"),
        (cand(text("no"), finish="SAFETY"), "content_filter"),
        (cand(text("no"), finish="RECITATION"), "content_filter"),
        (cand(finish="PROHIBITED_CONTENT"), "content_filter"),
        (cand(text("x"), finish="OTHER"), "stop"),
    ],
)
def test_finish_reasons(candidate: Json, finish: str) -> None:
    assert reply(answer(candidate))["choices"][0]["finish_reason"] == finish


def test_a_malformed_function_call_is_the_providers_failure_with_its_message() -> None:
    with pytest.raises(ProviderError, match="MALFORMED_FUNCTION_CALL: Malformed function call: print"):
        reply(answer(cand(finish="MALFORMED_FUNCTION_CALL", finishMessage="Malformed function call: print")))


def test_message_text_thoughts_tool_calls_and_ids() -> None:
    out = reply(answer(
        cand(text("Let me think", thought=True), text("Calling "), text("now."),
             call("get_weather", {"city": "Paris"}, thoughtSignature="U0lH"), call("get_time", {})),
        responseId="resp1", modelVersion="gemini-2.5-flash",
    ))  # fmt: skip
    assert out["id"] == "chatcmpl-resp1" and out["object"] == "chat.completion" and out["model"] == "gemini-2.5-flash"
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Calling now." and msg["reasoning_content"] == "Let me think"
    calls = msg["tool_calls"]
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"name": "get_time", "arguments": "{}"},
    ]
    assert calls[0]["id"].endswith("__sig__U0lH") and "__sig__" not in calls[1]["id"]
    assert len({c["id"] for c in calls}) == 2 and all(c["type"] == "function" for c in calls)
    # Ids never repeat across answers: a conversation may hold many.
    assert reply(answer(cand(call("get_time", {}))))["choices"][0]["message"]["tool_calls"][0]["id"] != calls[1]["id"]


def test_several_candidates_are_choices() -> None:
    out = reply(answer(cand(text("a")), cand(text("b"), index=1, finish="MAX_TOKENS")))
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "a", "stop"),
        (1, "b", "length"),
    ]


def test_blocked_prompt_is_an_empty_filtered_answer() -> None:
    out = reply(orjson.dumps({"promptFeedback": {"blockReason": "SAFETY"},
                              "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}}))  # fmt: skip
    assert out["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": None, "refusal": None},
         "finish_reason": "content_filter", "logprobs": None}
    ]  # fmt: skip
    assert out["usage"] == {"prompt_tokens": 4, "completion_tokens": 0, "total_tokens": 4}


def test_usage_counts_thoughts_in_completion_and_reports_the_cache() -> None:
    meta = {"promptTokenCount": 100, "cachedContentTokenCount": 60, "candidatesTokenCount": 5,
            "thoughtsTokenCount": 20, "toolUsePromptTokenCount": 3, "totalTokenCount": 128}  # fmt: skip
    r = T.reply(Endpoint.CHAT, answer(cand(text("x")), usageMetadata=meta))
    assert r.usage == Usage(103, 25, 128, cached_tokens=60, reasoning_tokens=20)
    assert r.data["usage"] == {"prompt_tokens": 103, "completion_tokens": 25, "total_tokens": 128,
                               "prompt_tokens_details": {"cached_tokens": 60},
                               "completion_tokens_details": {"reasoning_tokens": 20}}  # fmt: skip


def test_logprobs() -> None:
    lp = {"chosenCandidates": [{"token": "Hi", "logProbability": -0.1}],
          "topCandidates": [{"candidates": [{"token": "Hi", "logProbability": -0.1},
                                            {"token": "Yo", "logProbability": -2.5}]}]}  # fmt: skip
    out = reply(answer(cand(text("Hi"), logprobsResult=lp)))
    assert out["choices"][0]["logprobs"] == {"content": [{"token": "Hi", "logprob": -0.1, "bytes": None,
        "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": None},
                         {"token": "Yo", "logprob": -2.5, "bytes": None}]}]}  # fmt: skip


@pytest.mark.parametrize(
    "raw",
    [b"<html>", b"[]", b"{}", b'{"candidates": "x"}', b'{"candidates": [{"content": {"parts": "x"}}]}',
     answer(cand({"functionCall": {"args": {}}}))],
)  # fmt: skip
def test_answers_we_cannot_use_are_provider_errors(raw: bytes) -> None:
    with pytest.raises(ProviderError):
        T.reply(Endpoint.CHAT, raw)


def test_embeddings_answers() -> None:
    one = T.reply(Endpoint.EMBEDDINGS, b'{"embedding": {"values": [0.5, -1]}}')
    assert one.data == {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1]}],
                        "usage": {"prompt_tokens": 0, "total_tokens": 0}}  # fmt: skip
    batch = T.reply(Endpoint.EMBEDDINGS, b'{"embeddings": [{"values": [1]}, {"values": [2]}],'
                                         b' "usageMetadata": {"promptTokenCount": 6}}')  # fmt: skip
    assert [d["embedding"] for d in batch.data["data"]] == [[1], [2]] and batch.usage == Usage(6, 0, 6)
    with pytest.raises(ProviderError):
        T.reply(Endpoint.EMBEDDINGS, b'{"embeddings": [{"values": "x"}]}')


# ------------------------------------------------------------------ streams


def sse(*events: Json, sep: bytes = b"\r\n\r\n") -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + sep for e in events)


def decode(raw: bytes, cuts: tuple[int, ...] = ()) -> tuple[list[Json], Usage | None, bool]:
    """(chunks without their clock, usage, done) of `raw` fed in pieces cut at `cuts`, then
    ended (test_gemini_cases decodes its recorded streams with it too)."""
    d = GeminiStreamDecoder("gem", "s")
    chunks: list[Json] = []
    start = 0
    for cut in (*cuts, len(raw)):
        chunks += d.feed(raw[start:cut])
        start = cut
    chunks += d.end()
    for c in chunks:
        c.pop("created")
    return chunks, d.usage, d.done


def meta(prompt: int, out: int | None = None) -> Json:
    m = {"promptTokenCount": prompt, "totalTokenCount": prompt + (out or 0)}
    return {**m, "candidatesTokenCount": out} if out is not None else m


STREAM = sse(
    {"candidates": [cand(text("Hel"), finish=None)], "usageMetadata": meta(3), "responseId": "r9"},
    {"candidates": [cand(text("lo"), call("get_weather", {"city": "Paris"}), finish=None)], "usageMetadata": meta(3)},
    {"candidates": [cand(call("get_time", {}), thoughtSignature="x")], "usageMetadata": meta(3, 4)},
)


def test_stream_text_tool_calls_finish_and_usage() -> None:
    chunks, usage, done = decode(STREAM)
    assert done and usage == Usage(3, 4, 7)
    assert all(c["id"] == "chatcmpl-r9" and c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": "Hel"}
    assert deltas[1]["content"] == "lo"
    weather = {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert deltas[1]["tool_calls"] == [{"index": 0, "id": "call_s_0_0", "type": "function", "function": weather}]
    assert deltas[2]["tool_calls"][0]["index"] == 1 and deltas[2]["tool_calls"][0]["id"] == "call_s_0_1"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, None, None, "tool_calls"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4,
                                                                    "total_tokens": 7}  # fmt: skip
    completion, _, problems = accumulate(chunks)
    assert not problems and completion["choices"][0]["message"]["content"] == "Hello"


def test_stream_split_at_every_byte_offset_decodes_the_same() -> None:
    whole = decode(STREAM)
    for cut in range(len(STREAM) + 1):
        assert decode(STREAM, (cut,)) == whole, cut


def test_stream_accumulates_to_the_whole_answer() -> None:
    parts = [text("The "), text("answer."), call("get_time", {"tz": "UTC"})]
    whole = reply(answer(cand(*parts)))["choices"][0]
    streamed = sse(*({"candidates": [cand(p, finish=None)]} for p in parts), {"candidates": [cand(finish="STOP")]})
    completion, _, _ = accumulate(decode(streamed)[0])
    got = completion["choices"][0]
    assert got["finish_reason"] == whole["finish_reason"] == "tool_calls"
    assert got["message"]["content"] == whole["message"]["content"]
    strip = [{k: v for k, v in c.items() if k != "id"} for c in whole["message"]["tool_calls"]]
    assert [{k: v for k, v in c.items() if k not in ("id", "index")} for c in got["message"]["tool_calls"]] == strip


def test_finish_on_every_chunk_neither_ends_early_nor_repeats() -> None:
    raw = sse(*({"candidates": [cand(text(w))]} for w in ("a", "b", "c")), sep=b"\n\n")
    chunks, _, done = decode(raw)
    assert done and "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "abc"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]


def test_stream_of_two_candidates() -> None:
    raw = sse({"candidates": [cand(text("a"), finish=None), cand(text("b"), index=1, finish=None)]},
              {"candidates": [cand(finish="STOP"), cand(index=1, finish="MAX_TOKENS")]})  # fmt: skip
    chunks, _, _ = decode(raw)
    assert chunks[0]["choices"][1]["delta"] == {"role": "assistant", "content": "b"}
    assert [(c["index"], c["finish_reason"]) for c in chunks[-1]["choices"]] == [(0, "stop"), (1, "length")]


def test_stream_safety_stop_is_content_filter_and_a_blocked_prompt_too() -> None:
    chunks, _, _ = decode(
        sse({"candidates": [cand(text("Once"), finish=None)]}, {"candidates": [cand(finish="SAFETY")]})
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    chunks, usage, done = decode(sse({"promptFeedback": {"blockReason": "OTHER"}, "usageMetadata": meta(2)}))
    assert done and usage == Usage(2, 0, 2)
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": None},
                                     "finish_reason": "content_filter", "logprobs": None}]  # fmt: skip


def test_a_last_event_without_its_blank_line_still_counts() -> None:
    raw = sse({"candidates": [cand(text("a"))]})[:-2]
    chunks, _, done = decode(raw)
    assert done and chunks[0]["choices"][0]["delta"]["content"] == "a"


def test_a_stream_that_ends_without_a_finish_reason_is_not_done() -> None:
    chunks, _, done = decode(sse({"candidates": [cand(text("a"), finish=None)]}))
    assert not done and len(chunks) == 1


@pytest.mark.parametrize(
    "tail",
    [
        # In an event, or as the bare JSON lines Gemini writes once a stream has begun.
        b'data: {"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}\r\n\r\n',
        b'{\n  "error": {\n    "code": 503,\n    "message": "Internal error encountered.",\n'
        b'    "status": "UNAVAILABLE"\n  }\n}\n',
    ],
)
def test_errors_mid_stream_are_provider_errors_with_the_message(tail: bytes) -> None:
    with pytest.raises(ProviderError, match="failed mid-stream: Internal error encountered"):
        decode(sse({"candidates": [cand(text("a"), finish=None)]}) + tail)


@pytest.mark.parametrize("event", [b"data: 42\r\n\r\n", b"data: not json\r\n\r\n", b'data: {"candidates": 1}\n\n'])
def test_bad_stream_events_are_provider_errors(event: bytes) -> None:
    with pytest.raises(ProviderError):
        GeminiStreamDecoder("gem", "s").feed(event)


# ------------------------------------------------------------------ errors and listing


def gerr(code: int, status: str, message: str, *details: Json) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "status": status, "details": list(details)}})


BAD_KEY = gerr(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
               {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"})  # fmt: skip
RETRY = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "6.2s"}


@pytest.mark.parametrize(
    ("status", "raw", "headers", "kind", "retry_after"),
    [
        (400, BAD_KEY, {}, ProviderError, None),
        (400, gerr(400, "INVALID_ARGUMENT", "Invalid JSON payload"), {}, InvalidRequest, None),
        (403, gerr(403, "PERMISSION_DENIED", "API not enabled"), {}, ProviderError, None),
        (404, gerr(404, "NOT_FOUND", "models/x is not found"), {}, ProviderError, None),
        (429, gerr(429, "RESOURCE_EXHAUSTED", "Quota exceeded"), {"retry-after": "7"}, RateLimited, "7"),
        (429, gerr(429, "RESOURCE_EXHAUSTED", "Quota exceeded", RETRY), {}, RateLimited, "7"),
        (429, gerr(429, "RESOURCE_EXHAUSTED", "Quota exceeded"), {}, RateLimited, None),
        (500, gerr(500, "INTERNAL", "Internal error"), {}, ProviderError, None),
        (503, gerr(503, "UNAVAILABLE", "The model is overloaded."), {}, ServiceUnavailable, None),
        (504, gerr(504, "DEADLINE_EXCEEDED", "Deadline"), {}, UpstreamTimeout, None),
    ],
)
def test_error_statuses(status: int, raw: bytes, headers: dict[str, str], kind: type[GhostError],
                        retry_after: str | None) -> None:  # fmt: skip
    err = T.error(status, raw, headers)
    assert type(err) is kind and err.retry_after == retry_after
    # The provider's message is kept.
    assert orjson.loads(raw)["error"]["message"] in err.message


def test_model_listing() -> None:
    raw = b'{"models": [{"name": "models/gemini-2.0-flash"}, {"name": "models/text-embedding-004"}]}'
    assert T.models(raw) == ["gemini-2.0-flash", "text-embedding-004"]
    assert T.models(b"{}") == []
    for bad in (b"nope", b'{"models": [{}]}', b'{"models": 3}'):
        with pytest.raises(ProviderError):
            T.models(bad)
