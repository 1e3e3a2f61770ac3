"""ghostllm.providers.azure: Azure OpenAI's addresses and headers over the OpenAI translation, no sockets."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from ghostllm.config import ProviderConfig, parse_config
from ghostllm.errors import InvalidRequest, ProviderError, RateLimited
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.protocol.usage import Usage
from ghostllm.providers.azure import DEFAULT_API_VERSION, AzureTranslator

T = AzureTranslator(ProviderConfig(id="az", type="azure", base_url="https://res.openai.azure.com", stored_api_key="k1"))

# Azure's stream as it comes: a first chunk with no choices, empty id and object and the
# prompt filter results; content with filter results per choice; the finish; the usage chunk.
STREAM = b"".join(
    b"data: " + orjson.dumps(c) + b"\n\n"
    for c in [
        {"choices": [], "created": 0, "id": "", "model": "", "object": "",
         "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "usage": None,
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                      "content_filter_results": {}}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "usage": None,
         "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None,
                      "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "usage": None,
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "content_filter_results": {}}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
         "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}},
    ]
) + b"data: [DONE]\n\n"  # fmt: skip


def test_deployment_url_api_version_and_key_header() -> None:
    assert T.headers() == {"api-key": "k1"}
    assert "authorization" not in T.headers()
    body = {"model": "public", "messages": [{"role": "user", "content": "x"}]}
    req = T.request(Endpoint.CHAT, body, "gpt4o-prod", stream=False)
    assert req.path == f"/openai/deployments/gpt4o-prod/chat/completions?api-version={DEFAULT_API_VERSION}"
    assert orjson.loads(req.body)["model"] == "gpt4o-prod"
    emb = T.request(Endpoint.EMBEDDINGS, {"model": "e", "input": "x"}, "embed/v 1", stream=False)
    assert emb.path == f"/openai/deployments/embed%2Fv%201/embeddings?api-version={DEFAULT_API_VERSION}"
    comp = T.request(Endpoint.COMPLETIONS, {"model": "c", "prompt": "x"}, "instruct", stream=False)
    assert comp.path.startswith("/openai/deployments/instruct/completions?api-version=")
    assert T.models_path() == f"/openai/models?api-version={DEFAULT_API_VERSION}"


def test_api_version_is_a_provider_setting() -> None:
    config = parse_config(
        {
            "providers": [
                {
                    "id": "az",
                    "type": "azure",
                    "base_url": "https://r.openai.azure.com",
                    "api_version": "2025-01-01-preview",
                }
            ],
        },
        env={"GHOSTLLM_PROVIDER_AZ_API_VERSION": "2024-06-01"},
    )
    t = AzureTranslator(config.providers[0])
    assert t.request(Endpoint.CHAT, {"model": "m", "messages": []}, "d", stream=False).path.endswith(
        "?api-version=2024-06-01"
    )
    assert AzureTranslator(ProviderConfig(id="n", type="azure", base_url="https://r")).headers() == {}


def test_streams_ask_for_usage_and_the_body_is_never_changed() -> None:
    body = {"model": "public", "messages": [{"role": "user", "content": "x"}], "stream": True,
            "stream_options": {"include_usage": False}}  # fmt: skip
    before = copy.deepcopy(body)
    sent = orjson.loads(T.request(Endpoint.CHAT, body, "dep", stream=True).body)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert body == before


def decode(data: bytes, cut: int | None = None) -> tuple[list[Any], Usage | None, bool]:
    d = T.stream_decoder(Endpoint.CHAT)
    chunks = d.feed(data) if cut is None else d.feed(data[:cut]) + d.feed(data[cut:])
    return chunks, d.usage, d.done


def test_stream_drops_the_prompt_filter_chunk_and_keeps_the_rest() -> None:
    chunks, usage, done = decode(STREAM)
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hi"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 6
    assert usage == Usage(5, 1, 6) and done


def test_stream_split_at_every_byte_offset_decodes_the_same() -> None:
    whole = decode(STREAM)
    for cut in range(len(STREAM) + 1):
        assert decode(STREAM, cut) == whole, cut


def test_stream_error_event_is_a_provider_error_after_the_chunks_before_it() -> None:
    error = b'data: {"error": {"message": "The server had an error"}}\n\n'
    with pytest.raises(ProviderError, match="mid-stream"):
        T.stream_decoder(Endpoint.CHAT).feed(error)
    # In the same read as content: the content first, the error at the next read or the end.
    content = STREAM[: STREAM.index(b"data: ", STREAM.index(b'"Hi"'))]
    for then in (b"", b"data: [DONE]\n\n"):
        d = T.stream_decoder(Endpoint.CHAT)
        chunks = d.feed(content + error)
        assert chunks[-1]["choices"][0]["delta"] == {"content": "Hi"}
        with pytest.raises(ProviderError, match="The server had an error"):
            d.feed(then) if then else d.end()


def test_reply_keeps_azure_fields() -> None:
    upstream = {
        "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "content_filter",
                     "content_filter_results": {"violence": {"filtered": True, "severity": "medium"}}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }  # fmt: skip
    reply = T.reply(Endpoint.CHAT, orjson.dumps(upstream))
    assert reply.data == upstream and reply.usage == Usage(1, 2, 3)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key"}}, ProviderError),
        (
            404,
            {"error": {"code": "DeploymentNotFound", "message": "The API deployment does not exist."}},
            ProviderError,
        ),
        (
            400,
            {"error": {"code": "content_filter", "message": "The response was filtered", "status": 400}},
            InvalidRequest,
        ),
        (429, {"error": {"code": "429", "message": "exceeded token rate limit"}}, RateLimited),
    ],
)
def test_error_statuses_keep_azures_message(status: int, body: dict[str, Any], kind: type[Exception]) -> None:
    err = T.error(status, orjson.dumps(body), {"retry-after": "7"})
    assert type(err) is kind
    assert body["error"]["message"] in err.message
    if status == 429:
        assert err.retry_after == "7"


def test_models_listing() -> None:
    listing = {"object": "list", "data": [{"id": "gpt-4o", "object": "model", "capabilities": {}}]}
    assert T.models(orjson.dumps(listing)) == ["gpt-4o"]
