"""The shared fidelity cases for Ollama (../shared/fidelity/cases/ollama) through our translator,
no sockets: the request built from each case's openai_request must satisfy its
upstream_request_must (and _should), and the recorded upstream answer (JSON, NDJSON fed whole
and split at every offset, or an error status) must give its expected_openai.

Third-party data, read where it lies: skipped when the folder is absent, failed under CI=true."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ghostllm.config import ModelConfig, ProviderConfig
from ghostllm.errors import GhostError
from ghostllm.protocol.chat import check_chat_request
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.providers.ollama import OllamaTranslator
from tests.fidelity.cases import CASES_DIR, Case, check, holds, load, require, upstream_body
from tests.unit.providers.test_ollama import accumulate, without_ids

T = OllamaTranslator(ProviderConfig(id="local", type="ollama", base_url="http://x:11434"))
ENTRY = ModelConfig(id="ollama-test", provider="local", capabilities=("chat", "streaming", "structured_output"))
CASES = [c for c in load(CASES_DIR) if c["provider"] == "ollama"]
CHAT = [pytest.param(c, id=c["id"]) for c in CASES if c.get("kind") == "chat"]


def test_the_cases_are_there() -> None:
    require(CASES_DIR / "ollama")
    assert len(CHAT) >= 12


def _stream(case: Case) -> bool:
    return bool(case["openai_request"].get("stream"))


@pytest.mark.parametrize("case", CHAT)
def test_request_satisfies_the_case(case: Case) -> None:
    body = check_chat_request(case["openai_request"])
    req = T.request(Endpoint.CHAT, body, "llama3.2", stream=_stream(case), entry=ENTRY)
    assert req.path == case["upstream_http_must"]["path"]
    sent = orjson.loads(req.body)
    problems = check(sent, case.get("upstream_request_must") or {}, "upstream request")
    problems += check(sent, case.get("upstream_request_should") or {}, "upstream request (should)")
    assert not problems, "\n".join(problems)


def _openai_answer(case: Case) -> tuple[dict[str, Any], list[Any]]:
    """The OpenAI answer the recorded upstream response gives (a stream folded whole)."""
    raw = upstream_body(case)
    if not _stream(case):
        return T.reply(Endpoint.CHAT, raw).data, []
    d = T.stream_decoder(Endpoint.CHAT)
    chunks = d.feed(raw) + d.end()
    assert d.done, "the stream did not end"
    for cut in range(len(raw) + 1):
        split = T.stream_decoder(Endpoint.CHAT)
        assert without_ids(split.feed(raw[:cut]) + split.feed(raw[cut:])) == without_ids(chunks), cut
    acc = accumulate(chunks)
    assert acc["objects"] == {"chat.completion.chunk"}
    message = {k: v for k, v in acc["message"].items() if v not in (None, [])}
    answer = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": acc["finish_reason"]}],
    }
    if acc["usage"] is not None:
        answer["usage"] = acc["usage"]
    return answer, chunks


@pytest.mark.parametrize("case", CHAT)
def test_upstream_answer_gives_the_expected_openai(case: Case) -> None:
    expected = case["expected_openai"]
    status = case["upstream_status"]
    if status != 200:
        err: GhostError = T.error(status, upstream_body(case), case["upstream_headers"])
        assert holds(err.http_status, expected["http_status"]), (err.http_status, err.message)
        problems = check(err.to_dict(), expected.get("assert") or {}, "error")
        assert not problems, "\n".join(problems)
        return
    assert holds(200, expected["http_status"])
    answer, _ = _openai_answer(case)
    problems = check(answer, expected.get("assert") or {}, "answer")
    assert not problems, "\n".join(problems)


def test_the_recorded_listing_is_understood() -> None:
    require(CASES_DIR / "ollama")
    case = next(c for c in CASES if c["id"] == "ollama/tags")
    assert case["upstream_endpoint"]["path"] == T.models_path()
    names = T.models(upstream_body(case))
    assert names == [m["model"] for m in case["upstream_response"]["models"]] and names
