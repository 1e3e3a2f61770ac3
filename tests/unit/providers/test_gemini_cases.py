"""The shared fidelity cases for Gemini (../shared/fidelity/cases/gemini) through our translator,
no sockets: the request built from each case's openai_request must satisfy its
upstream_http_must and upstream_request_must (and _should); the recorded upstream answer
(JSON, SSE fed whole and split at every offset, or an error status) must give its
expected_openai.

Third-party data, read where it lies: skipped when the folder is absent, failed under CI=true."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from ghostllm.config import ProviderConfig
from ghostllm.protocol.chat import check_chat_request
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.providers.base import Json
from ghostllm.providers.gemini import GeminiTranslator
from tests.fidelity.answer import accumulate
from tests.fidelity.cases import CASES_DIR, check, require, upstream_body
from tests.unit.providers.test_gemini import decode

FOLDER = CASES_DIR / "gemini"
T = GeminiTranslator(ProviderConfig(id="gem", type="gemini", base_url="http://x", stored_api_key="k"))


def _cases() -> list[Any]:
    if not FOLDER.is_dir():
        return [pytest.param(None, id="absent")]
    return [pytest.param(json.loads(p.read_text()), id=p.stem) for p in sorted(FOLDER.glob("*.json"))]


@pytest.fixture(autouse=True)
def _shared_data() -> None:
    require(FOLDER)


def _http_view(path: str) -> Json:
    route, _, query = path.partition("?")
    return {"method": "POST", "path": route, "query": dict(p.partition("=")[::2] for p in query.split("&") if p)}


@pytest.mark.parametrize("case", _cases())
def test_request_satisfies_the_case(case: Json) -> None:
    body = check_chat_request(case["openai_request"])
    req = T.request(Endpoint.CHAT, body, "gemini-test", stream=bool(body.get("stream")))
    sent = orjson.loads(req.body)
    problems = check(_http_view(req.path), case.get("upstream_http_must") or {}, "sent (http)")
    problems += check(sent, case.get("upstream_request_must") or {}, "sent")
    problems += check(sent, case.get("upstream_request_should") or {}, "sent (should)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("case", _cases())
def test_answer_gives_the_expected_openai(case: Json) -> None:
    expected = case["expected_openai"]
    raw = upstream_body(case)
    status = case.get("upstream_status", 200)
    if status != 200:
        err = T.error(status, raw, case.get("upstream_headers") or {})
        assert err.http_status == expected["http_status"], err.message
        problems = check(err.to_dict(), expected.get("assert") or {}, "error")
    elif case.get("stream"):
        chunks, _, done = decode(raw)
        assert done, "the stream did not end cleanly"
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        completion, _, problems = accumulate(chunks)
        problems += check(completion, expected.get("assert") or {}, "answer")
        # Every finish reason is given once, at the end, whatever the upstream repeated.
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert [f for f in finishes if f] == [finishes[-1]]
    else:
        problems = check(T.reply(Endpoint.CHAT, raw).data, expected.get("assert") or {}, "answer")
    assert not problems, "\n".join(problems)


def _stream_cases() -> list[Any]:
    """The successful streams (every other case is one whole body: nothing to split)."""
    return [
        c
        for c in _cases()
        if c.values[0] is None or (c.values[0].get("stream") and c.values[0].get("upstream_status", 200) == 200)
    ]


@pytest.mark.parametrize("case", _stream_cases())
def test_streams_split_at_every_offset_decode_the_same(case: Json) -> None:
    raw = upstream_body(case)
    whole = decode(raw)
    # Every offset for short streams; a stride keeps the long ones quick (and still odd-aligned).
    step = 1 if len(raw) < 4000 else 7
    for cut in range(0, len(raw) + 1, step):
        assert decode(raw, (cut,)) == whole, cut
    assert decode(raw, tuple(range(1, len(raw)))) == whole
