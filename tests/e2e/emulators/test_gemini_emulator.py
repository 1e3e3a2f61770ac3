"""The Gemini emulator is faithful: the official `google-genai` SDK (pointed at it by
http_options base_url) parses every answer and stream it sends (text, system instruction,
images, function declarations and calls, parallel calls, function responses, JSON mode,
stop sequences, max tokens, candidates, thinking with signed calls, embeddings, token
counts, the paged model listing), its errors raise the SDK's typed errors, and every
answer validates against the SDK's own response models with unknown fields forbidden.
The answers follow the contract in ghostllm.emulators."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from google import genai
from google.genai import errors, types

from tests.support.http import request
from tests.support.procs import Upstream, emulator_received, reset_emulator

# The SDK's own async session class trips aiohttp's warning; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
# The emulator under test (the `upstream` fixture in conftest.py).
EMULATOR = "gemini"
KEY = {"x-goog-api-key": "AIza-test"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Weather in a city",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = types.FunctionDeclaration(name="get_time", parameters_json_schema={"type": "object", "properties": {}})
TOOLS = [types.Tool(function_declarations=[WEATHER, TIME])]


def make_client(upstream: Upstream, key: str = "AIza-test") -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=upstream.url, api_version="v1beta"))


@pytest.fixture(scope="module")
def client(upstream: Upstream) -> genai.Client:
    return make_client(upstream)


def generate(client: genai.Client, contents: Any, model: str = "gemini-small", **config: Any) -> Any:
    return client.models.generate_content(
        model=model, contents=contents, config=types.GenerateContentConfig(**config) if config else None
    )


def stream(client: genai.Client, contents: Any, model: str = "gemini-small", **config: Any) -> list[Any]:
    return list(
        client.models.generate_content_stream(
            model=model, contents=contents, config=types.GenerateContentConfig(**config) if config else None
        )
    )


def streamed_text(chunks: list[Any]) -> str:
    return "".join(p.text for c in chunks for p in c.candidates[0].content.parts if p.text and not p.thought)


def raw(upstream: Upstream, model: str, method: str, body: dict[str, Any], **headers: str) -> Any:
    return request(f"{upstream.url}/v1beta/models/{model}:{method}", body, headers={**KEY, **headers}, key=None)


def test_text_with_system_instruction_and_usage(client: genai.Client) -> None:
    r = generate(client, "hello there", system_instruction="be brief")
    assert r.text == "You said: hello there"
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    u = r.usage_metadata
    assert (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (4, 4, 8)
    assert r.model_version == "gemini-small" and r.response_id


def test_multi_turn_answers_the_last_user_text(client: genai.Client) -> None:
    contents = [
        types.Content(role="user", parts=[types.Part(text="first")]),
        types.Content(role="model", parts=[types.Part(text="ok")]),
        types.Content(role="user", parts=[types.Part(text="second one")]),
    ]
    assert generate(client, contents).text == "You said: second one"


def test_images_inline_and_by_uri(client: genai.Client) -> None:
    parts = [
        types.Part.from_text(text="what is this"),
        types.Part.from_bytes(data=PNG, mime_type="image/png"),
        types.Part.from_uri(file_uri="https://example.com/cat.jpg", mime_type="image/jpeg"),
    ]
    assert generate(client, parts).text == "You said: what is this [2 images]"


def test_function_call(client: genai.Client) -> None:
    r = generate(client, "weather please", tools=TOOLS)
    assert [(c.name, c.args) for c in r.function_calls] == [("get_weather", {"city": "x"})]
    assert r.candidates[0].finish_reason == types.FinishReason.STOP


def test_parallel_function_calls(client: genai.Client) -> None:
    r = generate(client, "in parallel please", tools=TOOLS)
    assert [c.name for c in r.function_calls] == ["get_weather", "get_time"]
    assert r.usage_metadata.candidates_token_count == 1


@pytest.mark.parametrize(
    ("config", "names", "text"),
    [
        (types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE), None, "You said: hi"),
        (types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_time"]),
         ["get_time"], None),
        (types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY), ["get_weather"], None),
    ],
)  # fmt: skip
def test_function_calling_modes(
    client: genai.Client, config: types.FunctionCallingConfig, names: list[str] | None, text: str | None
) -> None:
    r = generate(client, "hi", tools=TOOLS, tool_config=types.ToolConfig(function_calling_config=config))
    assert ([c.name for c in r.function_calls] if r.function_calls else None) == names
    if text:
        assert r.text == text


def test_function_response_round_trip(client: genai.Client) -> None:
    contents = [
        types.Content(role="user", parts=[types.Part(text="weather in Paris?")]),
        types.Content(role="model", parts=[types.Part.from_function_call(name="get_weather", args={"city": "Paris"})]),
        types.Content(
            role="user", parts=[types.Part.from_function_response(name="get_weather", response={"output": "sunny"})]
        ),
    ]
    assert generate(client, contents, tools=TOOLS).text == "Tool said: sunny"


def test_json_mode(client: genai.Client) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    r = generate(client, "hi", response_mime_type="application/json", response_json_schema=schema)
    assert json.loads(r.text) == {"answer": "You said: hi"} and r.parsed == {"answer": "You said: hi"}


def test_stop_sequences_and_max_tokens(client: genai.Client) -> None:
    r = generate(client, "one two three", stop_sequences=["two"])
    assert r.text == "You said: one " and r.candidates[0].finish_reason == types.FinishReason.STOP
    r = generate(client, "one two three", max_output_tokens=2)
    assert r.text == "You said:" and r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


def test_candidate_count(client: genai.Client) -> None:
    r = generate(client, "hi", candidate_count=2)
    assert [c.index for c in r.candidates] == [0, 1]
    assert r.usage_metadata.candidates_token_count == 6


def test_stream_text_matches_the_whole_answer(client: genai.Client) -> None:
    chunks = stream(client, "hello there friend")
    assert len(chunks) == 5 and streamed_text(chunks) == generate(client, "hello there friend").text
    assert [c.candidates[0].finish_reason for c in chunks][-1] == types.FinishReason.STOP
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    # Every event says the prompt's count; the last one the whole usage.
    assert all(c.usage_metadata.prompt_token_count == 3 for c in chunks)
    assert chunks[-1].usage_metadata.candidates_token_count == 5


def test_stream_function_calls_arrive_whole_one_event_each(client: genai.Client) -> None:
    chunks = stream(client, "parallel", tools=TOOLS)
    assert [[(c.name, c.args) for c in ch.function_calls] for ch in chunks] == [
        [("get_weather", {"city": "x"})],
        [("get_time", {})],
    ]


def test_async_client_streams(upstream: Upstream) -> None:
    async def main() -> list[Any]:
        aclient = make_client(upstream).aio
        return [c async for c in await aclient.models.generate_content_stream(model="gemini-small", contents="a b")]

    assert streamed_text(asyncio.run(main())) == "You said: a b"


def test_thinking_model_reports_thoughts_and_signs_its_calls(client: genai.Client) -> None:
    thinking = types.ThinkingConfig(include_thoughts=True)
    r = generate(client, "hi", model="gemini-large", thinking_config=thinking)
    parts = r.candidates[0].content.parts
    assert parts[0].thought and parts[0].text and r.text == "You said: hi"
    assert r.usage_metadata.thoughts_token_count == 5
    assert r.usage_metadata.total_token_count == 1 + 3 + 5
    chunks = stream(client, "hi", model="gemini-large", thinking_config=thinking)
    assert chunks[0].candidates[0].content.parts[0].thought
    assert generate(client, "hi", model="gemini-large", thinking_config=types.ThinkingConfig(thinking_budget=0)).\
        usage_metadata.thoughts_token_count is None  # fmt: skip

    call = generate(client, "weather", model="gemini-large", tools=TOOLS)
    signed = call.candidates[0].content.parts[0]
    assert signed.function_call.name == "get_weather" and signed.thought_signature
    result = types.Part.from_function_response(name="get_weather", response={"output": "rain"})
    history = [types.Content(role="user", parts=[types.Part(text="weather")]), call.candidates[0].content,
               types.Content(role="user", parts=[result])]  # fmt: skip
    assert generate(client, history, model="gemini-large", tools=TOOLS).text == "Tool said: rain"
    # The call sent back without its signature is refused, as thinking models do.
    unsigned = types.Content(role="model", parts=[types.Part(function_call=signed.function_call)])
    with pytest.raises(errors.ClientError) as exc:
        generate(client, [history[0], unsigned, history[2]], model="gemini-large", tools=TOOLS)
    assert exc.value.code == 400 and "thought_signature" in str(exc.value.message)


def test_automatic_function_calling_round_trip(client: genai.Client) -> None:
    def get_weather(city: str) -> str:
        """Weather in a city."""
        return f"sunny in {city}"

    r = generate(client, "weather", model="gemini-large", tools=[get_weather])
    assert r.text == "Tool said: sunny in x"


def test_embeddings(client: genai.Client, upstream: Upstream) -> None:
    # A list of strings is one content of two parts to this SDK; two contents embed apart.
    texts = [types.Content(parts=[types.Part(text=t)]) for t in ("a", "b")]
    r = client.models.embed_content(model="gemini-embedding", contents=texts)
    assert r.embeddings is not None and [len(e.values or []) for e in r.embeddings] == [8, 8]
    again = client.models.embed_content(
        model="gemini-embedding", contents="a", config=types.EmbedContentConfig(output_dimensionality=4)
    )
    assert again.embeddings is not None and len(again.embeddings[0].values or []) == 4
    one = raw(upstream, "gemini-embedding", "embedContent", {"content": {"parts": [{"text": "a"}]}})
    assert one.status == 200 and one.json()["embedding"]["values"] == r.embeddings[0].values
    types.EmbedContentResponse.model_validate({"embeddings": [one.json()["embedding"]]})
    with pytest.raises(errors.ClientError) as exc:
        client.models.embed_content(model="gemini-small", contents="a")
    assert exc.value.code == 404


def test_count_tokens(client: genai.Client) -> None:
    assert client.models.count_tokens(model="gemini-small", contents="a b c").total_tokens == 3


def test_model_listing_is_paged(client: genai.Client) -> None:
    names = [m.name for m in client.models.list(config=types.ListModelsConfig(page_size=2))]
    assert names == ["models/gemini-small", "models/gemini-large", "models/gemini-embedding"]
    assert client.models.get(model="gemini-large").input_token_limit == 1048576


@pytest.mark.parametrize(
    ("model", "kind", "code", "status"),
    [
        ("error-400", errors.ClientError, 400, "INVALID_ARGUMENT"),
        ("error-401", errors.ClientError, 401, "UNAUTHENTICATED"),
        ("error-404", errors.ClientError, 404, "NOT_FOUND"),
        ("error-429", errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
        ("error-500", errors.ServerError, 500, "INTERNAL"),
        ("error-503", errors.ServerError, 503, "UNAVAILABLE"),
    ],
)
def test_error_scenarios(client: genai.Client, model: str, kind: type[errors.APIError], code: int, status: str) -> None:
    for call in (lambda: generate(client, "hi", model=model), lambda: stream(client, "hi", model=model)):
        with pytest.raises(kind) as exc:
            call()
        assert exc.value.code == code and exc.value.status == status and exc.value.message


def test_rate_limit_says_when_to_retry(upstream: Upstream) -> None:
    reply = raw(upstream, "error-429", "generateContent", {"contents": [{"parts": [{"text": "hi"}]}]})
    assert reply.status == 429 and reply.headers["retry-after"] == "7"
    details = reply.json()["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"} in details


def test_keys(upstream: Upstream) -> None:
    with pytest.raises(errors.ClientError) as exc:
        generate(make_client(upstream, key="bad-key"), "hi")
    assert exc.value.code == 400 and exc.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    assert request(f"{upstream.url}/v1beta/models/gemini-small:generateContent", body, key=None).status == 403
    by_query = request(f"{upstream.url}/v1beta/models/gemini-small:generateContent?key=k", body, key=None)
    assert by_query.status == 200


@pytest.mark.parametrize(
    "body",
    [
        {"contents": []},
        {"contents": [{"parts": [{"text": "hi"}]}], "temperature": 1},
        {"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]},
        {"contents": [{"parts": []}]},
        {"contents": [{"parts": [{"text": "hi", "inlineData": {"mimeType": "image/png", "data": "AA=="}}]}]},
        {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "not base64!"}}]}]},
        {"contents": [{"parts": [{"functionResponse": {"response": {}}}]}]},
        {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"max_tokens": 3}},
        {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"stopSequences": list("abcdef")}},
        {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"responseJsonSchema": {"type": "object"}}},
        {"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"functionDeclarations": [{"name": "bad name"}]}]},
    ],
)
def test_requests_the_real_api_refuses(upstream: Upstream, body: dict[str, Any]) -> None:
    reply = raw(upstream, "gemini-small", "generateContent", body)
    assert reply.status == 400, reply.body
    assert reply.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_snake_case_fields_are_accepted(upstream: Upstream) -> None:
    body = {"contents": [{"parts": [{"text": "hi"}]}], "system_instruction": {"parts": [{"text": "s"}]},
            "generation_config": {"max_output_tokens": 1}}  # fmt: skip
    reply = raw(upstream, "gemini-small", "generateContent", body)
    assert reply.status == 200 and reply.json()["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_an_error_mid_stream_comes_as_bare_json_and_the_sdk_raises(client: genai.Client, upstream: Upstream) -> None:
    seen: list[Any] = []
    with pytest.raises(errors.ServerError) as exc:
        for chunk in client.models.generate_content_stream(model="stream-error", contents="a b c d"):
            seen.append(chunk)
    assert exc.value.code == 500 and len(seen) == 2
    reply = raw(upstream, "stream-error", "streamGenerateContent?alt=sse", {"contents": [{"parts": [{"text": "a"}]}]})
    assert reply.status == 200 and reply.body.rstrip().endswith(b"}") and b'data: {"error"' not in reply.body


def test_wire_format_validates_against_the_sdk_models(upstream: Upstream) -> None:
    """Unknown fields forbidden (the SDK itself drops them before validating)."""
    body = {"contents": [{"parts": [{"text": "weather in parallel"}]}],
            "tools": [{"functionDeclarations": [WEATHER.model_dump(exclude_none=True, by_alias=True),
                                                TIME.model_dump(exclude_none=True, by_alias=True)]}],
            "generationConfig": {"thinkingConfig": {"includeThoughts": True}}}  # fmt: skip
    whole = raw(upstream, "gemini-large", "generateContent", body)
    assert whole.headers["content-type"].startswith("application/json")
    types.GenerateContentResponse.model_validate(whole.json())
    sse = raw(upstream, "gemini-large", "streamGenerateContent?alt=sse", body)
    assert sse.headers["content-type"] == "text/event-stream"
    events = sse.body.split(b"\r\n\r\n")
    assert events.pop() == b"" and all(e.startswith(b"data: ") for e in events)
    for event in events:
        types.GenerateContentResponse.model_validate(json.loads(event[6:]))
    array = raw(upstream, "gemini-small", "streamGenerateContent", body | {"generationConfig": {}})
    assert isinstance(array.json(), list) and len(array.json()) == 2
    listing = request(f"{upstream.url}/v1beta/models", headers=KEY, key=None).json()
    for m in listing["models"]:
        assert set(m) <= {
            "name",
            "version",
            "displayName",
            "description",
            "inputTokenLimit",
            "outputTokenLimit",
            "supportedGenerationMethods",
            "temperature",
            "topP",
            "topK",
            "maxTemperature",
            "thinking",
        }
    for e in (raw(upstream, "error-429", "generateContent", body).json(), whole.json()):
        assert set(e) <= {"error", "candidates", "usageMetadata", "modelVersion", "responseId"}  # fmt: skip


def test_requests_are_recorded(client: genai.Client, upstream: Upstream) -> None:
    reset_emulator(upstream)
    generate(client, "recorded")
    seen = emulator_received(upstream)
    assert len(seen) == 1
    assert seen[0]["method"] == "POST" and seen[0]["path"] == "/v1beta/models/gemini-small:generateContent"
    assert seen[0]["headers"]["x-goog-api-key"] == "AIza-test"
    assert seen[0]["body"]["contents"] == [{"parts": [{"text": "recorded"}], "role": "user"}]
